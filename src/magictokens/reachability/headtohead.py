"""Two searches on the same instances, row by row: which rows pair, and where one needs a longer prompt.

Rows are the runner's JSONL rows (`runner.run_families`). A pair is (paper row, fast
row): the authors' budget (method: paper) and the fast search on one instance. The
question per pair is k_fast <= k_paper, with an unsolved row (k = None) counted as
longer than any k (`required`). Pure functions on rows: the files are read in
`fastbench.py`.
"""
from __future__ import annotations

import math
from collections import Counter

import numpy as np

from ..metrics import wilson_interval
from .instances import Instance


def content_key(r: dict) -> tuple:
    """What makes two rows the same instance: ids alone repeat across instance sets (an old row's
    `true_token-L8-84` has another x0 than today's), so the x0 and target are part of the key."""
    return r["id"], tuple(r["x0_ids"]), r["target_id"]


def instance_of(r: dict) -> Instance:
    """The instance a row was searched on."""
    return Instance(r["id"], r["x0_ids"], r["target_id"], r["kind"], r["meta"])


def required(k) -> float:
    """A row's required k, unsolved (None) counted as longer than any k."""
    return math.inf if k is None else k


def evals(r: dict) -> int:
    """Candidate prompts a row's search scored, all methods together (one forward each)."""
    return int(sum(r["n_candidates"].values()))


def pair_rows(paper_rows: list[dict], reruns: list[dict], run_rows: list[dict]) -> tuple[list[tuple[dict, dict]], dict]:
    """(paper-budget row, fast row) for every paper-budget row with a fast row of the same content.

    The fast side is a head2head rerun of that content (`reruns`), else the paper-scale
    run's own row of it (`run_rows`), the latter only if made under a config the reruns
    used (no reruns: any). Pairs keep the order of `paper_rows`.
    -> (pairs, {"fast_source": {source: count}, "unmatched": ids of paper rows without a fast row})
    """
    fast_hash = {r["config_hash"] for r in reruns}
    run = {content_key(r): r for r in run_rows}
    rerun = {content_key(r): r for r in reruns}
    pairs, source, unmatched = [], Counter(), []
    for p in paper_rows:
        key = content_key(p)
        if key in rerun:
            pairs.append((p, rerun[key]))
            source["head2head rerun"] += 1
        elif key in run and (not fast_hash or run[key]["config_hash"] in fast_hash):
            pairs.append((p, run[key]))
            source["paper-scale run row"] += 1
        else:
            unmatched.append(p["id"])
    return pairs, {"fast_source": dict(source), "unmatched": unmatched}


def unpaired_instances(paper_rows: list[dict], run_rows: list[dict]) -> list[Instance]:
    """The paper-budget instances the paper-scale run holds no row of (same content): what `head2head` searches."""
    have = {content_key(r) for r in run_rows}
    return [instance_of(r) for r in paper_rows if content_key(r) not in have]


def same_search(a: dict, b: dict) -> bool:
    """Two rows of one instance found the same thing with the same effort (timings aside)."""
    return a["k"] == b["k"] and a["ids"] == b["ids"] and a["n_candidates"] == b["n_candidates"]


def recheck_instances(pairs: list[tuple[dict, dict]], reruns: list[dict], n: int) -> list[Instance]:
    """The first `n` searched true-token pairs whose fast side is a paper-scale run row (not a rerun):
    a run row stands in for a rerun only if the search is deterministic, so `recheck` searches these again."""
    rerun = {content_key(r) for r in reruns}
    rows = [f for p, f in pairs if p["kind"] == "true_token" and p["k"] != 0 and content_key(f) not in rerun][:n]
    return [instance_of(r) for r in rows]


def recheck_result(pairs: list[tuple[dict, dict]], recheck_rows: list[dict]) -> dict:
    """How many `recheck` rows reproduced the fast row they searched again (`same_search`)."""
    fast = {content_key(f): f for _, f in pairs}
    again = [r for r in recheck_rows if content_key(r) in fast]
    return {"n": len(again), "identical": sum(same_search(fast[content_key(r)], r) for r in again)}


def share_no_longer(pairs: list[tuple[dict, dict]]) -> float:
    """Share of pairs with k_fast <= k_paper (unsolved = infinitely long)."""
    return float(np.mean([required(f["k"]) <= required(p["k"]) for p, f in pairs]))


def solving_stage(r: dict) -> str:
    """`"<method> k=<k>"` of the first successful trace step of a row (`"none"` if never solved)."""
    ok = [t for t in r["trace"] if t["success"]]
    return f"{ok[0]['method']} k={ok[0]['k']}" if ok else "none"


def evals_at_k(r: dict, k: int) -> int:
    """Candidate evaluations a row spent at prompt length k (0 if its search never got there)."""
    return int(sum(t["n_candidates"] for t in r["trace"] if t["k"] == k))


def explain_misses(pairs: list[tuple[dict, dict]], target: float = 0.9) -> dict:
    """Why `k_fast <= k_paper` falls short of `target`.

    higher = the pairs with k_fast > k_paper. For each: the authors' solving stage
    and what each search spent at k_paper. n_short_of_target = ceil(target * n) -
    #{k_fast <= k_paper}, at least 0: how many more pairs would have to agree.
    """
    higher = [(p, f) for p, f in pairs if required(f["k"]) > required(p["k"])]
    n_le = sum(required(f["k"]) <= required(p["k"]) for p, f in pairs)
    by_stage = Counter(solving_stage(p) for p, _ in higher)
    # 1e-9: target * n can land just above an integer in floats (0.55 * 100 = 55.00000000000001), and ceil
    # must give that integer
    return {"n_short_of_target": max(0, math.ceil(target * len(pairs) - 1e-9) - n_le),
            "higher_by_paper_stage": dict(sorted(by_stage.items())),
            "higher": [{"id": f["id"], "k_paper": p["k"], "k_fast": f["k"], "paper_stage": solving_stage(p),
                        "evals_at_k_paper": {"paper": evals_at_k(p, p["k"]), "fast": evals_at_k(f, p["k"])}}
                       for p, f in higher]}


def k_cells(pairs: list[tuple[dict, dict]]) -> tuple[list, np.ndarray]:
    """Pairs counted per (k_fast, k_paper) cell: many pairs share a cell, so a scatter would hide them.

    -> (levels: the k values seen, ascending, then None = unsolved;
        cells: (L, L) ints, cells[i, j] = #{k_fast = levels[i], k_paper = levels[j]})
    """
    levels = sorted({k for p, f in pairs for k in (p["k"], f["k"]) if k is not None}) + [None]
    idx = {k: i for i, k in enumerate(levels)}
    cells = np.zeros((len(levels), len(levels)), dtype=int)
    for p, f in pairs:
        cells[idx[f["k"]], idx[p["k"]]] += 1
    return levels, cells


def replaced(pairs: list[tuple[dict, dict]], rows: list[dict]) -> list[tuple[dict, dict]]:
    """`pairs` with each fast row swapped for the row of the same content in `rows` (kept where none)."""
    by = {content_key(r): r for r in rows}
    return [(p, by.get(content_key(f), f)) for p, f in pairs]


def variant_summary(pairs: list[tuple[dict, dict]], target: float = 0.9) -> dict:
    """One search variant against the authors' budget on the pairs: how often it is no longer, and its cost.

    share k <= k_paper with its Wilson interval; evaluations per searched instance (pairs whose paper
    k != 0, as in fast.json) in total and for the `below` step alone; the misses by the authors' stage.
    """
    searched = [f for p, f in pairs if p["k"] != 0]
    n_le = int(sum(required(f["k"]) <= required(p["k"]) for p, f in pairs))
    below = [int(f["n_candidates"].get("below", 0)) for f in searched]
    return {"n": len(pairs), "n_searched": len(searched), "n_le": n_le,
            "share_k_le_paper": n_le / len(pairs) if pairs else math.nan,
            "share_wilson": wilson_interval(n_le, len(pairs)) if pairs else [math.nan, math.nan],
            "n_lt": int(sum(required(f["k"]) < required(p["k"]) for p, f in pairs)),
            "n_gt": int(sum(required(f["k"]) > required(p["k"]) for p, f in pairs)),
            "evals_median": float(np.median([evals(f) for f in searched])) if searched else math.nan,
            "evals_mean": float(np.mean([evals(f) for f in searched])) if searched else math.nan,
            "evals_below_median": float(np.median(below)) if below else math.nan,
            "evals_below_max": max(below, default=0),
            "misses": explain_misses(pairs, target)["higher_by_paper_stage"],
            "n_short_of_target": explain_misses(pairs, target)["n_short_of_target"]}
