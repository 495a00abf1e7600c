"""Stage `mode_reachability` (beyond both papers): params in, `ModeReachStageResult` out.

    res = run("default")                                      # needs the cotraining stage's models
    res = ModeReachStageResult.load(results_dir("paper"))     # the committed result, no model

Paper A's back-off search against paper B's co-trained model: for each
transition (e.g. positive->negative) and held-out harmful prompt, the
shortest discovered prompt that makes the target mode's opening token the
argmax without the target's magic token; the same against the single-mode
baselines (none->negative), and the random-magic-token switch rate. Rows are
resumable per (model, transition) under `instances/mode_reachability/`.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from .. import mode_reachability as MR
from ..config import REPO_ROOT, build, stage_params
from ..controllers.backoff import BackoffConfig
from ..cotraining import CoTrainingConfig
from ..judges import build_judge
from ..models import search_pair_of, torch_threads
from ..reachability import budget_label
from ..results import as_result, read_stage_json, results_dir, run_meta, write_json
from ..safety_data import build_safety_data, magic_tokens


@dataclass
class ModeReachStageResult:
    meta: dict[str, Any]
    magic_tokens_length: int
    transitions: dict[str, dict[str, Any]]     # co-trained model: name -> n, n_prompts, eps, eps_judged
    baselines: dict[str, dict[str, Any]]       # baseline -> the none->negative summary
    random_token_switch_rate: float
    random_token: dict[str, Any]
    target_mode_holds: dict[str, float]        # share of prompts where the real magic token gives its mode

    def save(self, out_dir: str | Path) -> Path:
        return write_json(Path(out_dir) / "mode_reachability.json", asdict(self))

    @classmethod
    def load(cls, out_dir: str | Path) -> ModeReachStageResult:
        d = read_stage_json(out_dir, "mode_reachability")
        if "budget" not in d["meta"] and "backoff" in d["meta"]:   # written before the label was kept
            d["meta"]["budget"] = budget_label(build(BackoffConfig, d["meta"]["backoff"], "backoff"))
        return as_result(cls, d)


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
    tokens = (json.loads(cot_json.read_text()).get("tokens") if cot_json.exists() else None) \
        or ccfg.magic_tokens or magic_tokens(P["seed"], 4, ccfg.magic_token_length)
    out_dir = results_dir(scale, out_root)
    log_dir = out_dir / "instances" / "mode_reachability"
    torch.manual_seed(P["seed"])

    # the same held-out harmful prompts the cotraining stage evaluates on
    data = build_safety_data(ccfg.n_train_harmful, ccfg.n_train_benign, ccfg.n_eval_harmful, ccfg.n_eval_benign,
                             ccfg.n_xstest, seed=P["seed"], max_chars=ccfg.max_prompt_chars)
    prompts = [p.text for p in data.eval_harmful][: cfg.n_prompts]
    judge, judge_report = build_judge(P["seed"], ccfg.judge_n_alpaca, n_xstest=ccfg.judge_n_xstest,
                                      max_length=ccfg.judge_max_length)
    progress(f"{len(prompts)} held-out harmful prompts; back-off budget: {budget_label(cfg.backoff)}")

    def pair(name):
        """(search model, fp32 verify model or None), tokenizer of a trained model."""
        m, tok = MR.load_trained(P["model"], models_dir, name, P["device"], "float32")
        return search_pair_of(m, P["search_dtype"]), tok

    (search, verify), tok = pair("cotrained")
    cot_model = verify if verify is not None else search
    meta = run_meta(P["model"], cot_model.device, P["seed"], scale, backoff=asdict(cfg.backoff),
                    n_prompts=len(prompts), judge_accuracy=judge_report.accuracy3, overrides=overrides or {},
                    budget=budget_label(cfg.backoff), threads=torch.get_num_threads())

    # where the target mode itself (real magic token) does not behave as that mode, there is
    # nothing to reach: those prompts are left out of the curves (counted)
    holds = {m: MR.target_mode_holds(cot_model, tok, judge, prompts, tokens[m], m, cfg.max_new_tokens,
                                     cfg.gen_batch_size)
             for m in sorted({MR.parse_transition(t)[1] for t in cfg.transitions} | {"negative"})}
    summary = {}
    for name in cfg.transitions:
        rows = MR.run_transition(name, search, verify, tok, judge, prompts, tokens, cfg,
                                 log_dir / f"cotrained_{name.replace('->', '_to_')}.jsonl", seed=P["seed"],
                                 label="cotrained")
        summary[name] = MR.summarize_transition(rows, holds[MR.parse_transition(name)[1]])
    # baselines: no modes, no magic token; target = where the co-trained negative response leaves theirs
    base_summary = {}
    for b in cfg.baselines:
        (bs, bv), _ = pair(b)
        rows = MR.run_transition("none->negative", bs, bv, tok, judge, prompts, tokens, cfg,
                                 log_dir / f"{b}_none_to_negative.jsonl", target_model=cot_model, seed=P["seed"],
                                 label=b)
        base_summary[b] = MR.summarize_transition(rows, holds["negative"])
        del bs, bv
    strings = MR.random_strings(cfg.n_random_tokens, ccfg.magic_token_length, P["seed"], exclude=tokens.values())
    rand = MR.random_token_switch_rate(cot_model, tok, judge, prompts, strings, "negative", cfg.max_new_tokens,
                                       cfg.gen_batch_size)
    res = ModeReachStageResult(meta=meta, magic_tokens_length=ccfg.magic_token_length, transitions=summary,
                               baselines=base_summary, random_token_switch_rate=rand["rate"], random_token=rand,
                               target_mode_holds={m: sum(h) / len(h) for m, h in holds.items()})
    res.save(out_dir)
    return ModeReachStageResult.load(out_dir)   # what the figures draw is exactly what results/ holds
