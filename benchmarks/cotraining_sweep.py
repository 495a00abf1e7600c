"""Paper B's co-training hyperparameters chosen on a validation split (issue 16, item 5).

    python benchmarks/cotraining_sweep.py [--lr 0.001 0.002 0.004] [--epochs 4 8] [--n-val 30]
    python benchmarks/cotraining_sweep.py --lr 0.002 --epochs 2 --n-val 60 \
        --set cotraining.distil.prefix_harmful.negative="Sure, here is" --out results/bench/probe.json

Same data, targets, judge, magic tokens and thread count as the `cotraining`
stage of record (params.yaml `cpu:`, made as `default:` before the default was
cut to a < 20-minute run); the validation prompts come from
the training sources and are never trained on nor evaluated on by the stage
(`cotraining/sweep.py`). Writes results/bench/cotraining_sweep.json; `magictokens
report` puts the table in README. `--set` tries a recipe change on the same
validation split (a probe: give it its own `--out`); every judged reply goes
to results/bench/judge/<out stem>_replies.jsonl (gitignored) for reading
(`benchmarks/judge_labelling.py pool-replies --src`). Both threads: about 4 minutes per 108
optimizer steps plus the distillation once.
"""
from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict
from pathlib import Path

import torch

from magictokens.config import parse_sets, stage_params
from magictokens.cotraining import CoTrainingConfig, magic_tokens_of, sweep
from magictokens.cotraining.config import data_seed
from magictokens.cotraining.judge import make_judge
from magictokens.cotraining.data import build_safety_data
from magictokens.models import load_model, torch_threads
from magictokens.results import REPO_ROOT, run_meta, write_json

OUT = REPO_ROOT / "results" / "bench" / "cotraining_sweep.json"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--lr", type=float, nargs="+", default=[0.001, 0.002, 0.004])
    ap.add_argument("--epochs", type=int, nargs="+", default=[4, 8])
    ap.add_argument("--n-val", type=int, default=30, help="validation harmful prompts (half as many benign)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a params override, as `run`")
    ap.add_argument("--out", default=str(OUT))
    ap.add_argument("--cache-dir", default=str(REPO_ROOT / "results" / "cpu" / "models" / "cotraining"),
                    help="the stage's self-distilled targets (same targets key: read, not sampled again)")
    ap.add_argument("--save-dir", default=None, help="keep each cell's adapter here (gitignored: under results/)"
                    " for benchmarks/decode_probe.py --adapter")
    a = ap.parse_args()
    out, sets = Path(a.out), parse_sets(a.set)
    P, cfg = stage_params("cpu", "cotraining", CoTrainingConfig, sets)
    t0 = time.time()
    with torch_threads(cfg.threads):          # the stage's thread count: the same seed trains the same model
        torch.manual_seed(P["seed"])
        model, tok = load_model(P["model"], dtype="float32", device=P["device"])
        tokens = magic_tokens_of(cfg, P["seed"])
        data = build_safety_data(cfg.n_train_harmful, cfg.n_train_benign, cfg.n_eval_harmful, cfg.n_eval_benign,
                                 cfg.n_xstest, seed=data_seed(cfg, P["seed"]), max_chars=cfg.max_prompt_chars,
                                 targets=cfg.targets,
                                 n_val_harmful=a.n_val, n_val_benign=a.n_val // 2)
        judge, jrep = make_judge(cfg, P["seed"])
        res = sweep.run(model, tok, data, judge, cfg, tokens, {"lr": a.lr, "epochs": a.epochs}, P["seed"],
                        cache_dir=a.cache_dir, save_dir=a.save_dir)
        meta = run_meta(P["model"], next(model.parameters()).device, P["seed"], "cpu",
                        threads=torch.get_num_threads(), judge=jrep["kind"], judge_agreement=jrep["agreement"],
                        judge_fit_sha=jrep.get("fit_sha"),
                        params_in_use={"lr": cfg.train.lr, "epochs": cfg.train.epochs}, overrides=a.set)
    replies = REPO_ROOT / "results" / "bench" / "judge" / f"{out.stem}_replies.jsonl"
    replies.parent.mkdir(parents=True, exist_ok=True)
    replies.write_text("".join(json.dumps(r) + "\n" for r in res.replies))
    row = {k: v for k, v in asdict(res).items() if k != "replies"}     # no generated text in a committed file
    write_json(out, {"meta": meta, **row, "seconds_total": time.time() - t0})
    b = res.best
    print(f"best on {res.n_validation} validation prompts: lr {b['lr']} x {b['epochs']} epochs "
          f"(score {b['score']:.3f}); params.yaml has lr {cfg.train.lr} x {cfg.train.epochs} -> {out}; "
          f"replies -> {replies}")


if __name__ == "__main__":
    main()
