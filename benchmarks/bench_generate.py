"""Sampled chat generation throughput by batch size (paper B's self-distillation and judged replies).

    python benchmarks/bench_generate.py [--n 64] [--batch-sizes 16 32 64] [--max-new-tokens 48]

Same prompts (training-source harmful + benign, the positive instruction as
system prompt, as self-distillation uses them), same seed, one run per batch
size, all in one process: replies/s and the ratio to the smallest batch.
Writes results/bench/generate_<cpu kind>.json with the hardware.
"""
from __future__ import annotations

import argparse
import time

import torch

from magictokens.chat import generate
from magictokens.cotraining.data import build_safety_data
from magictokens.cotraining.distil import DISTIL_INSTRUCTIONS
from magictokens.hardware import cpu_slug
from magictokens.models import load_model, torch_threads
from magictokens.results import REPO_ROOT, run_meta, write_json


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=64)
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[16, 32, 64])
    ap.add_argument("--max-new-tokens", type=int, default=48)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    data = build_safety_data(a.n // 2, a.n - a.n // 2, 0, 0, 0, seed=5, max_chars=300)
    prompts = [p.text for p in data.train]
    rows = []
    with torch_threads(a.threads):
        torch.manual_seed(0)
        model, tok = load_model("smollm2-135m-instruct", dtype="float32", device="cpu")
        for bs in a.batch_sizes:
            t0 = time.time()
            outs = generate(model, tok, prompts, DISTIL_INSTRUCTIONS["positive"], a.max_new_tokens, batch_size=bs,
                            max_prompt_tokens=160, temperature=0.8, top_p=0.95, seed=1)
            s = time.time() - t0
            new_tokens = sum(len(tok(o, add_special_tokens=False).input_ids) for o in outs)
            rows.append({"batch_size": bs, "seconds": round(s, 1), "replies_per_s": round(len(outs) / s, 3),
                         "new_tokens_per_s": round(new_tokens / s, 1)})
            print(f"batch {bs:3d}: {len(outs)} replies in {s:.1f} s = {len(outs) / s:.2f} replies/s "
                  f"({new_tokens / s:.0f} new tokens/s)", flush=True)
    base = rows[0]["replies_per_s"]
    for r in rows:
        r["ratio_to_first"] = round(r["replies_per_s"] / base, 2)
    out = {"meta": run_meta("smollm2-135m-instruct", "cpu", 0, "bench", threads=a.threads),
           "n_prompts": len(prompts), "max_new_tokens": a.max_new_tokens, "rows": rows}
    path = REPO_ROOT / "results" / "bench" / f"generate_{cpu_slug()}.json"
    write_json(path, out)
    print(f"-> {path.relative_to(REPO_ROOT)}")


if __name__ == "__main__":
    main()
