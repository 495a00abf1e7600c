"""How many candidates the fast search must score at k = 1: a gradient ranking's recall against
exhaustive k = 1 sweeps (`controllers/exhaustive.py`; rows in results/bench/fast/calibration.jsonl).

For a ranking r and a budget N, over the instances some single token solves
(S(x) non-empty, the k = 1-solvable ones):

    recall_r(N) = #{x solvable : min_{t in S(x)} rank_r(t) < N} / #{x solvable}

the share of them that scoring r's top-N tokens would solve (ranks 0-based). A
sweep whose fp32 shortlist hit its cap may have missed a better-ranked solver,
so its min rank is an upper bound and recall_r(N) a lower bound (`n_near_capped`).
"""
from __future__ import annotations

import math

import numpy as np

CAL_NS = (32, 64, 128, 256, 512, 1024, 2048, 4096, 8192)   # N values the recall is reported at
N_PLANNED = 100   # exhaustive sweeps the calibration aims at (the report says how many are done)


def recall_within_top_n(rows: list[dict], ns=CAL_NS) -> dict[str, dict[str, float]]:
    """{ranking: {str(N): recall_r(N)}} for every ranking the rows record; nan where nothing is solvable."""
    solvable = [r for r in rows if r["solving"]]
    names = rows[0]["min_rank"] if rows else {}
    return {name: {str(n): (float(np.mean([r["min_rank"][name] < n for r in solvable])) if solvable else math.nan)
                   for n in ns} for name in names}


def calibration_summary(rows: list[dict], near_cap: int, ns=CAL_NS, n_planned: int = N_PLANNED) -> dict:
    """The calibration's numbers (results/bench/fast.json `calibration`) from its sweep rows."""
    solvable = [r for r in rows if r["solving"]]
    secs = [r["seconds"] for r in rows]
    return {"n": len(rows), "n_k1_solvable": len(solvable), "recall_within_top_n": recall_within_top_n(rows, ns),
            # paper A's greedy checks only its lowest-loss token: how often that one solves
            "authors_check_share_of_solvable": (float(np.mean([r["authors_check_solves"] for r in solvable]))
                                                if solvable else math.nan),
            "lengths": sorted({r["meta"]["length"] for r in rows}),
            "sweep_seconds_median": float(np.median(secs)) if secs else math.nan,
            "n_planned": n_planned,
            # a capped shortlist may leave a better-ranked solver unseen: min rank is an upper bound
            "n_near_capped": sum(r["n_near_checked"] >= near_cap for r in rows)}
