"""Paper B's training hyperparameters, chosen on a validation split, never on the held-out evaluation.

The validation prompts come from the *training* sources and are never trained
on (`data.build_safety_data(n_val_harmful=...)`). For every point of a
grid over (lr, epochs) the co-training of the stage is repeated on the same
self-distilled rows, and the model is scored on the validation harmful
prompts: under each mode's magic token, the judged share of that mode,

    diag(m) = #{p in V : judge(generate(p | token_m)) = m} / |V|,
    score   = mean_m diag(m)                       (the stage's mode accuracy, on V)

The best score wins; ties go to fewer optimizer steps, then to the smaller lr.

    res = run(model, tok, data, judge, cfg, tokens, {"lr": [...], "epochs": [...]})   # -> SweepResult
"""
from __future__ import annotations

import dataclasses
import itertools
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..chat import generate
from ..errors import MagicTokensError
from .config import CoTrainingConfig, data_seed, decoding
from .data import MODES, SafetyData
from .pipeline import fill_targets, stage_rows
from .training import sft, step_budget


@dataclass
class SweepResult:
    rows: list[dict]                     # one per grid point: lr, epochs, steps, diag, score, loss_last, seconds
    best: dict                           # the winning row
    n_validation: int                    # validation harmful prompts scored
    distil: dict = field(default_factory=dict)
    # every judged reply (lr, epochs, mode, prompt, reply, label): for reading, never committed (unfiltered text)
    replies: list[dict] = field(default_factory=list, repr=False)


def choose(rows: list[dict]) -> dict:
    """Highest score; ties -> fewer steps, then smaller lr."""
    return min(rows, key=lambda r: (-r["score"], r["steps"], r["lr"]))


def run(model, tok, data: SafetyData, judge, cfg: CoTrainingConfig, tokens: dict, grid: dict, seed: int = 0,
        progress=print, cache_dir=None, save_dir=None) -> SweepResult:
    """Co-train each (lr, epochs) cell on the stage's targets (`cache_dir`: where the stage keeps them, so the
    self-distillation is read, not sampled again) and judge its replies to the validation prompts.
    `save_dir`: each cell's adapter is kept in save_dir/lr<lr>x<epochs> (and read back by a rerun)."""
    val = [p.text for p in data.validation if p.harmful]
    if not val:
        raise MagicTokensError("the sweep needs validation prompts: build_safety_data(..., n_val_harmful=N > 0)")
    bad = set(grid) - {"lr", "epochs"} or {k for k in ("lr", "epochs") if not grid.get(k)}
    if bad:
        raise MagicTokensError(f"sweep grid keys {sorted(bad)}: give non-empty lists for exactly 'lr' and 'epochs'")
    _, distil_log = fill_targets(model, tok, data, judge, cfg, data_seed(cfg, seed), cache_dir)   # the stage's own
    train_rows = stage_rows(data, tokens, cfg, seed)
    out, replies = [], []
    for lr, epochs in itertools.product(grid["lr"], grid["epochs"]):
        t0 = time.time()
        tc = dataclasses.replace(cfg.train, lr=float(lr), epochs=int(epochs))
        # the stage's step budget, passed as the stage passes it: the same run key, so a stage's saved adapter
        # of this config is read as this cell (and a cell's adapter by the stage)
        m, log = sft(model, tok, train_rows, tc, seed, step_budget(len(train_rows), tc),
                     save_dir=None if save_dir is None else Path(save_dir) / f"lr{lr:g}x{epochs}")
        diag = {}
        for mode in MODES:
            outs = generate(m, tok, val, tokens[mode], cfg.max_new_tokens, cfg.gen_batch_size, tc.max_prompt_tokens,
                            **decoding(cfg))
            labels = judge.judge(outs, [True] * len(val), prompts=val)
            diag[mode] = sum(x == mode for x in labels) / len(val)
            replies += [{"lr": float(lr), "epochs": int(epochs), "mode": mode, "prompt": p, "reply": o, "label": x}
                        for p, o, x in zip(val, outs, labels)]
        row = {"lr": float(lr), "epochs": int(epochs), "steps": log.steps, "diag": diag,
               "score": sum(diag.values()) / len(MODES), "loss_last": log.losses[-1], "seconds": time.time() - t0}
        out.append(row)
        progress(f"lr {lr} x {epochs} epochs ({log.steps} steps): validation mode accuracy {row['score']:.3f}")
        del m
    return SweepResult(rows=out, best=choose(out), n_validation=len(val), distil=distil_log, replies=replies)
