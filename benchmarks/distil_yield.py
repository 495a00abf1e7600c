"""Paper B's self-distillation alone, at a scale: the yield and origin of every target, per mode.

    python benchmarks/distil_yield.py [--scale cpu] [--out results/bench/distil_cpu_avx2.json]

Builds the stage's training prompts (its `data_seed`), loads its judge and
self-distils exactly as `magictokens run cotraining --scale S` would, into
the same cache (`results/<scale>/models/cotraining/targets-<key>.json`,
gitignored): the stage then reads the targets instead of generating them.
Writes `results/bench/distil_<scale>.json`: per mode and side (harmful /
benign) the pairs kept, the rounds they closed in, the judged labels of the
rejected candidates and the targets' origins (distil / labelled / dropped),
with the run's time and hardware. No text.
"""
from __future__ import annotations

import argparse
import time

import torch

from magictokens.config import REPO_ROOT, stage_params
from magictokens.cotraining import CoTrainingConfig
from magictokens.cotraining.config import data_seed
from magictokens.cotraining.data import build_safety_data
from magictokens.cotraining.judge import make_judge
from magictokens.cotraining.pipeline import fill_targets, targets_key
from magictokens.models import load_model, torch_threads
from magictokens.results import run_meta, write_json


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--scale", default="cpu")
    ap.add_argument("--out", default=None, help="default: results/bench/distil_<scale>.json")
    a = ap.parse_args()
    P, cfg = stage_params(a.scale, "cotraining", CoTrainingConfig)
    seed = data_seed(cfg, P["seed"])
    with torch_threads(cfg.threads):
        torch.manual_seed(P["seed"])
        model, tok = load_model(P["model"], dtype="float32", device=P["device"])
        data = build_safety_data(cfg.n_train_harmful, cfg.n_train_benign, cfg.n_eval_harmful, cfg.n_eval_benign,
                                 cfg.n_xstest, seed=seed, max_chars=cfg.max_prompt_chars, targets=cfg.targets)
        judge, jrep = make_judge(cfg, P["seed"])
        cache = REPO_ROOT / "results" / a.scale / "models" / "cotraining"
        t0 = time.time()
        n, log = fill_targets(model, tok, data, judge, cfg, seed, cache)
        secs = time.time() - t0
    out = {"meta": run_meta(P["model"], model.device, seed, a.scale, threads=torch.get_num_threads()),
           "targets_key": targets_key(model, data, judge, cfg, seed), "judge_fit_sha": jrep.get("fit_sha"),
           "n_train": len(data.train), "n_distilled": n, "seconds": round(secs, 1),
           "distil": log, "manifest": data.manifest()}
    path = REPO_ROOT / (a.out or f"results/bench/distil_{a.scale}.json")
    write_json(path, out)
    print(f"{n} targets kept of {3 * len(data.train)} pairs in {secs / 60:.1f} min; kept {log['kept']}; "
          f"origin {log['origin']} -> {path.relative_to(REPO_ROOT)}")


if __name__ == "__main__":
    main()
