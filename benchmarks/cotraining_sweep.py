"""Paper B's co-training hyperparameters chosen on a validation split (issue 16, item 5).

    python benchmarks/cotraining_sweep.py [--lr 0.001 0.002 0.004] [--epochs 4 8] [--n-val 30]

Same data, targets, judge, magic tokens and thread count as the `cotraining`
stage of record (params.yaml `cpu:`, made as `default:` before the default was
cut to a < 20-minute run); the validation prompts come from
the training sources and are never trained on nor evaluated on by the stage
(`cotraining/sweep.py`). Writes results/bench/cotraining_sweep.json; `magictokens
report` puts the table in README. Both threads: about 4 minutes per 108
optimizer steps plus the distillation once.
"""
from __future__ import annotations

import argparse
import time
from dataclasses import asdict

import torch

from magictokens.config import stage_params
from magictokens.cotraining import CoTrainingConfig, magic_tokens_of, sweep
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
    a = ap.parse_args()
    P, cfg = stage_params("cpu", "cotraining", CoTrainingConfig, {})
    t0 = time.time()
    with torch_threads(cfg.threads):          # the stage's thread count: the same seed trains the same model
        torch.manual_seed(P["seed"])
        model, tok = load_model(P["model"], dtype="float32", device=P["device"])
        tokens = magic_tokens_of(cfg, P["seed"])
        data = build_safety_data(cfg.n_train_harmful, cfg.n_train_benign, cfg.n_eval_harmful, cfg.n_eval_benign,
                                 cfg.n_xstest, seed=P["seed"], max_chars=cfg.max_prompt_chars, targets=cfg.targets,
                                 n_val_harmful=a.n_val, n_val_benign=a.n_val // 2)
        judge, jrep = make_judge(cfg, P["seed"])
        res = sweep.run(model, tok, data, judge, cfg, tokens, {"lr": a.lr, "epochs": a.epochs}, P["seed"])
        meta = run_meta(P["model"], next(model.parameters()).device, P["seed"], "default",
                        threads=torch.get_num_threads(), judge=jrep["kind"], judge_agreement=jrep["agreement"],
                        params_in_use={"lr": cfg.train.lr, "epochs": cfg.train.epochs})
    write_json(OUT, {"meta": meta, **asdict(res), "seconds_total": time.time() - t0})
    b = res.best
    print(f"best on {res.n_validation} validation prompts: lr {b['lr']} x {b['epochs']} epochs "
          f"(score {b['score']:.3f}); params.yaml has lr {cfg.train.lr} x {cfg.train.epochs} -> {OUT}")


if __name__ == "__main__":
    main()
