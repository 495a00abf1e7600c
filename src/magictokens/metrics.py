"""Metrics over finished runs.

# ---- paper A: reachability

A back-off instance gives a *required k*: the shortest prompt length that made
the target the argmax, or None (unsolved within the budget, drawn at "inf").

    eps(k) = (1/N) #{instances whose required k is None or > k}

is the "portion incorrect" at prompt length k (paper A, Fig. 1).
"""
from __future__ import annotations

import math

import numpy as np


def k_epsilon_curve(required_k, ks) -> dict[int, float]:
    """eps(k) for each k in `ks`; `required_k` is a list of int | None."""
    req = np.array([math.inf if r is None else r for r in required_k], dtype=float)
    if req.size == 0:
        return {int(k): float("nan") for k in ks}
    return {int(k): float(np.mean(req > k)) for k in ks}


def bootstrap_ci(required_k, ks, n_boot: int = 2000, seed: int = 0, level: float = 0.95) -> dict[int, list[float]]:
    """Percentile bootstrap interval of eps(k), resampling instances. -> {k: [lo, hi]}"""
    req = np.array([math.inf if r is None else r for r in required_k], dtype=float)
    if req.size == 0:
        return {int(k): [float("nan"), float("nan")] for k in ks}
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, req.size, size=(n_boot, req.size))     # (B, N)
    boot = req[idx]                                               # (B, N)
    a = (1 - level) / 2
    out = {}
    for k in ks:
        e = (boot > k).mean(axis=1)                               # (B,)
        out[int(k)] = [float(np.quantile(e, a)), float(np.quantile(e, 1 - a))]
    return out


def pearson(x, y) -> float:
    """Pearson correlation; nan when fewer than 3 points or a constant input."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if x.size < 3 or np.std(x) == 0 or np.std(y) == 0:
        return float("nan")
    return float(np.corrcoef(x, y)[0, 1])


def reachable_fraction(required_k, k_max: int) -> float:
    """Share of instances solved with a prompt of at most k_max tokens."""
    return 1.0 - k_epsilon_curve(required_k, [k_max])[k_max]
