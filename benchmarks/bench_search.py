"""Search-speed benchmark on whatever device runs it (not a timed test).

    python benchmarks/bench_search.py                 # default model, auto device
    python benchmarks/bench_search.py --model gpt2 --n-instances 10 --gcg-width 768

Reports, in one run so the ratios are like for like:
  * candidates scored per second: search dtype vs fp32, batched vs one at a
    time, logits at the last position only vs at every position;
  * greedy back-generation candidates/s (a full-vocabulary step, or --greedy-n);
  * GCG: seconds per step and candidates/s at the paper's width (768);
  * back-off seconds per instance (median, p90) on true-token Wikitext x0;
  * peak memory; and the CPU slowdown from requires_grad=False (--check-grad-flag).
Writes results/bench/<device>.json.
"""
from __future__ import annotations

import argparse
import copy
import json
import resource
import time
from pathlib import Path

import numpy as np
import torch

from magictokens import reachability as R
from magictokens.controllers import backoff, gcg, greedy
from magictokens.data import read_wikitext
from magictokens.models import DEFAULT_MODEL, load_search_pair, resolve_dtype
from magictokens.results import REPO_ROOT, device_name, versions, write_json
from magictokens.scoring import Scorer


def sync(dev):
    if dev.type == "cuda":
        torch.cuda.synchronize()


def rate(fn, n: int, dev, repeat: int = 2) -> float:
    """Candidates per second of fn() scoring n candidates (best of `repeat`, after a warm-up)."""
    fn()
    best = float("inf")
    for _ in range(repeat):
        sync(dev)
        t = time.perf_counter()
        fn()
        sync(dev)
        best = min(best, time.perf_counter() - t)
    return n / best


def peak_gb(dev) -> float:
    if dev.type == "cuda":
        return torch.cuda.max_memory_allocated() / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=DEFAULT_MODEL)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--search-dtype", default="bfloat16")
    ap.add_argument("--x0-len", type=int, default=16)
    ap.add_argument("--batch", type=int, default=None, help="candidates per forward (default 256 CPU / 8192 GPU)")
    ap.add_argument("--n", type=int, default=None, help="candidates per throughput probe")
    ap.add_argument("--greedy-n", type=int, default=None, help="greedy candidates (default: whole vocab on GPU, 512 on CPU)")
    ap.add_argument("--gcg-width", type=int, default=768)
    ap.add_argument("--gcg-steps", type=int, default=3)
    ap.add_argument("--n-instances", type=int, default=6)
    ap.add_argument("--check-grad-flag", action="store_true")
    ap.add_argument("--out", default=None)
    a = ap.parse_args()

    search, verify, tok = load_search_pair(a.model, a.search_dtype, "float32", a.device)
    fp32 = verify if verify is not None else search
    dev = fp32.device
    gpu = dev.type == "cuda"
    batch = a.batch or (8192 if gpu else 256)
    n = a.n or (4 * batch if gpu else 512)
    text = read_wikitext()
    inst = R.sample_wikitext_instances(tok, text, [a.x0_len], max(1, a.n_instances), seed=0)
    x0, y = inst[0].x0_ids, inst[0].target_id
    V = fp32.get_input_embeddings().weight.shape[0]
    cands = torch.randint(100, V - 100, (n, 1), generator=torch.Generator().manual_seed(0))
    out = {"device": device_name(dev), "model": a.model, "x0_len": a.x0_len, "batch": batch,
           "search_dtype": str(resolve_dtype(a.search_dtype, dev)).replace("torch.", ""), "versions": versions()}

    # -- scoring throughput, like for like
    s_search = Scorer(search, x0, y, batch_size=batch)
    s_fp32 = Scorer(fp32, x0, y, batch_size=batch)
    out["score_per_s_search_dtype"] = rate(lambda: s_search.score(cands), n, dev)
    out["score_per_s_fp32"] = rate(lambda: s_fp32.score(cands), n, dev)
    few = cands[: min(n, 64)]
    one = Scorer(search, x0, y, batch_size=1)
    out["score_per_s_one_at_a_time"] = rate(lambda: one.score(few), len(few), dev, repeat=1)

    # what a naive implementation does: logits at every position. Its (B, T, V) fp32
    # logits need B*T*V*4 bytes (42 GB at B=8192, T=26): chunks of at most 1024 here.
    naive = cands[: min(n, 4096)]

    def all_positions():
        with torch.inference_mode():
            for c in naive.split(min(batch, 1024)):
                ids = s_search.sequences(c, True)
                search(input_ids=ids).logits.float().log_softmax(-1)
    out["score_per_s_all_position_logits"] = rate(all_positions, len(naive), dev, repeat=1)

    # -- greedy step
    gn = a.greedy_n or (None if gpu else 512)
    gcfg = greedy.GreedyConfig(k_max=1, candidates=gn, batch_size=batch, stop_on_success=False)
    t = time.perf_counter()
    g = greedy.run(search, tok, x0, y, gcfg, verify_model=verify)
    out["greedy_candidates_per_s"] = g.n_candidates / (time.perf_counter() - t)
    out["greedy_step_s"] = time.perf_counter() - t
    out["greedy_step_candidates"] = g.n_candidates

    # -- GCG steps at the paper's width
    ccfg = gcg.GCGConfig(num_steps=a.gcg_steps, search_width=a.gcg_width, batch_size=min(batch, a.gcg_width),
                         early_stop=False)
    r = gcg.run(search, tok, x0, y, 10, ccfg, verify_model=verify)
    out["gcg_step_s"] = r.seconds / max(1, r.steps)
    out["gcg_candidates_per_s"] = r.n_candidates / r.seconds

    # -- back-off instances at the default (CPU) or paper (GPU) budget
    from magictokens.config import build, load_params

    P = load_params("paper" if gpu else "default")
    bcfg = build(R.ReachabilityConfig, P["reachability"], "reachability").backoff
    secs = []
    for x in inst[: a.n_instances]:
        res = backoff.run(search, tok, x.x0_ids, x.target_id, bcfg, verify_model=verify)
        secs.append(res.seconds)
    out["backoff_budget"] = "paper" if gpu else "default"
    out["backoff_median_s"] = float(np.median(secs)) if secs else None
    out["backoff_p90_s"] = float(np.quantile(secs, 0.9)) if secs else None
    out["peak_mem_gb"] = peak_gb(dev)

    if a.check_grad_flag and not gpu:
        frozen = copy.deepcopy(search).requires_grad_(False)
        sf = Scorer(frozen, x0, y, batch_size=batch)
        out["score_per_s_requires_grad_false"] = rate(lambda: sf.score(cands[:batch]), batch, dev, repeat=1)

    out["ratios"] = {
        "search_dtype_vs_fp32": out["score_per_s_search_dtype"] / out["score_per_s_fp32"],
        "batched_vs_one_at_a_time": out["score_per_s_search_dtype"] / out["score_per_s_one_at_a_time"],
        "last_position_vs_all_positions": out["score_per_s_search_dtype"] / out["score_per_s_all_position_logits"],
    }
    if "score_per_s_requires_grad_false" in out:
        out["ratios"]["requires_grad_true_vs_false"] = out["score_per_s_search_dtype"] / out["score_per_s_requires_grad_false"]
    tag = "gpu" if gpu else "cpu"
    path = Path(a.out) if a.out else REPO_ROOT / "results" / "bench" / f"{tag}.json"
    write_json(path, out)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
