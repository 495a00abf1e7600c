"""Paper A's statistics over finished rows: k-epsilon curves, the k = 0 census,
correlations, speed, the prompt-token histogram and the budget label."""
from __future__ import annotations

import math

import numpy as np
import torch

from ..metrics import k_epsilon_curve, pearson, wilson_ci
from ..papers import K_GRID
from .instances import Instance


def summarize(rows: list[dict], ks=K_GRID, seed: int = 0) -> dict:
    """n, eps(k), eps by |x0| (with their n), Wilson 95% intervals."""
    req = [r["k"] for r in rows]
    by_len: dict[str, list] = {}
    for r in rows:
        by_len.setdefault(str(r["meta"]["length"]), []).append(r["k"])
    return {"n": len(rows),
            "eps": {str(k): v for k, v in k_epsilon_curve(req, ks).items()},
            "eps_by_len": {L: {str(k): v for k, v in k_epsilon_curve(v_, ks).items()}
                           for L, v_ in sorted(by_len.items(), key=lambda kv: int(kv[0]))},
            "n_by_len": {L: len(v_) for L, v_ in sorted(by_len.items(), key=lambda kv: int(kv[0]))},
            "ci95": {str(k): v for k, v in wilson_ci(req, ks).items()}, "interval": "wilson"}


@torch.inference_mode()
def k0_census(model, instances: list[Instance], batch_size: int = 256, seed: int = 0, prefix_ids=()) -> dict:
    """k = 0 for *every* planned instance: is y already the unique argmax of P(. | x0)?

    Scored as the searches score k = 0: P(. | [special prefix] + x0), `prefix_ids`
    the tokenizer's special prefix (`special_prefix`: [] for SmolLM2, [<bos>] for
    Gemma, whose model is out of distribution without its <bos>).

    One forward per distinct x0 (the fp32 judge, last-position logits), no
    search, so even a run cut after a handful of searches gives eps(0) over the
    whole planned N; on a finished run it equals the searched eps(0) (tested).
    x0 of one length go through together: (B, |prefix| + |x0|) -> (B, V).
    -> {"n", "eps0", "ci95", "mean_base_loss"}
    """
    # one forward per *distinct* x0 (top-75 and uniform-rank share theirs), x0 of one length together
    x0s = sorted({tuple(x.x0_ids) for x in instances}, key=len)
    prefix = [int(t) for t in prefix_ids]
    logits_of: dict[tuple, torch.Tensor] = {}
    for L in sorted({len(x) for x in x0s}):
        same = [x for x in x0s if len(x) == L]
        for i in range(0, len(same), batch_size):
            ids = torch.tensor([prefix + list(x) for x in same[i:i + batch_size]], device=model.device)
            out = model(input_ids=ids, logits_to_keep=1).logits[:, -1].float().cpu()   # (B, V)
            logits_of.update(zip(same[i:i + batch_size], out))
    req, losses = [], []
    for x in instances:
        z = logits_of[tuple(x.x0_ids)]
        others = z.clone()
        others[x.target_id] = float("-inf")
        req.append(0 if z[x.target_id] > others.max() else None)        # a tie is not a success
        losses.append(float(-torch.log_softmax(z, -1)[x.target_id]))
    return {"n": len(req), "eps0": k_epsilon_curve(req, [0])[0], "ci95": wilson_ci(req, [0])[0],
            "mean_base_loss": float(np.mean(losses)) if losses else math.nan}


def correlations(rows: list[dict]) -> dict:
    """Pearson r of required k with base loss and with base rank (solved instances)."""
    solved = [r for r in rows if r["k"] is not None]
    ks = [r["k"] for r in solved]
    return {"loss_k": pearson([r["base_loss"] for r in solved], ks),
            "rank_k": pearson([r["base_rank"] for r in solved], ks), "n_solved": len(solved)}


def speed_stats(rows: list[dict]) -> dict:
    """Seconds per back-off instance and candidates scored per second, by method."""
    secs = np.array([r["seconds"] for r in rows], dtype=float)
    out = {"backoff_median_s": float(np.median(secs)) if secs.size else math.nan,
           "backoff_p90_s": float(np.quantile(secs, 0.9)) if secs.size else math.nan}
    loads = [r["load_avg_1min"] for r in rows if r.get("load_avg_1min") is not None]
    if loads:
        out["load_avg_mean"] = float(np.mean(loads))
    # n parallel searches on one device: each instance's seconds are ~n times its solo time
    out["parallel_searches"] = max((r.get("shards", 1) for r in rows), default=1)
    methods = sorted({m for r in rows for m in r["n_candidates"]})
    for m in methods:
        n = sum(r["n_candidates"].get(m, 0) for r in rows)
        t = sum(r["seconds_by_method"].get(m, 0.0) for r in rows)
        out[f"{m}_candidates_per_s"] = n / t if t > 0 else math.nan
    evals = np.array([sum(r["n_candidates"].values()) for r in rows if r["k"] != 0], dtype=float)
    out["evals_per_searched_median"] = float(np.median(evals)) if evals.size else math.nan
    out["evals_per_searched_mean"] = float(np.mean(evals)) if evals.size else math.nan
    secs_s = np.array([r["seconds"] for r in rows if r["k"] != 0], dtype=float)
    out["seconds_per_searched_median"] = float(np.median(secs_s)) if secs_s.size else math.nan
    out["n_searched"] = int(evals.size)
    return out


def against_record(here: dict, record: dict, legacy_dtype: str = "bfloat16") -> dict:
    """Rows searched again (`here`, id -> row) against the rows of record of the same ids (`record`).

    Over the ids in both: seconds per searched instance (k > 0 in both) here and there, and the median of
    the per-instance ratio t_here / t_record; k the same, lower or higher here (a miss counts as longer than
    any k); the search dtypes on each side (`legacy_dtype` for rows that do not say).
    """
    both = [i for i in here if i in record]
    searched = [i for i in both if here[i]["k"] != 0 and record[i]["k"] != 0]
    t = np.array([here[i]["seconds"] for i in searched], dtype=float)
    t_rec = np.array([record[i]["seconds"] for i in searched], dtype=float)
    k = lambda r: math.inf if r["k"] is None else r["k"]           # noqa: E731
    pairs = [(k(here[i]), k(record[i])) for i in both]
    median = lambda x: float(np.median(x)) if x.size else None   # noqa: E731
    return {"n": len(both), "n_searched": len(searched), "seconds_per_searched_median": median(t),
            "record_seconds_per_searched_median": median(t_rec),
            "ratio_to_record_median": median(t / t_rec) if t.size else None,
            "k_same": sum(a == b for a, b in pairs), "k_lower": sum(a < b for a, b in pairs),
            "k_higher": sum(a > b for a, b in pairs),
            "search_dtype": sorted({here[i].get("search_dtype", legacy_dtype) for i in both}),
            "record_search_dtype": sorted({record[i].get("search_dtype", legacy_dtype) for i in both})}


def token_histogram(rows: list[dict], tokenizer, top: int = 40) -> list[tuple[str, int]]:
    """The `top` most frequent tokens in successful prompts (k >= 1): [(text, count)]."""
    counts: dict[int, int] = {}
    for r in rows:
        if r["k"]:
            for t in r["ids"]:
                counts[t] = counts.get(t, 0) + 1
    best = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:top]
    return [(tokenizer.decode([t]), c) for t, c in best]


def budget_label(cfg) -> str:
    """Short budget string for figure stamps, e.g. 'greedy k<=3 (all vocab) | GCG 768x128x34': each
    search config writes its own (`FastConfig.budget_label`, `BackoffConfig.budget_label`)."""
    return cfg.budget_label()
