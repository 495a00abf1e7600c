"""Stage `reachability` (paper A, figures 1-5): params in, `ReachabilityResult` out.

    res = run("default")                       # search (resumable) + aggregate
    res = ReachabilityResult.load(results_dir("paper"))   # the committed result, no model

`run` builds the three instance families, runs (or resumes) their back-off
searches, and aggregates the finished rows: k-epsilon curves with Wilson
intervals per family and per |x0|, the k = 0 census over every planned
instance, correlations, the fp32 verifier's counts, speed, the prompt-token
histogram and one point per instance for the scatter figures. The result is
the schema of `reachability.json` + `speed.json` + `reachability_points.csv`:
`save` writes them, `load` reads them back (typed, validated), so notebook
01 redraws every figure from `results/` alone. `search` runs the searches
only (time-limited GPU calls, the long CPU run).
"""
from __future__ import annotations

import csv
import json
import resource
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .. import headline
from ..config import stage_params
from ..data import AUTHORS_X0, data_path, read_wikitext
from ..distributed import merge, world
from ..errors import MagicTokensError
from ..models import dtype_of, fingerprint, load_model, model_note, search_pair_of, verify_dtype_of
from ..papers import PAPER_A
from ..reachability import (ReachabilityConfig, budget_label, build_instances, correlations, k0_census, log_dir,
                            method_config, resume_header, run_families, special_prefix, speed_stats, summarize,
                            token_histogram)
from ..results import (as_result, read_stage_json, recorded_search_dtype, results_dir, resume_dtype, run_meta,
                       write_json)

FAMILIES = ("true_token", "top75", "uniform_rank")
SUCCESS_RULE = ("Success: any scored candidate whose fp32 argmax is y (ties fail); the authors check only "
                "greedy's lowest-loss token and GCG's final prompt.")
POINT_FIELDS = ("family", "id", "length", "rank", "base_loss", "base_rank", "k")


@dataclass
class FamilySummary:
    """eps(k) of one family: eps[str(k)] = share of instances not reached with <= k tokens."""
    n: int
    eps: dict[str, float]
    ci95: dict[str, tuple[float, float]]               # Wilson 95%
    eps_by_len: dict[str, dict[str, float]] = field(default_factory=dict)
    n_by_len: dict[str, int] = field(default_factory=dict)
    interval: str = "wilson"


@dataclass
class Census:
    """k = 0 over every planned instance (no search: one forward per x0)."""
    n: int
    eps0: float
    ci95: tuple[float, float]
    mean_base_loss: float


@dataclass
class Point:
    """One finished instance, as the scatter figures draw it (k None = unsolved)."""
    family: str
    id: str
    length: int
    rank: int | None          # top-75 / uniform-rank target rank; None for true-token
    base_loss: float
    base_rank: int
    k: int | None


@dataclass
class ReachabilityResult:
    meta: dict[str, Any]                               # model, device, seed, scale, versions, method, budget
    true_token: FamilySummary
    top75: FamilySummary
    uniform_rank: FamilySummary
    correlations: dict[str, Any]                       # true-token: Pearson r(loss, k), r(rank, k), n_solved
    correlations_by_family: dict[str, dict[str, Any]]
    n_planned: dict[str, int]
    partial: bool                                      # the searches were cut before every planned instance
    k0_census: dict[str, Census]
    retokenizes: float | None                          # share of successful u + x0 that re-tokenize to themselves
    verify: dict[str, int]                             # fp32 verifier: checked, false_positive, unchecked_near
    paper: dict[str, Any]                              # PAPER_A, for the record
    histogram: list[tuple[str, int]]                   # fig 5: the most used prompt tokens
    speed: dict[str, Any] = field(default_factory=dict)          # -> speed.json
    points: list[Point] = field(default_factory=list)            # -> reachability_points.csv

    def family(self, name: str) -> FamilySummary:
        return getattr(self, name)

    def save(self, out_dir: str | Path) -> Path:
        out_dir = Path(out_dir)
        d = asdict(self)
        speed, points = d.pop("speed"), d.pop("points")
        write_json(out_dir / "reachability.json", d)
        write_json(out_dir / "speed.json", speed)
        with open(out_dir / "reachability_points.csv", "w", newline="") as f:
            w = csv.DictWriter(f, POINT_FIELDS)
            w.writeheader()
            w.writerows({k: ("" if p[k] is None else p[k]) for k in POINT_FIELDS} for p in points)
        return headline.write_saved(out_dir, "reachability")

    @classmethod
    def load(cls, out_dir: str | Path) -> ReachabilityResult:
        out_dir = Path(out_dir)
        d = read_stage_json(out_dir, "reachability")
        speed = out_dir / "speed.json"
        d["speed"] = json.loads(speed.read_text()) if speed.exists() else {}
        pts = out_dir / "reachability_points.csv"
        d["points"] = [{k: (None if v == "" else v) for k, v in row.items()}
                       for row in csv.DictReader(open(pts))] if pts.exists() else []
        return as_result(cls, d)

    def points_of(self, family: str) -> list[Point]:
        return [p for p in self.points if p.family == family]


def aggregate(rows: dict[str, list[dict]], census: dict[str, dict], planned: dict[str, int], meta: dict,
              hist: list[tuple[str, int]], seed: int = 0) -> ReachabilityResult:
    """Finished rows of each family -> the stage's result (no model needed but the histogram's decoder)."""
    summ = {name: summarize(rows[name], seed=seed) for name in FAMILIES}
    corr = {name: correlations(rows[name]) for name in FAMILIES}
    all_rows = [r for name in FAMILIES for r in rows[name]]
    solved = [r["retokenizes"] for r in all_rows if r["k"]]
    points = [Point(name, r["id"], r["meta"]["length"], r["meta"].get("rank"), r["base_loss"], r["base_rank"], r["k"])
              for name in FAMILIES for r in rows[name]]
    return ReachabilityResult(
        meta=meta, **{name: FamilySummary(**summ[name]) for name in FAMILIES},
        correlations=corr["true_token"], correlations_by_family=corr, n_planned=dict(planned),
        partial=len(all_rows) < sum(planned.values()), k0_census={k: Census(**v) for k, v in census.items()},
        retokenizes=float(np.mean(solved)) if solved else None,
        verify={key: int(sum(r.get("verify", {}).get(key, 0) for r in all_rows))
                for key in ("checked", "false_positive", "unchecked_near")},
        paper={k: (dict(v) if isinstance(v, dict) else v) for k, v in PAPER_A.items()},
        histogram=hist, points=points)


def _setup(scale: str, overrides: dict | None, out_root=None):
    """-> (params, config, search model, verify model or None, tokenizer, judge model).

    The search dtype: an explicit `search_dtype` wins; 'auto' keeps the dtype
    the run's finished rows were made in (a run of record resumed on other
    hardware stays one run), else the hardware's (`hardware.auto_dtype`).
    `P["search_dtype"]` is set to the dtype searched in.
    """
    P, cfg = stage_params(scale, "reachability", ReachabilityConfig, overrides)
    torch.manual_seed(P["seed"])
    judge, tok = load_model(P["model"], dtype=verify_dtype_of(P["verify_dtype"]), device=P["device"])
    header = resume_header(method_config(cfg), P["seed"], fingerprint(judge), special_prefix(tok))   # run_families
    logs = log_dir(results_dir(scale, out_root), cfg.method)
    recorded = recorded_search_dtype([logs / f"{name}.jsonl" for name in FAMILIES], [header])
    search_model, verify_model = search_pair_of(judge, resume_dtype(P["search_dtype"], recorded))
    P = {**P, "search_dtype": dtype_of(search_model), "verify_dtype": dtype_of(judge)}
    return P, cfg, search_model, verify_model, tok, judge


def _families(cfg, tok, judge, seed):
    return build_instances(cfg, tok, judge, seed, read_wikitext(),
                           data_path(AUTHORS_X0) if cfg.true_token.source == "authors_csv" else None)


def run(scale: str = "default", out_root=None, overrides: dict | None = None) -> ReachabilityResult:
    """Search (resuming finished rows) and aggregate; writes the result under results/<scale>/."""
    P, cfg, search_model, verify_model, tok, judge = _setup(scale, overrides, out_root)
    search_cfg = method_config(cfg)
    meta = run_meta(P["model"], judge.device, P["seed"], scale, search_dtype=P["search_dtype"],
                    verify_dtype=P["verify_dtype"], backoff=asdict(cfg.backoff), overrides=overrides or {},
                    method=cfg.method, search=asdict(search_cfg), budget=budget_label(search_cfg),
                    success_rule=SUCCESS_RULE, model_note=model_note(P["model"]), top_n=cfg.top75.top_n)
    out_dir = results_dir(scale, out_root)
    families = _families(cfg, tok, judge, P["seed"])
    # search_minutes cuts the searches short: the result then holds the finished instances only
    deadline = time.time() + 60 * cfg.search_minutes if cfg.search_minutes is not None else None
    rows = run_families(families, search_model, tok, search_cfg, log_dir(out_dir, cfg.method),
                        verify_model=verify_model, seed=P["seed"], deadline=deadline)
    # k = 0 needs no search: one forward per x0 gives eps(0) over *every* planned instance
    prefix = special_prefix(tok)    # [<bos>] for Gemma, [] for SmolLM2: scored before x0, as searched
    census = {name: k0_census(judge, insts, seed=P["seed"], prefix_ids=prefix) for name, insts in families.items()}
    all_rows = [r for name in FAMILIES for r in rows[name]]
    res = aggregate(rows, census, {name: len(v) for name, v in families.items()}, meta,
                    token_histogram(all_rows, tok, cfg.hist_top), seed=P["seed"])
    peak = (torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available()
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20)
    res.speed = {"device": meta["device"], "model": P["model"], **speed_stats(all_rows), "peak_mem_gb": peak,
                 "n_instances": len(all_rows), "meta": meta}
    if world()[0] != 0:   # under a launcher every process aggregated the merged rows; rank 0 writes them
        return res
    res.save(out_dir)
    return ReachabilityResult.load(out_dir)   # what the figures draw is exactly what results/ holds


def search(scale: str = "paper", out_root=None, overrides: dict | None = None, families=None,
           minutes: float | None = None, shard: tuple[int, int] | None = None) -> dict:
    """Run (or resume) the back-off searches of the stage without aggregating.

    For time-limited GPU calls and the long CPU run: instances land in the same
    resumable logs `run` reads, so a later `run` only aggregates and plots.
    -> {family: (finished, total)}
    """
    P, cfg, search_model, verify_model, tok, judge = _setup(scale, overrides, out_root)
    deadline = time.time() + 60 * minutes if minutes is not None else None
    fams = _families(cfg, tok, judge, P["seed"])
    unknown = set(families or []) - set(fams)
    if unknown:
        raise MagicTokensError(f"unknown famil{'y' if len(unknown) == 1 else 'ies'} {sorted(unknown)}: use {sorted(fams)}")
    logs = log_dir(results_dir(scale, out_root), cfg.method)
    rows = run_families({name: fams[name] for name in families or fams}, search_model, tok, method_config(cfg), logs,
                        verify_model=verify_model, seed=P["seed"], deadline=deadline, shard=shard)
    return {name: (len(r), len(fams[name])) for name, r in rows.items()}


def merge_shards(scale: str = "paper", out_root=None) -> dict:
    """Merge every shard log under results/<scale>/instances/reachability/ (run when no shard is still
    writing). -> {"<method>/<family>": rows appended}"""
    root = results_dir(scale, out_root) / "instances" / "reachability"
    out = {}
    for d in sorted(p for p in root.glob("*") if p.is_dir()):
        for fam in sorted({s.name.split(".shard")[0] for s in d.glob("*.shard*of*.jsonl")}):
            out[f"{d.name}/{fam}"] = merge(d / f"{fam}.jsonl")
    return out
