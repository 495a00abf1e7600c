"""The numbers of `benchmarks/bench_fast.py report`: the fast search against the authors' budget and
the previous default, from rows on disk (results/bench/fast.json, rendered into README by report/).

Sections (each only when its rows exist):

    head2head        paper-budget rows paired with fast rows of the same content (`headtohead`):
                     share with k_fast <= k_paper, overall and by family; median evaluations and
                     seconds (seconds only within one device); the misses explained
    vs_default       the paper-scale fast run vs today's default search on the same true-token
                     ids: eps(k) with Wilson intervals, medians, share k_fast <= k_default
    calibration      recall of the k = 1 gradient rankings (`calibration`)
    paper_scale_run  every fast row of the paper-scale run: median evaluations and seconds
    targets          the issue's: median <= 5,000 evaluations and <= 60 s per searched
                     instance; k_fast <= k_paper on >= 90% of shared instances
"""
from __future__ import annotations

import json
import math
import random
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..models import DEFAULT_MODEL
from ..results import REPO_ROOT, device_name, versions
from . import headtohead as H
from .calibration import calibration_summary
from .instances import Instance, sample_wikitext_instances, special_prefix
from .stats import k0_census, summarize

TARGETS = {"evals_median": 5000, "seconds_median": 60, "share_k_le_paper": 0.9}


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def latest_rows(path: Path) -> list[dict]:
    """The rows of a JSONL log made under its newest config (the last row's hash), the last one per id."""
    rows = _jsonl(path)
    if not rows:
        return []
    last = rows[-1]["config_hash"]
    return list({r["id"]: r for r in rows if r["config_hash"] == last}.values())


def med(xs) -> float:
    return float(np.median(xs)) if len(xs) else math.nan


@dataclass(frozen=True)
class BenchRows:
    """Where the benchmark's rows live under a repository root (a test gives a fixture's)."""
    root: Path = REPO_ROOT

    @property
    def out(self) -> Path:               # fast.json and the figures
        return Path(self.root) / "results" / "bench"

    @property
    def bench(self) -> Path:             # this benchmark's own rows, one JSONL per part
        return self.out / "fast"

    def _paper(self, method: str) -> Path:
        return Path(self.root) / "results/paper/instances/reachability" / method

    def paper_budget(self) -> list[dict]:
        """The rows searched at the authors' budget (method: paper), every family."""
        return [r for f in sorted(self._paper("paper").glob("*.jsonl")) for r in _jsonl(f)]

    def paper_run(self, family: str = "true_token") -> list[dict]:
        """Rows of the paper-scale fast run, one family (one per finished instance)."""
        return _jsonl(self._paper("fast") / f"{family}.jsonl")

    def paper_run_all(self) -> list[dict]:
        """Every row of the paper-scale fast run (every log in its folder)."""
        return [r for f in sorted(self._paper("fast").glob("*.jsonl")) for r in _jsonl(f)]

    def part(self, name: str) -> list[dict]:
        """Rows of one part; when a part's config changed, only the newest config's rows count (last per id)."""
        return latest_rows(self.bench / f"{name}.jsonl")

    def gpu_record(self) -> tuple[dict[tuple, str], dict]:
        """The paper-budget rows made on a lent GPU (gpu_paper_rows.json): ((id, config hash) -> device,
        throughput of its calls, each call's wall = its slowest shard's); ({}, {}) without such rows."""
        p = self.bench / "gpu_paper_rows.json"
        if not p.exists():
            return {}, {}
        g = json.loads(p.read_text())
        calls, device = g["calls"], " / ".join(sorted({c["device"] for c in g["calls"]}))
        rows, wall = sum(c["n_rows"] for c in calls), sum(max(c["shard_wall_s"]) for c in calls)
        return ({tuple(r): device for r in g["rows"]},
                {"n_calls": len(calls), "rows": rows, "wall_s": wall, "s_per_instance": wall / rows, "device": device})

    def pairs(self, families) -> tuple[list[tuple[dict, dict]], dict]:
        """`headtohead.pair_rows` of the paper-budget rows, the head2head reruns and the run's `families`."""
        return H.pair_rows(self.paper_budget(), self.part("head2head"),
                           [r for fam in families for r in self.paper_run(fam)])


def searched_true_token(judge, tokenizer, text: str, lengths, n_per_len: int, n: int) -> list[Instance]:
    """The first `n` true-token instances (seed 0, then a fixed shuffle) that k = 0 does not solve."""
    insts = sample_wikitext_instances(tokenizer, text, lengths, n_per_len, seed=0)
    random.Random("bench-order").shuffle(insts)
    out, prefix = [], special_prefix(tokenizer)
    for x in insts:
        if k0_census(judge, [x], prefix_ids=prefix)["eps0"] == 1.0:       # y is not already the argmax
            out.append(x)
        if len(out) == n:
            break
    return out


def head2head_section(pairs, match: dict, on_gpu: dict, throughput: dict, recheck: dict) -> dict:
    """fast.json `head2head` from the pairs (`BenchRows.pairs`) and where their paper rows were made."""
    searched = [(p, f) for p, f in pairs if p["k"] != 0]
    dev = lambda p: on_gpu.get((p["id"], p["config_hash"]), "cpu")   # noqa: E731
    req = H.required
    fams = sorted({p["kind"] for p, _ in pairs})
    return {
        "n": len(pairs), "n_searched": len(searched), **match,
        "paper_rows_by_device": dict(Counter(dev(p) for p, _ in pairs)),
        "share_by_family": {fam: {"n": sum(p["kind"] == fam for p, _ in pairs),
                                  "share_k_fast_le_paper": H.share_no_longer([(p, f) for p, f in pairs if p["kind"] == fam])}
                            for fam in fams},
        "k_paper": [p["k"] for p, _ in pairs], "k_fast": [f["k"] for _, f in pairs],
        "share_k_fast_le_paper": H.share_no_longer(pairs),
        "n_k_fast_lt_paper": int(sum(req(f["k"]) < req(p["k"]) for p, f in pairs)),
        "n_k_fast_gt_paper": int(sum(req(f["k"]) > req(p["k"]) for p, f in pairs)),
        "evals_paper_median": med([H.evals(p) for p, _ in searched]),
        "evals_fast_median": med([H.evals(f) for _, f in searched]),
        # seconds are only comparable on one device: the authors' budget's CPU rows here, its GPU rows apart
        "seconds_paper_median": med([p["seconds"] for p, _ in searched if dev(p) == "cpu"]),
        "n_searched_paper_cpu": sum(dev(p) == "cpu" for p, _ in searched),
        "seconds_paper_median_gpu": med([p["seconds"] for p, _ in searched if dev(p) != "cpu"]),
        "gpu_shards": sorted({p.get("shards") for p, _ in searched if dev(p) != "cpu"}),
        "gpu_throughput": throughput,
        "recheck": recheck,   # the run's rows stand in for reruns: how many a rerun reproduced
        "seconds_fast_median": med([f["seconds"] for _, f in searched]),
        "misses": H.explain_misses(pairs, TARGETS["share_k_le_paper"])}


def vs_default_section(fast_rows: list[dict], default_rows: list[dict]) -> dict | None:
    """fast.json `vs_default`: the instances (by id) both searches finished; None when there are none."""
    fr, dr = {r["id"]: r for r in fast_rows}, {r["id"]: r for r in default_rows}
    both = sorted(set(fr) & set(dr))
    if not both:
        return None
    F, D = [fr[i] for i in both], [dr[i] for i in both]
    curve = lambda rows: {k: summarize(rows)[k] for k in ("n", "eps", "ci95")}   # noqa: E731
    return {"n": len(both), "fast": curve(F), "default": curve(D),
            "evals_median": {"fast": med([H.evals(r) for r in F]), "default": med([H.evals(r) for r in D])},
            "seconds_median": {"fast": med([r["seconds"] for r in F]), "default": med([r["seconds"] for r in D])},
            "k_fast_le_default": float(np.mean([H.required(f["k"]) <= H.required(d["k"]) for f, d in zip(F, D)])),
            "threads": sorted({r.get("threads") for r in F + D}),
            "load_avg_mean": float(np.mean([r["load_avg_1min"] for r in F + D]))}


def paper_scale_section(run: list[dict]) -> dict | None:
    """fast.json `paper_scale_run`: every fast row of the paper-scale run; None when none needed a search."""
    searched = [r for r in run if r["k"] != 0]
    if not searched:
        return None
    return {"n": len(run), "n_searched": len(searched),
            "evals_median": med([H.evals(r) for r in searched]),
            "evals_mean": float(np.mean([H.evals(r) for r in searched])),
            "seconds_median": med([r["seconds"] for r in searched]),
            "threads": sorted({r.get("threads") for r in run}),
            "load_avg_mean": float(np.mean([r["load_avg_1min"] for r in run]))}


def targets(paper_scale: dict, head2head: dict | None) -> dict:
    """The issue's targets, met or not (k: None without head-to-head pairs)."""
    return {"evals_median_le_5000": paper_scale["evals_median"] <= TARGETS["evals_median"],
            "seconds_median_le_60": paper_scale["seconds_median"] <= TARGETS["seconds_median"],
            "k_le_paper_on_90pct": (head2head.get("share_k_fast_le_paper", 0) >= TARGETS["share_k_le_paper"])
                                   if head2head else None}


def bench_meta(rows: BenchRows) -> dict:
    """fast.json `meta`: this machine, the versions (git rev included), the model, where the rows are."""
    return {"device": device_name("cpu"), "versions": versions(), "model": DEFAULT_MODEL,
            "rows": str(rows.bench.relative_to(rows.root))}


@dataclass
class FastBench:
    numbers: dict                       # results/bench/fast.json
    lines: list[str]                    # the printed summary
    pairs: list[tuple[dict, dict]]      # (paper row, fast row), for the head-to-head figure


def report(rows: BenchRows, families, near_cap: int, meta: dict | None = None) -> FastBench:
    """Every section from the rows under `rows.root` (`families`: the run's, in the stage's order)."""
    out = {"meta": meta if meta is not None else bench_meta(rows)}
    pairs, match = rows.pairs(families)
    if pairs:
        on_gpu, throughput = rows.gpu_record()
        out["head2head"] = head2head_section(pairs, match, on_gpu, throughput,
                                             H.recheck_result(pairs, rows.part("recheck")))
    if (v := vs_default_section(rows.paper_run(), rows.part("vs_default_default"))) is not None:
        out["vs_default"] = v
    if cal := rows.part("calibration"):
        out["calibration"] = calibration_summary(cal, near_cap)
    if (run := paper_scale_section(rows.paper_run_all())) is not None:
        out["paper_scale_run"] = run
        out["targets"] = targets(run, out.get("head2head"))
    return FastBench(out, summary_lines(out, near_cap), pairs)


def summary_lines(out: dict, near_cap: int) -> list[str]:
    """The numbers of `out` (`report`) in words, one line per section, as the script prints them."""
    lines = []
    if o := out.get("head2head"):
        lines.append(f"head to head, {o['n']} instances with a paper-budget row ({o['n_searched']} searched; paper rows "
                     f"by device {o['paper_rows_by_device']}; fast rows {o['fast_source']}; {len(o['unmatched'])} "
                     f"without a fast row of the same content): "
                     f"k_fast <= k_paper on {o['share_k_fast_le_paper']:.0%} (lower on {o['n_k_fast_lt_paper']}, "
                     f"higher on {o['n_k_fast_gt_paper']}; by family "
                     + ", ".join(f"{k} {v['share_k_fast_le_paper']:.0%} of {v['n']}" for k, v in o["share_by_family"].items())
                     + f"); median evaluations {o['evals_paper_median']:.0f} -> "
                     f"{o['evals_fast_median']:.0f} ({o['evals_paper_median'] / o['evals_fast_median']:.0f}x fewer); "
                     f"median seconds {o['seconds_paper_median']:.0f} (authors' budget, CPU, {o['n_searched_paper_cpu']}) "
                     f"-> {o['seconds_fast_median']:.1f} (fast, CPU); authors' budget on the GPU "
                     f"{o['seconds_paper_median_gpu']:.0f} s with {o['gpu_shards']} processes sharing it")
    if o := out.get("vs_default"):
        lines.append(f"fast (paper-scale run) vs default search, {o['n']} true-token instances k=0 does not solve: eps(10) "
                     f"{o['fast']['eps']['10']:.3f} vs {o['default']['eps']['10']:.3f}, eps(4) {o['fast']['eps']['4']:.3f} "
                     f"vs {o['default']['eps']['4']:.3f}; k_fast <= k_default on {o['k_fast_le_default']:.0%}; median "
                     f"evaluations {o['evals_median']['fast']:.0f} vs {o['evals_median']['default']:.0f}; median seconds "
                     f"{o['seconds_median']['fast']:.1f} vs {o['seconds_median']['default']:.1f}")
    if o := out.get("calibration"):
        rec = o["recall_within_top_n"]
        lines.append(f"calibration, {o['n']} of {o['n_planned']} planned exhaustive k=1 sweeps (|x0| in {o['lengths']}; "
                     f"{o['n_near_capped']} hit the {near_cap}-candidate fp32 shortlist cap), {o['n_k1_solvable']} "
                     f"k=1-solvable: found within the gradient top-256 (ce at y) "
                     f"{rec['ce_at_y']['256']:.2f}, top-1024 {rec['ce_at_y']['1024']:.2f}; the authors' lowest-loss "
                     f"check solves {o['authors_check_share_of_solvable']:.2f} of them")
    if o := out.get("paper_scale_run"):
        lines.append(f"paper-scale run: {o['n']} instances, {o['n_searched']} searched (k > 0), median {o['evals_median']:.0f} "
                     f"evaluations (mean {o['evals_mean']:.0f}), median {o['seconds_median']:.1f} s "
                     f"(threads {o['threads']}, load {o['load_avg_mean']:.1f})")
        lines.append("targets: " + json.dumps(out["targets"]))
    return lines
