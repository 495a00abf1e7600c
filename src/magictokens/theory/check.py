"""The numerical check of the corrected theorem over layers, heads, k and spans.

    result = run(model, x0_ids, TheoremConfig())   # -> Result: rows, violations, trials
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Literal

import numpy as np
import torch
from tqdm.auto import tqdm

from ..errors import MagicTokensError
from ..fields import Count, Flag, Int, Positive, PositiveReal, params
from .adversary import optimise_control, random_controls, single_thread
from .head import (VIOLATION_RTOL, Head, controlled, extract_head, layer_inputs, orthogonal_part, parallel_scale,
                   reachability_bound, resolve_layers, rmsnorm_ceiling, uncontrolled)

@params
@dataclass
class TheoremConfig:
    layers: list[Int] = field(default_factory=lambda: [0, 7, 15, 23, 29])  # negative = from the end
    heads: list[Count] | None = None    # query heads; None = all of them
    ks: list[Positive] = field(default_factory=lambda: [1, 2, 4, 8, 16])
    n_x0: Positive = 4                       # Wikitext spans
    x0_len: Positive = 16                    # m = |x0| tokens
    m_u: Literal["x0_max", "rmsnorm"] | PositiveReal = "x0_max"   # x0_max: max ||x_j|| of the layer's inputs over all spans;
                                        # rmsnorm: sqrt(d) max|g| (any RMSNorm output); or a number
    steps: Count = 150                    # projected Adam steps per restart
    restarts: Positive = 6                   # 3 structured + random starts
    lr: PositiveReal = 0.1                     # step size in units of M_u (per-coordinate: / sqrt(d))
    n_random: Count = 64                  # random U (on the sphere ||u_j|| = M_u) per (head, k, x0)
    rope: Flag = False                  # headline check: the pre-RoPE linear head (as the theorem)
    check_rope: Flag = True             # also run every (head, k) with RoPE
    plot_layers: list[Int] | None = None  # bound-vs-k panels; None = all layers (max 4 shown)
    plot_heads: list[Count] | None = None   # None = first 3 heads

    def __post_init__(self):
        if not self.ks or any(int(k) < 1 for k in self.ks):
            raise MagicTokensError(f"theorem.ks must be positive integers, got {self.ks}")
        if int(self.x0_len) < 1 or int(self.n_x0) < 1:
            raise MagicTokensError(f"theorem.x0_len and n_x0 must be >= 1, got {self.x0_len}, {self.n_x0}")
        if not (isinstance(self.m_u, (int, float)) or self.m_u in ("x0_max", "rmsnorm")):
            raise MagicTokensError(f"theorem.m_u must be 'x0_max', 'rmsnorm' or a number, got {self.m_u!r}")
        if int(self.restarts) < 1 or int(self.steps) < 0:
            raise MagicTokensError("theorem.restarts must be >= 1 and steps >= 0")


@dataclass
class Result:
    rows: list[dict]              # one per (layer, head, k, x0): bound, achieved, ratio, ...
    heads: list[dict]             # one per (layer, head): sigmas, M_u
    violations: int               # (head, k, x0, trial) with achieved > bound (headline setting)
    n_trials: int
    range_violations: int         # trials whose attention mass a or parallel scale gamma left its range
    rope: dict | None = None      # same check with RoPE: {"violations", "n_trials", "rows"}
    config: dict = field(default_factory=dict)

    def summary(self, rows: list[dict] | None = None) -> dict:
        """Per layer: max / median tightness ratio; per k: median ratio."""
        rows = self.rows if rows is None else rows
        out: dict = {"per_layer": {}, "per_k": {}}
        for L in sorted({r["layer"] for r in rows}):
            rs = np.array([r["ratio"] for r in rows if r["layer"] == L])
            out["per_layer"][str(L)] = {"max_ratio": float(rs.max()), "median_ratio": float(np.median(rs))}
        for k in sorted({r["k"] for r in rows}):
            rs = np.array([r["ratio"] for r in rows if r["k"] == k])
            out["per_k"][str(k)] = {"max_ratio": float(rs.max()), "median_ratio": float(np.median(rs))}
        return out

    def sigma_q_slip(self) -> dict:
        """The printed slip: the same bound with sigma_q in place of sigma_v.

        Counts rows whose best achieved value exceeds ``a_max sigma_q M_u``:
        any count > 0 shows the printed form is not a valid bound.
        """
        info = {(h["layer"], h["head"]): h for h in self.heads}
        bad = [r for r in self.rows
               if r["achieved"] > r["a_max"] * info[r["layer"], r["head"]]["sigma_q"]
               * info[r["layer"], r["head"]]["M_u"] * (1 + VIOLATION_RTOL)]
        return {"violations": len(bad), "n_rows": len(self.rows),
                "heads": sorted({(r["layer"], r["head"]) for r in bad})}


def sample_x0(tokenizer, text: str, n: int, length: int, seed: int) -> torch.Tensor:
    """n seeded random Wikitext spans of `length` tokens -> (n, length) ids."""
    ids = tokenizer(text[:2_000_000], add_special_tokens=False).input_ids
    if len(ids) < length + 1:
        raise MagicTokensError(f"Wikitext holds {len(ids)} tokens, too few for |x0| = {length}: run `magictokens data`")
    starts = np.random.default_rng(seed).choice(len(ids) - length, size=n, replace=False)
    return torch.tensor([ids[s:s + length] for s in sorted(int(x) for x in starts)])


def check_head(X0: torch.Tensor, head: Head, ks, m_u: float, config: TheoremConfig,
               generator: torch.Generator, rope_on: bool = False) -> tuple[list[dict], int, int, int]:
    """All k for one head: bound vs optimised and random U.

    -> (rows, violations of the orthogonal bound (per trial), trials,
    violations of the a / gamma ranges (per trial)).
    """
    row = -1
    y0, logZ = uncontrolled(X0, head, row, rope_on)
    x_max = X0.norm(dim=-1).max(-1).values                  # (B,) max |x0| per span
    sq, sk, sv = head.sigmas()
    rows, viol, trials, range_viol = [], 0, 0, 0
    for k in ks:
        b = reachability_bound(k, sq, sk, sv, m_u, x_max, logZ, head.d_head, y0.norm(dim=-1))
        opt = optimise_control(X0, head, k, m_u, steps=config.steps, restarts=config.restarts, lr=config.lr,
                               generator=generator, row=row, rope_on=rope_on)
        with torch.no_grad():
            Ur = random_controls((X0.shape[0], config.n_random, k, X0.shape[-1]), m_u, generator)
            yr, ar = controlled(Ur, X0, head, row, rope_on)
            rand = orthogonal_part(yr, y0)                   # (B, n_random)
            gam = parallel_scale(yr, y0)
            yb, ab = controlled(opt.best_U[:, None], X0, head, row, rope_on)
            gb = parallel_scale(yb, y0)
        lim = b.orth[:, None] * (1 + VIOLATION_RTOL)
        viol += int((opt.per_restart > lim).sum() + (rand > lim).sum())
        trials += opt.per_restart.numel() + rand.numel()
        # parts 1 and 3 of the theorem: attention mass and parallel scaling inside their ranges
        tol = VIOLATION_RTOL * (1 + b.gamma_max.abs() + b.gamma_min.abs())[:, None]
        for a_, g_ in ((ar, gam), (ab, gb)):
            range_viol += int(((a_ > b.a_max[:, None] + 1e-12) | (a_ < b.a_min[:, None] - 1e-12)).sum())
            range_viol += int(((g_ > b.gamma_max[:, None] + tol) | (g_ < b.gamma_min[:, None] - tol)).sum())
        for j in range(X0.shape[0]):
            rows.append({
                "layer": head.layer, "head": head.head, "kv_head": head.kv_head, "k": int(k), "x0": j,
                "bound": float(b.orth[j]), "achieved": float(opt.best[j]), "ratio": float(opt.best[j] / b.orth[j]),
                "random_best": float(rand[j].max()), "a_max": float(b.a_max[j]), "a_min": float(b.a_min[j]),
                "a_achieved": float(ab[j, 0]), "gamma_min": float(b.gamma_min[j]), "gamma_max": float(b.gamma_max[j]),
                "gamma_random": [float(gam[j].min()), float(gam[j].max())],
                "a_random": [float(ar[j].min()), float(ar[j].max())],
                "y0_norm": float(y0[j].norm()), "log_row_sum": float(logZ[j]), "x_max": float(x_max[j]),
            })
    return rows, viol, trials, range_viol


def run(model, x0_batch: torch.Tensor, config: TheoremConfig | None = None, seed: int = 0,
        progress: bool = False) -> Result:
    """Check the corrected theorem on every configured (layer, head) of `model`.

    x0_batch (n, m) token ids. For each layer: X0 = RMSNorm(h_layer) of the
    spans, M_u from `config.m_u`; for each head and k: the bound per span vs
    the best ||y_perp|| of `optimise_control` and of `n_random` random U.
    """
    with single_thread():
        return _run(model, x0_batch, config or TheoremConfig(), seed, progress)


def _run(model, x0_batch, config: TheoremConfig, seed: int, progress: bool) -> Result:
    layers = resolve_layers(model, config.layers)
    n_heads = model.config.num_attention_heads
    heads = list(range(n_heads)) if config.heads is None else [int(h) for h in config.heads]
    X = layer_inputs(model, x0_batch, layers)
    g = torch.Generator().manual_seed(seed)
    rows, info, viol, trials, range_viol = [], [], 0, 0, 0
    rrows, rviol, rtrials, rrange = [], 0, 0, 0
    todo = [(L, h) for L in layers for h in heads]
    it = todo
    if progress:
        it = tqdm(todo, desc="heads")
    for L, h in it:
        head = extract_head(model, L, h)
        X0 = X[L]
        if config.m_u == "x0_max":
            m_u = float(X0.norm(dim=-1).max())
        elif config.m_u == "rmsnorm":
            m_u = rmsnorm_ceiling(model, L)
        else:
            m_u = float(config.m_u)
        sq, sk, sv = head.sigmas()
        info.append({"layer": L, "head": h, "kv_head": head.kv_head, "sigma_q": sq, "sigma_k": sk,
                     "sigma_v": sv, "M_u": m_u, "d_head": head.d_head})
        r, v, t, rv = check_head(X0, head, config.ks, m_u, config, g, rope_on=config.rope)
        rows += r; viol += v; trials += t; range_viol += rv  # noqa: E702
        if config.check_rope and not config.rope:
            r, v, t, rv = check_head(X0, head, config.ks, m_u, config, g, rope_on=True)
            rrows += r; rviol += v; rtrials += t; rrange += rv  # noqa: E702
    rope_part = ({"violations": rviol, "n_trials": rtrials, "range_violations": rrange, "rows": rrows}
                 if rrows else None)
    return Result(rows, info, viol, trials, range_viol, rope_part, asdict(config))
