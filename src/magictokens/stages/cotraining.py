"""Stage `cotraining` (paper B): params in, `CoTrainingStageResult` out.

    res = run("default")                                   # data, judge, training, evaluation
    res = CoTrainingStageResult.load(results_dir("paper"))  # the committed result, no model

`run` builds the disjoint train / held-out prompt sets, fits and scores the
offline judge, self-distils missing targets, co-trains and trains the
baselines (`cotraining.run`), judges every model, and writes
`cotraining.json` (+ `cotraining_projection.csv`, the 2-D PCA of the
first-token distributions that figure 2 draws, and `cotraining_sam.npz`, the
pairwise distances SAM, its interval and its null are computed from). Trained adapters go to
`results/<scale>/models/cotraining/` (DVC cache, never git). No generated
text is saved: the json holds judged labels and aggregates only.

Under `accelerate launch` rank 0 trains and the other processes take its
weights; all of them generate their share of the evaluation; rank 0 alone
writes (adapters, data, results) and returns the result, the others None.
"""
from __future__ import annotations

import csv
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .. import headline
from ..config import REPO_ROOT, stage_params
from ..cotraining import CoTrainingConfig, magic_tokens_of
from ..cotraining import run as cotrain
from ..cotraining.judge import make_judge
from ..cotraining.config import data_seed
from ..cotraining.data import build_safety_data
from ..distributed import world
from ..models import load_model, torch_threads
from ..results import as_result, read_stage_json, results_dir, run_meta, write_json


@dataclass
class CoTrainingStageResult:
    meta: dict[str, Any]
    judge_accuracy: float                      # the judge's agreement with reference labels (judge["kind"] says which)
    judge: dict[str, Any]                      # cotraining.judge.make_judge's report
    tokens: dict[str, str]                     # mode -> magic token (and "random")
    confusion: dict[str, dict[str, float]]     # held-out harmful: system prompt -> {judged: share}
    confusion_benign: dict[str, dict[str, float]]
    mode_accuracy: float
    sam: dict[str, float]                      # model -> Safety Alignment Margin
    safety_score: dict[str, float]
    xstest_over_refusal: dict[str, float]
    mmlu: dict[str, float]
    train_logs: dict[str, dict[str, Any]]
    n_distilled: int
    seconds: dict[str, float]
    data: dict[str, Any]                       # the split manifest: sizes, sources, target origins
    params: dict[str, Any]                     # the cotraining section as run
    seconds_total: float
    constructive_safety: dict[str, float] = field(default_factory=dict)    # CSS over harmful + safe prompts
    sam_stats: dict[str, dict[str, Any]] = field(default_factory=dict)     # SAM, interval, null, per metric
    jailbreak: dict[str, dict[str, Any]] = field(default_factory=dict)     # safety score plain / attacked, drop
    projection: dict[str, dict[str, list]] = field(default_factory=dict)   # -> cotraining_projection.csv
    examples: dict[str, list[dict]] = field(default_factory=dict)          # benign, truncated: shown, never saved
    sam_distances: dict[str, dict] = field(default_factory=dict)           # -> cotraining_sam.npz (not the JSON)
    distil: dict[str, Any] = field(default_factory=dict)                   # self-distillation yields, drop reasons
    invalid_share: dict[str, dict] = field(default_factory=dict)           # model -> invalid share (scored apart)

    def save(self, out_dir: str | Path) -> Path:
        out_dir = Path(out_dir)
        d = asdict(self)
        proj = d.pop("projection")
        d.pop("examples")
        dist = d.pop("sam_distances")
        if dist:   # SAM's inputs as numbers: every pairwise distance (upper triangle), the mode and prompt of each row
            arrays = {}
            for name, v in dist.items():
                iu = np.triu_indices(len(v["modes"]), 1)
                for metric in ("cosine_logits", "euclidean_probs"):
                    arrays[f"{name}/{metric}"] = np.asarray(v[metric])[iu].astype(np.float32)
                arrays[f"{name}/modes"] = np.asarray(v["modes"])
                arrays[f"{name}/prompt_ids"] = np.asarray(v["prompt_ids"])
            np.savez_compressed(out_dir / "cotraining_sam.npz", **arrays)
        write_json(out_dir / "cotraining.json", d)
        with open(out_dir / "cotraining_projection.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["model", "mode", "x", "y"])
            for name, p in proj.items():
                w.writerows([name, m, x, y] for (x, y), m in zip(p["xy"], p["mode"]))
        return headline.write_saved(out_dir, "cotraining")

    @classmethod
    def load(cls, out_dir: str | Path) -> CoTrainingStageResult:
        out_dir = Path(out_dir)
        d = read_stage_json(out_dir, "cotraining")
        proj: dict[str, dict[str, list]] = {}
        pp = out_dir / "cotraining_projection.csv"
        if pp.exists():
            for r in csv.DictReader(open(pp)):
                p = proj.setdefault(r["model"], {"xy": [], "mode": []})
                p["xy"].append([float(r["x"]), float(r["y"])])
                p["mode"].append(r["mode"])
        d["projection"] = proj
        return as_result(cls, d)


def write_replies(path: Path, replies: list[dict], meta: dict) -> None:
    """Every judged reply of the run, one JSON row each with the run's model, seed and scale (gitignored:
    the models folder is a DVC out, so the replies live in the DVC cache, keyed by model and prompt)."""
    import json
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for r in replies:
            f.write(json.dumps({"base_model": meta["model"], "seed": meta["seed"], "scale": meta["scale"], **r}) + "\n")


def run(scale: str = "default", out_root=None, overrides: dict | None = None,
        progress=print) -> CoTrainingStageResult | None:
    t_start = time.time()
    P, cfg = stage_params(scale, "cotraining", CoTrainingConfig, overrides)
    with torch_threads(cfg.threads):   # same seed + same threads = same model on one machine (tested)
        return _run(scale, out_root, overrides, progress, P, cfg, t_start)


def _run(scale, out_root, overrides, progress, P, cfg, t_start) -> CoTrainingStageResult | None:
    torch.manual_seed(P["seed"])
    model, tok = load_model(P["model"], dtype="float32", device=P["device"])
    tokens = magic_tokens_of(cfg, P["seed"])
    out_dir = results_dir(scale, out_root)
    model_dir = Path(out_root or REPO_ROOT) / "results" / scale / "models" / "cotraining"
    progress(f"magic tokens: {tokens}")

    # every prompt in exactly one split; a text in both train and eval sources is kept for eval only
    data = build_safety_data(cfg.n_train_harmful, cfg.n_train_benign, cfg.n_eval_harmful, cfg.n_eval_benign,
                             cfg.n_xstest, seed=data_seed(cfg, P["seed"]), max_chars=cfg.max_prompt_chars, targets=cfg.targets)
    judge, jrep = make_judge(cfg, P["seed"])
    progress(f"judge ({jrep['kind']}): agreement {jrep['agreement']:.3f} on held-out labelled replies")
    meta = run_meta(P["model"], next(model.parameters()).device, P["seed"], scale,
                    n_train=len(data.train), n_eval=len(data.eval_harmful) + len(data.eval_benign),
                    magic_tokens=tokens, overrides=overrides or {}, threads=torch.get_num_threads())
    res = cotrain(model, tok, data, judge, cfg, tokens, seed=P["seed"], save_dir=model_dir, progress=progress)
    if world()[0] != 0:   # under a launcher: this process evaluated its share; rank 0 trained and writes
        return None
    data.to_jsonl(model_dir / "data.jsonl")   # derived set, beside the weights (gitignored, DVC out)
    write_replies(model_dir / "replies.jsonl", res.replies, meta)   # judged replies: a new judge re-scores them
    manifest = data.manifest()                 # after distillation: target origins include "dropped"
    out = CoTrainingStageResult(
        meta=meta, judge_accuracy=jrep["agreement"], judge=jrep,
        tokens=res.tokens, confusion=res.confusion, confusion_benign=res.confusion_benign,
        mode_accuracy=res.mode_accuracy, sam=res.sam, safety_score=res.safety_score,
        xstest_over_refusal=res.xstest_over_refusal, mmlu=res.mmlu, train_logs=res.train_logs,
        n_distilled=res.n_distilled, seconds=res.seconds, data=manifest, params=P["cotraining"],
        seconds_total=round(time.time() - t_start, 1), constructive_safety=res.constructive_safety,
        sam_stats=res.sam_stats, jailbreak=res.jailbreak, projection=res.projection, examples=res.examples,
        sam_distances=res.sam_distances, distil=res.distil, invalid_share=res.invalid_share)
    out.save(out_dir)
    back = CoTrainingStageResult.load(out_dir)   # figures draw exactly what results/ holds ...
    back.examples = out.examples                # ... plus the truncated benign examples, never saved
    return back
