"""Decoding of the co-trained model's judged replies, chosen on the validation split (issue 31, item 4).

    python benchmarks/decode_probe.py [--n-val 60] [--variant greedy rp1.3 nr4 ...] [--modes positive negative]
    python benchmarks/judge_labelling.py pool-replies --src results/bench/judge/decode_probe_replies.jsonl ...

Greedy decoding of a 135M model loops ("You can use the following:\\n\\nYou can use the following:"), which a
reader calls invalid whatever the mode. This probe loads the stage's trained co-trained adapter
(`results/cpu/models/cotraining/cotrained`, the `cpu` scale's seed), generates replies to the validation harmful
prompts (training sources, never trained on nor evaluated on by the stage: `data.build_safety_data(n_val_...)`)
under each mode's magic token with each decoding variant, and judges them. Variants: `greedy`, `rpX` (greedy with
repetition_penalty X), `nrN` (greedy with no_repeat_ngram_size N), `mcG` (contrast decoding against the contrasted
mode's token with scale G, `chat.ContrastProcessor`: positive against negative, negative against positive,
rejective against negative), and any of them joined by `+`. The replies (not committed) go to
results/bench/judge/decode_probe_replies.jsonl for reading; the judged shares to results/bench/decode_probe.json.
"""
from __future__ import annotations

import argparse
import json
import re
import time
from pathlib import Path

import torch

from magictokens.chat import generate
from magictokens.config import parse_sets, stage_params
from magictokens.cotraining import CoTrainingConfig, magic_tokens_of
from magictokens.cotraining.data import build_safety_data
from magictokens.cotraining.judge import make_judge
from magictokens.errors import MagicTokensError
from magictokens.models import load_model, torch_threads
from magictokens.results import REPO_ROOT, run_meta, write_json

OUT = REPO_ROOT / "results" / "bench" / "decode_probe.json"
ADAPTER = REPO_ROOT / "results" / "cpu" / "models" / "cotraining" / "cotrained"


CONTRAST = {"positive": "negative", "negative": "positive", "rejective": "negative"}   # mcG: which token each
# mode's replies are contrasted against (the mode a harmful prompt's reply most often slides into)


def decoding(variant: str) -> dict:
    """'greedy' | 'rp1.3' | 'nr4' | 'mc0.5' | 'rp1.2+nr3+mc0.5' -> generate() keyword arguments
    (mcG -> contrast_scale G; the contrast system prompt is the mode's, set where the mode is known)."""
    kw = {}
    for part in variant.split("+"):
        if part == "greedy":
            continue
        if m := re.fullmatch(r"rp(\d+(?:\.\d+)?)", part):
            kw["repetition_penalty"] = float(m.group(1))
        elif m := re.fullmatch(r"nr(\d+)", part):
            kw["no_repeat_ngram_size"] = int(m.group(1))
        elif m := re.fullmatch(r"mc(\d+(?:\.\d+)?)", part):
            kw["contrast_scale"] = float(m.group(1))
        else:
            raise MagicTokensError(f"decoding variant {variant!r}: use greedy, rpX, nrN, mcG or a + of them")
    return kw


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n-val", type=int, default=60)
    ap.add_argument("--variant", nargs="+", default=["greedy", "rp1.3", "nr4"])
    ap.add_argument("--modes", nargs="+", default=["positive", "negative", "rejective"])
    ap.add_argument("--adapter", default=str(ADAPTER))
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--out", default=str(OUT))
    a = ap.parse_args()
    kws = {v: decoding(v) for v in a.variant}
    out = Path(a.out)
    P, cfg = stage_params("cpu", "cotraining", CoTrainingConfig, parse_sets(a.set))
    if not (Path(a.adapter) / "adapter_config.json").exists():
        raise MagicTokensError(f"no adapter in {a.adapter}: run `magictokens run cotraining --scale cpu` first")
    t0 = time.time()
    with torch_threads(cfg.threads):
        from peft import PeftModel
        base, tok = load_model(P["model"], dtype="float32", device=P["device"])
        judge, jrep = make_judge(cfg, P["seed"])
        model = PeftModel.from_pretrained(base, a.adapter).merge_and_unload().eval()
        tokens = magic_tokens_of(cfg, P["seed"])
        data = build_safety_data(cfg.n_train_harmful, cfg.n_train_benign, cfg.n_eval_harmful, cfg.n_eval_benign,
                                 cfg.n_xstest, seed=P["seed"], max_chars=cfg.max_prompt_chars, targets=cfg.targets,
                                 n_val_harmful=a.n_val, n_val_benign=a.n_val // 2)
        val = [p.text for p in data.validation if p.harmful]
        rows, replies = [], []
        for v, kw in kws.items():
            diag = {}
            for mode in a.modes:
                t1 = time.time()
                other = {"contrast_system": tokens[CONTRAST[mode]]} if kw.get("contrast_scale") else {}
                outs = generate(model, tok, val, tokens[mode], cfg.max_new_tokens, cfg.gen_batch_size,
                                cfg.train.max_prompt_tokens, **kw, **other)
                labels = judge.judge(outs, [True] * len(val), prompts=val)
                diag[mode] = sum(x == mode for x in labels) / len(val)
                replies += [{"lr": 0.0, "epochs": 0, "variant": v, "mode": mode, "prompt": p, "reply": o,
                             "label": x} for p, o, x in zip(val, outs, labels)]
                print(f"{v} {mode}: judged {diag[mode]:.2f} ({time.time() - t1:.0f} s)", flush=True)
            rows.append({"variant": v, "decoding": kw, "diag": diag})
    meta = run_meta(P["model"], next(model.parameters()).device, P["seed"], "cpu", threads=cfg.threads,
                    judge=jrep["kind"], judge_fit_sha=jrep.get("fit_sha"), adapter=str(Path(a.adapter).name),
                    overrides=a.set)
    rp = REPO_ROOT / "results" / "bench" / "judge" / f"{out.stem}_replies.jsonl"
    rp.parent.mkdir(parents=True, exist_ok=True)
    rp.write_text("".join(json.dumps(r) + "\n" for r in replies))
    write_json(out, {"meta": meta, "n_validation": len(val), "rows": rows, "seconds_total": time.time() - t0})
    print(f"-> {out}; replies -> {rp}")


if __name__ == "__main__":
    main()
