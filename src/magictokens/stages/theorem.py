"""Stage `theorem` (paper A's self-attention bound, corrected): params in, `TheoremStageResult` out.

    res = run("default")                                  # load the model, check every head
    res = TheoremStageResult.load(results_dir("paper"))   # the committed result, no model

`run` samples the Wikitext spans, checks the corrected bound on every
configured (layer, head, k, span) with optimised and random continuous
controls (`theory.run`, float64), and writes `theorem.json`: one row per
case (values to 9 significant digits), the heads' singular values, the
violation counts, the RoPE repeat and the printed sigma_q slip. Notebook 02
draws its figures from this result alone.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from .. import headline
from ..config import stage_params
from ..data import read_wikitext
from ..models import load_model
from ..results import as_result, read_stage_json, results_dir, run_meta, write_json
from ..theory import VIOLATION_RTOL, TheoremConfig, sample_x0
from ..theory import run as check

SLIM = ("layer", "head", "k", "x0", "bound", "achieved", "ratio")   # the RoPE repeat keeps these per row


@dataclass
class TheoremStageResult:
    meta: dict[str, Any]                    # + runtime_s, n_x0, x0_len, num_layers, theorem (the config)
    heads: list[dict[str, Any]]             # one row per (layer, head, k, x0): bound, achieved, ratio, a, gamma
    violations: int                         # trials above the bound (pre-RoPE head)
    n_trials: int
    range_violations: int                   # trials whose a or gamma left its range
    head_info: list[dict[str, Any]]         # per (layer, head): sigma_q, sigma_k, sigma_v, M_u, d_head
    summary: dict[str, Any]                 # per layer / per k: max and median achieved / bound
    rope: dict[str, Any] | None             # the same check with RoPE: counts, summary, slim rows
    sigma_q_slip: dict[str, Any]            # rows where the printed sigma_q form is exceeded

    def save(self, out_dir: str | Path) -> Path:
        write_json(Path(out_dir) / "theorem.json", asdict(self))
        return headline.write_saved(out_dir, "theorem")

    @classmethod
    def load(cls, out_dir: str | Path) -> TheoremStageResult:
        return as_result(cls, read_stage_json(out_dir, "theorem"))


def short(row: dict) -> dict:
    """Floats to 9 significant digits: what a float64 bound vs achieved comparison needs, and no more."""
    return {k: float(f"{v:.9g}") if isinstance(v, float) else v for k, v in row.items()}


def run(scale: str = "default", out_root=None, overrides: dict | None = None) -> TheoremStageResult:
    P, cfg = stage_params(scale, "theorem", TheoremConfig, overrides)
    torch.manual_seed(P["seed"])
    model, tok = load_model(P["model"], dtype="float32", device=P["device"])
    x0_ids = sample_x0(tok, read_wikitext(), cfg.n_x0, cfg.x0_len, P["seed"])
    meta = run_meta(P["model"], model.device, P["seed"], scale, theorem=asdict(cfg),
                    violation_rtol=VIOLATION_RTOL, checked_row="last (next-token) row of x0",
                    x0="RMSNorm(h_L) of Wikitext-2 test spans", controls="continuous, ||u_j|| <= M_u",
                    overrides=overrides or {})
    t0 = time.time()
    res = check(model, x0_ids, cfg, seed=P["seed"], progress=True)
    runtime_s = time.time() - t0
    slip = res.sigma_q_slip()
    rope = None
    if res.rope:
        rope = {"violations": res.rope["violations"], "n_trials": res.rope["n_trials"],
                "range_violations": res.rope["range_violations"], "summary": res.summary(res.rope["rows"]),
                "heads": [short({k: r[k] for k in SLIM}) for r in res.rope["rows"]]}
    out = TheoremStageResult(
        meta={**meta, "runtime_s": round(runtime_s, 1), "n_x0": cfg.n_x0, "x0_len": cfg.x0_len,
              "num_layers": model.config.num_hidden_layers, "x0_example": tok.decode(x0_ids[0])},
        heads=[short(r) for r in res.rows], violations=res.violations, n_trials=res.n_trials,
        range_violations=res.range_violations, head_info=res.heads, summary=res.summary(), rope=rope,
        sigma_q_slip={**slip, "heads": [list(h) for h in slip["heads"]]})
    out.save(results_dir(scale, out_root))
    return TheoremStageResult.load(results_dir(scale, out_root))   # figures draw exactly what results/ holds
