"""Stage `mode_reachability` (beyond both papers): params in, `ModeReachStageResult` out.

    res = run("default")                                      # needs the cotraining stage's models
    res = ModeReachStageResult.load(results_dir("paper"))     # the committed result, no model

Paper A's search (fast or back-off) against paper B's co-trained model: for
each placement of the control (in the user turn, before or after the
request; or in the system prompt before mode A's token), each transition
(e.g. positive->negative) and each held-out harmful prompt, the shortest
discovered prompt that makes the target mode's opening token the argmax
without the target's magic token; the same against the single-mode baselines
(none->negative), the random-magic-token switch rate on the same prompts,
and per placement and transition the question in words (`question`). Rows
are resumable under `instances/mode_reachability/<placement>/<search>/`.

Under `accelerate launch` each process searches every N-th prompt of each
transition (its own shard log, merged by rank 0 after each transition) and
generates its share of the batches of the mode checks and the random-token
baseline; every process then holds the whole result, and rank 0 writes it.
"""
from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from .. import headline
from .. import mode_reachability as MR
from ..config import REPO_ROOT, build, stage_params
from ..controllers.backoff import BackoffConfig
from ..cotraining import CoTrainingConfig, magic_tokens_of
from ..cotraining.config import data_seed
from ..cotraining.judge import make_judge
from ..distributed import world
from ..models import dtype_of, search_pair_of, torch_threads, weights_digest
from ..reachability import budget_label
from ..results import (as_result, read_stage_json, recorded_search_dtype, results_dir, resume_dtype, run_meta,
                       write_json)

PLACEMENT_WORDS = MR.PLACEMENT_WORDS   # placement -> where u goes, in words (figure titles)
Summary = dict[str, Any]   # summarize_transition: n, n_prompts, eps, ci95, reached, and the same *_judged


@dataclass
class ModeReachStageResult:
    meta: dict[str, Any]
    magic_tokens_length: int
    transitions: dict[str, dict[str, Summary]]   # co-trained model: placement -> transition -> summary
    baselines: dict[str, dict[str, Summary]]     # placement -> baseline -> the none->negative summary
    random_token_switch_rate: float
    random_token: dict[str, Any]                 # rate, successes, n, ci95 (judged negative), by_mode
    target_mode_holds: dict[str, float]          # share of prompts where the real magic token gives its mode
    magic_token_space: int = 0                   # |alphabet| ** magic_tokens_length
    question: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)   # placement -> label -> answer
    partial: bool = False                        # cut by search_minutes: some transition searched fewer prompts

    def save(self, out_dir: str | Path) -> Path:
        write_json(Path(out_dir) / "mode_reachability.json", asdict(self))
        return headline.write_saved(out_dir, "mode_reachability")

    @classmethod
    def load(cls, out_dir: str | Path) -> ModeReachStageResult:
        d = read_stage_json(out_dir, "mode_reachability")
        if "budget" not in d["meta"] and "backoff" in d["meta"]:   # written before the label was kept
            d["meta"]["budget"] = budget_label(build(BackoffConfig, d["meta"]["backoff"], "backoff"))
        if "search" not in d["meta"]:
            d = upgrade_single_placement(d)
        return as_result(cls, d)


def upgrade_single_placement(d: dict) -> dict:
    """A result written before placements (u in the system prompt, back-off search) in today's schema.

    Counts come back from eps and n: reached[k] = round((1 - eps[k]) * n).
    """
    def summary(s):
        out = dict(s)
        for suffix in ("", "_judged"):
            reached = {k: round((1 - e) * s["n"]) for k, e in s["eps" + suffix].items()}
            out["reached" + suffix] = reached
            out["ci95" + suffix] = {k: MR.share(s["n"] - r, s["n"])["ci95"] for k, r in reached.items()}   # of eps
        return out

    d = dict(d, meta={**d["meta"], "placements": ["system"], "search": "backoff"})
    d["transitions"] = {"system": {t: summary(s) for t, s in d["transitions"].items()}}
    d["baselines"] = {"system": {b: summary(s) for b, s in d["baselines"].items()}}
    r = d["random_token"]
    d["random_token"] = {**r, "successes": round(r["rate"] * r["n"]), "target": "negative",
                         "ci95": MR.share(round(r["rate"] * r["n"]), r["n"])["ci95"]}
    d["magic_token_space"] = MR.magic_token_space(d["magic_tokens_length"])
    d["question"] = questions(d["transitions"], d["baselines"], d["random_token"], d["magic_tokens_length"])
    return d


def questions(transitions: dict, baselines: dict, rand: dict, length: int) -> dict:
    """placement -> "<transition> (<model>)" -> `MR.question` (the co-trained model, then each baseline)."""
    out = {}
    for placement in transitions:
        rows = [(f"{t} (co-trained)", s, MR.parse_transition(t)[1]) for t, s in transitions[placement].items()]
        rows += [(f"none->negative ({b})", s, "negative") for b, s in baselines.get(placement, {}).items()]
        out[placement] = {label: MR.question(f"{label}, u {placement}", s, rand, length, target)
                          for label, s, target in rows}
    return out


def cotraining_fingerprint(cot: dict) -> str | None:
    """Which co-training run a result was computed on: its training losses and tokens, hashed
    (a retrained model changes them; the weights themselves are a DVC out, absent from a clean clone)."""
    if not cot.get("train_logs"):
        return None
    key = json.dumps({"train_logs": cot["train_logs"], "tokens": cot.get("tokens")}, sort_keys=True)
    return hashlib.sha256(key.encode()).hexdigest()[:12]


def run(scale: str = "default", out_root=None, overrides: dict | None = None,
        progress=print) -> ModeReachStageResult:
    P, cfg = stage_params(scale, "mode_reachability", MR.ModeReachConfig, overrides)
    ccfg = build(CoTrainingConfig, P["cotraining"], "cotraining")
    with torch_threads(ccfg.threads):   # the co-training stage's thread count: same scores, same searches
        return _run(scale, out_root, overrides, progress, P, cfg, ccfg)


def _run(scale, out_root, overrides, progress, P, cfg, ccfg) -> ModeReachStageResult:
    root = Path(out_root) if out_root else REPO_ROOT
    models_dir = root / "results" / scale / "models" / "cotraining"
    cot_json = root / "results" / scale / "cotraining.json"
    cot = json.loads(cot_json.read_text()) if cot_json.exists() else {}
    tokens = cot.get("tokens") or magic_tokens_of(ccfg, P["seed"])   # the trained run's own, where it recorded them
    out_dir = results_dir(scale, out_root)
    torch.manual_seed(P["seed"])

    # the held-out harmful prompts the cotraining stage evaluates on (more from its sources if asked)
    prompts = MR.held_out_prompts(ccfg, cfg.n_prompts, data_seed(ccfg, P["seed"]))
    judge, judge_report = make_judge(ccfg, P["seed"])     # the cotraining stage's judge
    scfg = MR.search_config(cfg)
    progress(f"{len(prompts)} held-out harmful prompts; placements {cfg.placements}; {cfg.search} search: "
             f"{budget_label(scfg)}")

    def log(placement, label, name):
        return (out_dir / "instances" / "mode_reachability" / placement / cfg.search
                / f"{label}_{name.replace('->', '_to_')}.jsonl")

    cot_model, tok = MR.load_trained(P["model"], models_dir, "cotrained", P["device"], "float32")
    # 'auto' keeps the dtype the co-trained model's finished rows were searched in (one run, resumed anywhere)
    digest = weights_digest(cot_model)
    recorded = recorded_search_dtype(
        [log(pl, "cotrained", t) for pl in cfg.placements for t in cfg.transitions],
        [MR.resume_header(t, pl, cfg, P["seed"], "cotrained", [digest, digest])
         for pl in cfg.placements for t in cfg.transitions])
    search_dtype = resume_dtype(P["search_dtype"], recorded)

    def pair(name):
        """(search model, fp32 verify model or None), tokenizer of a trained model."""
        m, tok = MR.load_trained(P["model"], models_dir, name, P["device"], "float32")
        return search_pair_of(m, search_dtype), tok

    search, verify = search_pair_of(cot_model, search_dtype)
    meta = run_meta(P["model"], cot_model.device, P["seed"], scale, placements=list(cfg.placements),
                    search_dtype=dtype_of(search),
                    cotraining_run=cotraining_fingerprint(cot),
                    search=cfg.search, search_config=asdict(scfg), n_prompts=len(prompts),
                    n_eval_harmful=ccfg.n_eval_harmful, judge=judge_report["kind"],
                    judge_accuracy=judge_report["agreement"],
                    overrides=overrides or {}, budget=budget_label(scfg), threads=torch.get_num_threads())
    # every searched model's weight digest, as the rows' resume keys hold it: a test recomputes each
    # committed row's config hash from today's params and these, so a params edit that would orphan
    # hours of rows fails there first
    meta["weights_digest"] = {"cotrained": weights_digest(cot_model)}

    # where the target mode itself (real magic token) does not behave as that mode, there is
    # nothing to reach: those prompts are left out of the curves (counted)
    dec = MR.judged_decoding(cfg, ccfg)      # every judged response decoded as paper B's stage decodes (or greedy)
    meta["judged_decoding"] = dec or "greedy"
    holds = {m: MR.target_mode_holds(cot_model, tok, judge, prompts, tokens[m], m, cfg.max_new_tokens,
                                     cfg.gen_batch_size, dec)
             for m in sorted({MR.parse_transition(t)[1] for t in cfg.transitions} | {"negative"})}
    # search_minutes cuts the searches short: every transition then holds the prompts finished so far
    deadline = time.time() + 60 * cfg.search_minutes if cfg.search_minutes is not None else None
    searched = (lambda m: None) if cfg.search_unheld else (lambda m: holds[m])   # None: every prompt
    # placement by placement (the first, the user turn, is the study's main setting): the co-trained
    # transitions, then the baselines on the same prompts, so a cut run holds whole comparisons first
    summary, base_summary = {pl: {} for pl in cfg.placements}, {pl: {} for pl in cfg.placements}
    for pl in cfg.placements:
        for name in cfg.transitions:
            rows = MR.run_transition(name, pl, search, verify, tok, judge, prompts, tokens, cfg,
                                     log(pl, "cotrained", name), seed=P["seed"], label="cotrained",
                                     deadline=deadline, holds=searched(MR.parse_transition(name)[1]), decoding=dec)
            summary[pl][name] = MR.summarize_transition(rows, holds[MR.parse_transition(name)[1]], len(prompts))
        # baselines: no modes, no magic token; target = where the co-trained negative response leaves theirs
        for b in MR.baselines_at(cfg, pl):
            (bs, bv), _ = pair(b)
            meta["weights_digest"][b] = weights_digest(bv if bv is not None else bs)
            rows = MR.run_transition("none->negative", pl, bs, bv, tok, judge, prompts, tokens, cfg,
                                     log(pl, b, "none->negative"), target_model=cot_model, seed=P["seed"], label=b,
                                     deadline=deadline, holds=searched("negative"), decoding=dec)
            base_summary[pl][b] = MR.summarize_transition(rows, holds["negative"], len(prompts))
            del bs, bv
    strings = MR.random_strings(cfg.n_random_tokens, ccfg.magic_token_length, P["seed"], exclude=tokens.values())
    rand = MR.random_token_switch_rate(cot_model, tok, judge, prompts, strings, "negative", cfg.max_new_tokens,
                                       cfg.gen_batch_size, dec)
    res = ModeReachStageResult(meta=meta, magic_tokens_length=ccfg.magic_token_length, transitions=summary,
                               baselines=base_summary, random_token_switch_rate=rand["rate"], random_token=rand,
                               target_mode_holds={m: sum(h) / len(h) for m, h in holds.items()},
                               magic_token_space=MR.magic_token_space(ccfg.magic_token_length),
                               question=questions(summary, base_summary, rand, ccfg.magic_token_length),
                               partial=any(s["n_prompts"] < s["n_planned"]
                                           for part in (summary, base_summary) for d in part.values()
                                           for s in d.values()))
    if world()[0] != 0:   # under a launcher every process holds the merged rows; rank 0 writes the result
        return res
    res.save(out_dir)
    return ModeReachStageResult.load(out_dir)   # what the figures draw is exactly what results/ holds
