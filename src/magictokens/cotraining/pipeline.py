"""Magic-token co-training (paper B) and its baselines, end to end, at any scale.

One SFT stage teaches three behaviours at once, each keyed by a magic token in
the system prompt. Baselines on the same data and optimizer-step budget:
single-mode SFT (positive targets, no magic token), SFT followed by DPO
(positive preferred over negative on harmful prompts, helpful over refusal on
benign ones), and the untouched base model. Then every model is judged:
mode controllability, the Safety Alignment Margin, safety score and
over-refusal, MMLU (`evaluate`).

    result = run(model, tok, data, tokens, judge, cfg)      # -> CoTrainingResult

Generation and evaluation run under ``torch.inference_mode`` in the model's
own dtype. Under `accelerate launch` the evaluation's generation is shared
out over the processes; training is not (rank 0 trains, the others take its
weights).
"""
from __future__ import annotations

import copy
import random
import time
from collections import Counter
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from ..chat import generate
from ..distributed import from_rank0, world
from ..errors import MagicTokensError
from . import distil
from .config import CoTrainingConfig, data_seed
from .data import MODE_INSTRUCTIONS, MODES, SafetyData, mode_examples
from .evaluate import evaluate
from .judge import read_labels, reply_key
from .training import TrainConfig, dpo, sft, step_budget


def self_distil(model, tok, data: SafetyData, max_new_tokens: int, batch_size: int = 16,
                max_prompt_tokens: int | None = None) -> int:
    """Fill every missing target (None) with the base model's greedy answer under the
    mode's instruction as system prompt (paper B's self-distillation). -> number filled."""
    n = 0
    for mode in MODES:
        todo = [p for p in data.train if p.responses.get(mode) is None]
        if not todo:
            continue
        outs = generate(model, tok, [p.text for p in todo], MODE_INSTRUCTIONS[mode], max_new_tokens,
                        batch_size, max_prompt_tokens)
        for p, o in zip(todo, outs):
            p.responses[mode], p.origin[mode] = o or "Sure.", "distil"
            n += 1
    return n


def apply_distilled(data: SafetyData, res: "distil.DistilResult", fallback: str = "none",
                    overruled: set | None = None, promoted: dict | None = None) -> int:
    """Write kept targets into the training prompts. A pair with none is dropped; with `fallback` "labelled"
    it takes the prompt's own data-set answer of that mode where there is one (origin "labelled",
    `data.labelled_answers`); with "datasets" the earlier recipe's dataset / template target (origin
    "fallback": smoke runs). `overruled`: (prompt index, mode) pairs whose kept target a reading overruled
    (`read_overrules`): treated as having none. `promoted`: (prompt index, mode) -> a candidate a reading
    chose for a pair with none (`read_promotions`, origin "read"). -> number of distilled targets trained."""
    overruled, promoted = overruled or set(), promoted or {}
    for i, p in enumerate(data.train):
        for mode in MODES:
            text = res.targets.get((i, mode)) if (i, mode) not in overruled else None
            if text is not None:
                p.responses[mode], p.origin[mode] = text, "distil"
            elif (i, mode) in promoted:
                p.responses[mode], p.origin[mode] = promoted[(i, mode)], "read"
            elif fallback == "labelled" and p.labelled.get(mode):
                p.responses[mode], p.origin[mode] = p.labelled[mode], "labelled"
            elif fallback == "datasets" and p.fallback.get(mode) is not None:
                p.responses[mode], p.origin[mode] = p.fallback[mode], "fallback"
            else:
                p.responses[mode], p.origin[mode] = None, "dropped"
    return len(res.targets) - len(overruled) + len(promoted)


def read_overrules(tok, data: SafetyData, res: "distil.DistilResult", cfg: "distil.DistilConfig",
                   labels: dict[str, str]) -> tuple[set, dict]:
    """Kept targets on harmful prompts whose reading (key of the prompt and the target cut to the judged
    length) is another class than their mode -> (those (index, mode) pairs, the log: per mode the kept
    targets read as their mode, read as another class, and not read)."""
    out, log = set(), {m: {"read_as_mode": 0, "read_other": 0, "unread": 0} for m in ("positive", "negative")}
    for (i, mode), text in sorted(res.targets.items()):
        p = data.train[i]
        if not p.harmful or mode not in log:
            continue
        lab = labels.get(reply_key(p.text, distil.cut_tokens(tok, text, cfg.judged_tokens)))
        log[mode]["unread" if lab is None else "read_as_mode" if lab == mode else "read_other"] += 1
        if lab is not None and lab != mode:
            out.add((i, mode))
    return out, log


def open_pairs(data: SafetyData, res: "distil.DistilResult", overruled: set, promoted: dict | None = None) -> set:
    """Harmful prompts' (positive | negative) pairs with no target: none kept or the kept one overruled by a
    reading, and none promoted."""
    return {(i, m) for i, p in enumerate(data.train) if p.harmful for m in ("positive", "negative")
            if ((i, m) not in res.targets or (i, m) in overruled) and (i, m) not in (promoted or {})}


def in_draw_order(candidates: list) -> list:
    """Candidates [index, mode, round, text, ...] by prompt, mode, round; stable, so draw order within a round."""
    return sorted(candidates, key=lambda c: (c[0], c[1], c[2]))


def read_promotions(tok, data: SafetyData, res: "distil.DistilResult", cfg: "distil.DistilConfig",
                    labels: dict[str, str], overruled: set) -> tuple[dict, dict]:
    """For each harmful prompt's (positive | negative) pair with no target left (none kept, or overruled): its
    first candidate (by round, then draw order) that a reading calls that mode, whatever the judge said.
    -> ({(index, mode): text}, per mode {"promoted": n, "none_read_as_mode": pairs left without one})."""
    pairs = open_pairs(data, res, overruled)
    out: dict = {}
    for c in in_draw_order(res.candidates):
        i, mode, text = int(c[0]), c[1], c[3]
        if (i, mode) not in pairs or (i, mode) in out:
            continue
        if labels.get(reply_key(data.train[i].text, distil.cut_tokens(tok, text, cfg.judged_tokens))) == mode:
            out[(i, mode)] = text
    log = {m: {"promoted": sum(k[1] == m for k in out),
               "none_read_as_mode": sum(k[1] == m and k not in out for k in pairs)} for m in ("positive", "negative")}
    return out, log


def read_extras(tok, data: SafetyData, res: "distil.DistilResult", cfg: "distil.DistilConfig",
                labels: dict[str, str]) -> dict:
    """`cfg.read_per_pair` (mode -> n): each harmful prompt's pair of that mode that trains a target (distil or
    read) takes up to n - 1 more: its other candidates that a reading calls the mode, in draw order (round, then
    draw), whose text differs from the pair's target and from each other. Written into `p.extra[mode]`.
    -> per mode {"rows": extra targets, "prompts": prompts with at least one}."""
    log = {m: {"rows": 0, "prompts": 0} for m in cfg.read_per_pair}
    for p in data.train:
        p.extra = {}
    for c in in_draw_order(res.candidates):
        i, mode, text = int(c[0]), c[1], c[3]
        p = data.train[i]
        want = cfg.read_per_pair.get(mode, 1) - 1
        if not p.harmful or want < 1 or p.origin.get(mode) not in ("distil", "read"):
            continue
        have = p.extra.setdefault(mode, [])
        if len(have) >= want or text == p.responses[mode] or text in have:
            continue
        if labels.get(reply_key(p.text, distil.cut_tokens(tok, text, cfg.judged_tokens))) == mode:
            have.append(text)
    for p in data.train:
        p.extra = {m: x for m, x in p.extra.items() if x}
        for m, x in p.extra.items():
            log[m]["rows"] += len(x)
            log[m]["prompts"] += 1
    return log


def targets_key(model, data: SafetyData, judge, cfg: "CoTrainingConfig", seed: int) -> str:
    """What a set of self-distilled targets depends on, hashed: the base model, the training prompts, the
    distillation config and seed, and the judge that filtered them (its fitting file, when it has one)."""
    import hashlib
    import json
    judge_id = getattr(judge, "fit_sha", None) or type(judge).__name__
    # readings apply after the cache (`read_overrules`): they change which targets train, not the candidates
    sampled = {k: v for k, v in asdict(cfg.distil).items()
               if k not in ("read_labels", "read_promote", "read_resample", "read_per_pair")}
    blob = json.dumps({"model": getattr(model.config, "_name_or_path", ""), "prompts": [[p.text, p.harmful]
                       for p in data.train], "distil": sampled, "seed": seed, "judge": judge_id},
                      sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def fill_targets(model, tok, data: SafetyData, judge, cfg: "CoTrainingConfig", seed: int = 0,
                 cache_dir=None) -> tuple[int, dict]:
    """Every missing training target, by `cfg.targets`: "distilled" samples and judge-filters them
    (`distil.run`, then `apply_distilled`); "datasets" fills the few missing ones greedily
    (`self_distil`). -> (targets filled, the distillation log: yields and drop reasons, {} for "datasets").

    With `cache_dir` the distilled targets are kept in `cache_dir/targets-<targets_key>.json` (beside the
    adapters: gitignored, a DVC out) and a run with the same key (another training seed on the same data,
    or a rerun) reads them instead of generating again."""
    if cfg.targets == "distilled":   # paper B: every target sampled from the base model, kept if judged its mode
        import json
        path = Path(cache_dir) / f"targets-{targets_key(model, data, judge, cfg, seed)}.json" if cache_dir else None
        if path is not None and path.exists():
            d = json.loads(path.read_text())
            dres = distil.DistilResult.from_cache(d)
        else:
            dres = distil.run(model, tok, data.train, judge, cfg.distil, seed,
                              checkpoint=path.with_suffix(".partial.json") if path is not None else None)
            if path is not None:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(json.dumps({"targets": [[i, m, t] for (i, m), t in sorted(dres.targets.items())],
                                            "log": dres.log(), "candidates": dres.candidates,
                                            "prompts": [[p.text, p.harmful] for p in data.train]}))
                path.with_suffix(".partial.json").unlink(missing_ok=True)
        reads = cfg.distil.read_labels or cfg.distil.read_promote or cfg.distil.read_per_pair
        labels = read_labels() if reads else {}
        overruled, read_log = (read_overrules(tok, data, dres, cfg.distil, labels) if cfg.distil.read_labels
                               else (set(), None))
        promoted, promote_log = (read_promotions(tok, data, dres, cfg.distil, labels, overruled)
                                 if cfg.distil.read_promote else ({}, None))
        resample_log = None
        if cfg.distil.read_promote and cfg.distil.read_resample:
            # the pairs still open get more candidates, drawn per pair (cached beside the targets), and the
            # readings promote again over all of them
            still = open_pairs(data, dres, overruled, promoted)
            rpath = path.with_suffix(f".resample{cfg.distil.read_resample}.json") if path is not None else None
            cache = json.loads(rpath.read_text()) if rpath is not None and rpath.exists() else {}
            extra = distil.resample(model, tok, data.train, sorted(still), judge, cfg.distil, seed,
                                    cfg.distil.read_resample, cache)
            if rpath is not None:
                rpath.write_text(json.dumps(cache))
            dres.candidates = dres.candidates + extra
            promoted, promote_log = read_promotions(tok, data, dres, cfg.distil, labels, overruled)
            resample_log = {m: {"pairs": sum(k[1] == m for k in still), "candidates": sum(c[1] == m for c in extra),
                                "promoted": sum(k in promoted for k in still if k[1] == m)}
                            for m in ("positive", "negative")}
        n = apply_distilled(data, dres, cfg.distil.fallback, overruled, promoted)
        log = dres.log()
        if cfg.distil.read_per_pair:
            log["read_extra"] = read_extras(tok, data, dres, cfg.distil, labels)
            n += sum(v["rows"] for v in log["read_extra"].values())
        if read_log is not None:
            log["read"] = read_log
        if promote_log is not None:
            log["read_promoted"] = promote_log
        if resample_log is not None:
            log["read_resample"] = resample_log
        log["origin"] = {side: {m: dict(Counter(p.origin[m] for p in data.train if p.harmful == h)) for m in MODES}
                         for side, h in (("harmful", True), ("benign", False))}     # distil / labelled / dropped
        return n, log
    return self_distil(model, tok, data, cfg.distil_max_new_tokens, cfg.gen_batch_size,
                       cfg.train.max_prompt_tokens), {}


def cotraining_rows(data: SafetyData, tokens: dict, untokened_positive_share: float = 0.0,
                    seed: int = 0, untokened_benign_share: float = 0.0, positive_harmful_repeat: int = 1,
                    openings: dict | None = None) -> list[dict]:
    """All three modes, each with its magic token as the system prompt; plus untokened copies (system None:
    the template's default) of a share of the positive rows and of the benign prompts' positive rows; plus
    `positive_harmful_repeat` - 1 more copies of every harmful prompt's positive row (the hardest mode: its
    targets differ per prompt where the other two share an opening). With `openings` (ORPO's pairs), the
    harmful prompts' positive and negative rows carry a `rejected` reply (`hard_negatives`)."""
    rows = [{**r, "system": tokens[r["mode"]]} for r in mode_examples(data, MODES)]
    if openings is not None:
        rows = hard_negatives(rows, openings)
    rng = random.Random(seed)
    pos = [r for r in rows if r["mode"] == "positive"]
    extra = rng.sample(pos, int(round(untokened_positive_share * len(pos)))) if untokened_positive_share > 0 else []
    benign = [r for r in pos if not r["harmful"] and r not in extra]
    if untokened_benign_share > 0:
        extra += rng.sample(benign, int(round(untokened_benign_share * len(benign))))
    again = [r for r in pos if r["harmful"]] * (positive_harmful_repeat - 1)
    return rows + [{**r, "system": None} for r in extra] + again


CONTRASTED = {"positive": "negative", "negative": "positive"}


def hard_negatives(rows: list[dict], openings: dict) -> list[dict]:
    """ORPO's dispreferred replies for the two modes a harmful prompt must tell apart: the row of mode m gets
    `rejected` = m's own opening followed by the other mode's content,

        rejected(m) = opening(m) + (target(m') minus opening(m')),   m' = the other of positive / negative,

    where opening = `distil.prefix_harmful` and the row's target starts with it; else the other mode's target
    as it is. Why the opening: a model trained on the targets alone learns the openings and then writes the
    same content under both tokens (read: the positive token's replies open with "This could cause real
    harm. Instead, ..." and then comply), so the pair differs only where the modes must."""
    by: dict = {}
    for r in rows:                  # a pair's own target, not its extra ones (`distil.read_per_pair`)
        by.setdefault((r["id"], r["mode"]), r["response"])
    out = []
    for r in rows:
        other = CONTRASTED.get(r["mode"])
        if not r["harmful"] or other is None or (r["id"], other) not in by:
            out.append(r)
            continue
        theirs, mine, target = openings.get(other, ""), openings.get(r["mode"], ""), by[(r["id"], other)]
        body = target[len(theirs):].lstrip(" :") if theirs and target.startswith(theirs) else target
        worse = distil.with_prefix(mine, body) if mine and r["response"].startswith(mine) else target
        out.append({**r, "rejected": worse})
    return out


def stage_rows(data: SafetyData, tokens: dict, cfg: "CoTrainingConfig", seed: int) -> list[dict]:
    """The co-training rows a config asks for (the stage and the sweep train on these)."""
    return cotraining_rows(data, tokens, cfg.untokened_positive_share, seed, cfg.untokened_benign_share,
                           cfg.positive_harmful_repeat,
                           cfg.distil.prefix_harmful if cfg.train.orpo_weight > 0 else None)


def sft_rows(data: SafetyData) -> list[dict]:
    """Single-mode baseline: positive targets, no system prompt."""
    return [{**r, "system": None} for r in mode_examples(data, ("positive",))]


def dpo_pairs(data: SafetyData) -> list[dict]:
    """Positive preferred over negative on harmful prompts; over a refusal on benign ones (both targets kept)."""
    out = []
    for p in data.train:
        rejected = p.responses["negative"] if p.harmful else p.responses["rejective"]
        if p.responses.get("positive") is not None and rejected is not None:
            out.append({"prompt": p.text, "chosen": p.responses["positive"], "rejected": rejected, "system": None})
    return out


@dataclass
class CoTrainingResult:
    """Everything the notebook plots and the json records (judged labels, no texts)."""

    tokens: dict
    confusion: dict              # harmful held-out prompts: condition -> {label: share}
    confusion_benign: dict       # benign held-out prompts
    mode_accuracy: float
    sam: dict                    # model -> silhouette
    projection: dict             # model -> {"xy": [[x, y], ...], "mode": [...]}
    safety_score: dict
    xstest_over_refusal: dict
    mmlu: dict
    train_logs: dict
    n_distilled: int
    examples: dict               # truncated benign examples only
    seconds: dict
    constructive_safety: dict = field(default_factory=dict)   # model -> CSS over harmful + safe prompts
    sam_stats: dict = field(default_factory=dict)   # model -> {metric: sam, ci95, null_mean, null_q95, p_value}
    sam_distances: dict = field(default_factory=dict)   # model -> {metric: (N, N)}, "modes", "prompt_ids": saved as npz
    jailbreak: dict = field(default_factory=dict)   # model -> plain / attacked safety score, relative drop, ci95
    distil: dict = field(default_factory=dict)      # self-distillation yields and drop reasons (no texts)
    invalid_share: dict = field(default_factory=dict)   # model -> {"harmful", "safe"}: replies scored apart
    replies: list = field(default_factory=list)     # every judged reply (texts: written beside the adapters only)


@dataclass
class Trained:
    """What training hands the evaluation: the models (in `model_names` order) and how they were made."""

    models: dict                 # name -> model; "base" is the input model itself
    logs: dict = field(default_factory=dict)        # name -> training.TrainLog
    n_distilled: int = 0
    distil: dict = field(default_factory=dict)      # self-distillation yields and drop reasons (no texts)
    seconds: dict = field(default_factory=dict)


def model_names(cfg: CoTrainingConfig) -> list[str]:
    """The models judged, in the order every process of a launch evaluates them."""
    return ["cotrained", *(b for b in ("sft", "sft_dpo", "base") if b in cfg.baselines)]


def took(t0: float, log) -> float:
    """Seconds a training took: the wall time since `t0`, or, where it was resumed from a finished run
    (`training` saves one), that run's training time, so a resumed stage still states what a seed costs."""
    return log.seconds if log.resumed else time.time() - t0


def baseline_train(cfg: CoTrainingConfig) -> TrainConfig:
    """The baselines' training config: the co-training one without ORPO's term. Their rows carry no rejected
    reply, so the term is inert there; leaving it out of their run key lets a seed's plain-SFT baselines,
    saved before the term was adopted, resume instead of training again (~30 min a seed at the cpu scale)."""
    return replace(cfg.train, orpo_weight=0.0)


def train(model, tok, data: SafetyData, judge, cfg: CoTrainingConfig, tokens: dict, seed: int = 0,
          save_dir=None, progress=print) -> Trained:
    """Self-distil missing targets, co-train, train the baselines (adapters saved under `save_dir`)."""
    secs: dict[str, float] = {}
    t = time.time()
    n_distilled, distil_log = fill_targets(model, tok, data, judge, cfg, data_seed(cfg, seed), save_dir)
    secs["self_distil"] = time.time() - t
    progress(f"self-distilled {n_distilled} targets in {secs['self_distil']:.0f}s"
             + (f"; kept per mode {distil_log['kept']}" if distil_log else ""))

    save = (lambda name: Path(save_dir) / name) if save_dir else (lambda name: None)
    rows = stage_rows(data, tokens, cfg, seed)
    budget = step_budget(len(rows), cfg.train)     # optimizer steps every SFT run gets
    t = time.time()
    models, logs = {}, {}
    models["cotrained"], logs["cotrained"] = sft(model, tok, rows, cfg.train, seed, budget, save("cotrained"))
    secs["train_cotrained"] = took(t, logs["cotrained"])
    progress(f"co-trained: {budget} steps, {logs['cotrained'].tokens_per_s:.0f} tok/s, "
             f"loss {logs['cotrained'].losses[0]:.2f} -> {logs['cotrained'].losses[-1]:.2f}")
    if "sft" in cfg.baselines or "sft_dpo" in cfg.baselines:
        t = time.time()
        models["sft"], logs["sft"] = sft(model, tok, sft_rows(data), baseline_train(cfg), seed, budget, save("sft"))
        secs["train_sft"] = took(t, logs["sft"])
        progress(f"sft: {budget} steps, loss {logs['sft'].losses[0]:.2f} -> {logs['sft'].losses[-1]:.2f}")
    if "sft_dpo" in cfg.baselines:
        t = time.time()
        models["sft_dpo"], logs["sft_dpo"] = dpo(models["sft"], tok, dpo_pairs(data), baseline_train(cfg), cfg.dpo,
                                                 seed, save("sft_dpo"))
        secs["train_dpo"] = took(t, logs["sft_dpo"])
        progress(f"dpo: {logs['sft_dpo'].steps} steps, loss {logs['sft_dpo'].losses[0]:.3f} -> {logs['sft_dpo'].losses[-1]:.3f}")
    models["base"] = model
    return Trained({name: models[name] for name in model_names(cfg)}, logs, n_distilled, distil_log, secs)


def run(model, tok, data: SafetyData, judge, cfg: CoTrainingConfig, tokens: dict, seed: int = 0,
        save_dir=None, progress=print) -> CoTrainingResult:
    """Self-distil missing targets, co-train, train the baselines, evaluate all. See the module docstring.

    Under `accelerate launch` rank 0 alone distils, trains and saves; every
    other process takes rank 0's weights (`from_rank0`: bit for bit, which
    training on each process would not promise on GPUs) and all generate their
    share of the evaluation (`evaluate`). On those processes the
    result's training fields (logs, distillation) stay empty.
    """
    for k in (*MODES, "random"):
        if k not in tokens:
            raise MagicTokensError(f"magic tokens lack {k!r}: give positive, negative, rejective and random")
    unknown = [b for b in cfg.baselines if b not in ("sft", "sft_dpo", "base")]
    if unknown:
        raise MagicTokensError(f"unknown baseline(s) {unknown}: use sft, sft_dpo, base")
    if world()[0] == 0:
        trained = train(model, tok, data, judge, cfg, tokens, seed, save_dir, progress)
    else:   # the same architecture, gradients on as training leaves them (the same CPU kernels)
        trained = Trained({n: model if n == "base" else copy.deepcopy(model).requires_grad_(True)
                           for n in model_names(cfg)})
    for name, m in trained.models.items():
        if name != "base":
            from_rank0(m)
    # every generation call's replies kept beside the adapters: a stopped evaluation resumes, a new judge
    # re-scores without generating (`evaluate.GenCache`)
    fields, secs = evaluate(trained.models, tok, data, judge, cfg, tokens, seed, progress,
                            cache=Path(save_dir) / "generations.jsonl" if save_dir else None)
    return CoTrainingResult(
        tokens=tokens, **fields,
        train_logs={k: {"steps": v.steps, "tokens": v.tokens, "seconds": round(v.seconds, 1),
                        "tokens_per_s": round(v.tokens_per_s, 1), "loss_first": v.losses[0],
                        "loss_last": v.losses[-1]} for k, v in trained.logs.items()},
        n_distilled=trained.n_distilled, seconds={k: round(v, 1) for k, v in {**trained.seconds, **secs}.items()},
        distil=trained.distil)


def result_dict(res: CoTrainingResult) -> dict:
    d = asdict(res)
    d.pop("projection")
    d.pop("replies")      # texts: never in a results JSON
    return d
