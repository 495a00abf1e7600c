"""README lines of paper B (co-training, its judge, seeds, variants, the validation sweep) and the beyond study."""
from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

from ..config import load_params
from ..cotraining.config import decoding_of
from ..errors import MagicTokensError
from ..metrics import across_seeds, wilson_interval
from ..papers import K_KEYS as KS
from ..papers import PAPER_B
from ..stages.cotraining import CoTrainingStageResult
from ..stages.mode_reachability import ModeReachStageResult, cotraining_fingerprint
from .common import _backoff_line, _f, _meta_line, _typed


# the default scale is what a bare `dvc repro` runs in minutes: a check of the pipeline at small N, not a measurement
SMALL = {"default": " *Small N (a bare `dvc repro` in minutes): a check that the stage runs end to end, not a "
                    "measurement; paper B's record is the cpu scale above.*"}

def render_cotraining(scale: str, root: Path) -> list[str]:
    r = _typed(CoTrainingStageResult, scale, root)
    if r is None:
        return []
    d = asdict(r)
    modes = ["positive", "negative", "rejective"]
    conf = d.get("confusion", {})
    cols = modes + (["invalid"] if any("invalid" in row for row in conf.values()) else [])
    n_h = d.get("data", {}).get("n_eval_harmful")
    j = d.get("judge", {})
    ci = j.get("agreement_ci95")
    judge = (f"judge: {j.get('kind')}, agreement {_f(d.get('judge_accuracy'))} with labels read on N={j.get('n')} "
             f"held-out replies of this model (95% {_f(ci[0])}-{_f(ci[1])})" if ci else
             f"judge accuracy {_f(d.get('judge_accuracy'))}")
    out = [f"**Paper B, magic-token co-training ({scale} scale)** - {_meta_line(d['meta'])}; "
           f"n_train {d['meta'].get('n_train')}, n_eval {d['meta'].get('n_eval')}; {judge}.{SMALL.get(scale, '')}", "",
           f"| system prompt (held-out harmful, n={n_h}) | " + " | ".join(f"judged {m}" for m in cols) + " |",
           "|---" * (len(cols) + 1) + "|"]
    for tok, row in conf.items():
        out.append(f"| {tok} | " + " | ".join(_share_ci(row.get(m), n_h) for m in cols) + " |")
    if dl := d.get("distil"):
        k = dl["kept"]
        out += ["", "Self-distilled targets kept (judged as their own mode; of n prompts, harmful / benign): "
                + ", ".join(f"{m} {k[m]['harmful'][0]}/{k[m]['harmful'][1]} / {k[m]['benign'][0]}/{k[m]['benign'][1]}"
                            for m in k) + f"; {dl['n_generated']} sampled candidates judged. Dropped candidates, "
                "by judged label: " + "; ".join(f"{m}: " + ", ".join(f"{lab} {c}" for lab, c in sorted(r.items()))
                                                for m, r in dl["rejected"].items() if r) + "."]
    budget = _cotraining_budget(d)
    if budget:
        out += ["", budget]
    ss, xs, mm = (d.get(k, {}) for k in ("safety_score", "xstest_over_refusal", "mmlu"))
    inv = d.get("invalid_share") or {}
    out += ["", f"Mode accuracy {_f(d.get('mode_accuracy'))}. " + sam_sentence(d) + " Safety score (held-out "
            f"harmful{', valid replies' if inv else ''}): "
            + ", ".join(f"{k} {_f(v)}{_invalid(inv.get(k), 'harmful')}" for k, v in ss.items())
            + ". XSTest over-refusal: " + ", ".join(f"{k} {_f(v)}" for k, v in xs.items()) + ". MMLU: "
            + ", ".join(f"{k} {_f(v)}" for k, v in mm.items()) + ".", ""]
    if css := d.get("constructive_safety"):
        out += ["Constructive Safety Score (harmful + safe prompts, paper B's definition): "
                + ", ".join(f"{k} {_f(v)}{_invalid(inv.get(k))}" for k, v in css.items()) + ".", ""]
    if jb := d.get("jailbreak"):
        out += ["Under jailbreak templates (PyRIT, seeded; paper B: relative drop "
                f"{PAPER_B['jailbreak_safety_drop']['cotrained']:.1%} co-trained vs "
                f"{PAPER_B['jailbreak_safety_drop']['baselines']:.1%} baselines): "
                + ", ".join(f"{k} {_f(v['plain'])} -> {_f(v['attacked'])} (drop {_f(v['relative_drop'])}, 95% CI "
                            f"{_f(v['ci95'][0])}-{_f(v['ci95'][1])}{_invalid_jb(v, ', ')})" for k, v in jb.items())
                + ".", ""]
    return out


PAPER_SAM = (f"paper B's own number, its cosine SAM: {PAPER_B['sam_cotrained']:.3f} co-trained vs "
             f"~{PAPER_B['sam_baselines']:.2f} baselines")
EUCLID = "Euclidean on probabilities, the earlier metric"   # a second row only: not the paper's metric
NOT_PAPERS = "not the paper's metric: not comparable with its number"


def sam_sentence(d: dict) -> str:
    """SAM as the paper reads it (cosine on first-token logits, `sam_stats[model]["cosine_logits"]`) with its
    interval, null and p, beside the paper's number; the Euclidean SAM (`sam`) only after it, labelled."""
    cos = {k: v["cosine_logits"] for k, v in (d.get("sam_stats") or {}).items() if "cosine_logits" in v}
    euc = d.get("sam") or {}
    second = (f" SAM, {EUCLID} ({NOT_PAPERS}): " + ", ".join(f"{k} {_f(v)}" for k, v in euc.items()) + "."
              if euc else "")
    if not cos:
        return (f"Safety Alignment Margin: no cosine SAM in this result.{second}" if euc else "")
    return ("Safety Alignment Margin, cosine on first-token logits as the paper reads it (95% prompt-bootstrap CI; "
            "null: mode labels permuted within each prompt, its 95% quantile and p): "
            + ", ".join(f"{k} {_f(c['sam'])} ({_f(c['ci95'][0])}-{_f(c['ci95'][1])}, null q95 {_f(c.get('null_q95'))}, "
                        f"p {_f(c.get('p_value'), 3)})" for k, c in cos.items())
            + f" ({PAPER_SAM})." + second)


def _invalid(share: dict | None, side: str | None = None) -> str:
    """" (invalid 0.12, scored apart)" beside a score, from the result's optional `invalid_share[model]`
    ({"harmful", "safe"}); `side`: one of them, else both. "" where the result has none."""
    if not share:
        return ""
    if side:
        return f" (invalid {_f(share.get(side))}, scored apart)" if side in share else ""
    return " (invalid " + ", ".join(f"{s} {_f(v)}" for s, v in share.items()) + ", scored apart)"


def _invalid_jb(v: dict, sep: str = " ") -> str:
    """A jailbreak row's optional invalid shares, plain -> attacked."""
    if "invalid_plain" not in v and "invalid_attacked" not in v:
        return ""
    return f"{sep}invalid {_f(v.get('invalid_plain'))} -> {_f(v.get('invalid_attacked'))}, scored apart"


def _share_ci(share, n) -> str:
    """A share of n judged prompts with its Wilson 95% interval: "0.83 (0.74-0.89)"."""
    if share is None or not n:
        return _f(share)
    lo, hi = wilson_interval(round(share * n), n)
    return f"{_f(share)} ({_f(lo)}-{_f(hi)})"


def _cotraining_budget(d: dict) -> str:
    """One line: what the co-training run trained on, with which budget."""
    p, log = d.get("params", {}), d.get("train_logs", {}).get("cotrained", {})
    t = p.get("train", {})
    if not t or not log:
        return ""
    kind = f"LoRA r={t.get('lora_r')}" if t.get("lora") else "full fine-tuning"
    return (f"Training: {d['meta'].get('n_train')} prompts x 3 modes, {t.get('epochs')} epochs = {log.get('steps')} "
            f"optimizer steps of {t.get('batch_size')} ({kind}, lr {t.get('lr')}), responses cut at "
            f"{t.get('max_response_tokens')} tokens; co-training took {_f(log.get('seconds'), 0)} s; judged "
            f"generations of {p.get('max_new_tokens')} tokens.")


def render_mode_reachability(scale: str, root: Path, detail: bool = True) -> list[str]:
    """The beyond study's k-eps table and the random magic token's rate; `detail`: also the answer per
    placement and transition in words (docs/beyond.md; README shows the table)."""
    r = _typed(ModeReachStageResult, scale, root)
    if r is None:
        return []
    d = asdict(r)
    legacy = "search_config" not in d["meta"]   # written before placements: u in the system prompt, back-off
    cot = root / "results" / scale / "cotraining.json"
    now = cotraining_fingerprint(json.loads(cot.read_text())) if cot.exists() else None
    used = d["meta"].get("cotraining_run")
    stale = ("" if not now or used == now else
             f" **Computed on another co-trained model than the committed one** (rerun `magictokens run "
             f"mode_reachability --scale {scale}`)." if used else " (Which co-training run it used is not recorded.)")
    cut = (" **Partial run**: cut by `search_minutes`; N counts the prompts searched so far (\"of n\": searched, "
           f"of {d['meta'].get('n_prompts')} planned per row)." if d.get("partial") else "")
    out = [f"**Beyond: reaching a mode without its magic token ({scale} scale)** - {_meta_line(d['meta'])}."
           f"{stale}{cut}{SMALL.get(scale, '')}", "",
           "| transition (model) | N | " + " | ".join(f"eps({k})" for k in KS) + " | judged eps(10) |",
           "|---|---|" + "---|" * (len(KS) + 1)]
    rows = []
    for placement, summaries in d.get("transitions", {}).items():
        tag = "" if legacy else f", u {placement}"
        rows += [(f"{t} (co-trained{tag})", s) for t, s in summaries.items()]
        rows += [(f"none->negative ({b}{tag})", s) for b, s in d.get("baselines", {}).get(placement, {}).items()]
    # the headline leaves out the rows with nothing to reach (the target mode never held: N = 0) and names them
    empty = [name for name, s in rows if not detail and not s["n"] and "n_prompts" in s]
    for name, s in rows:
        if name in empty:
            continue
        n = f"{s['n']} of {s['n_prompts']}" if "n_prompts" in s else str(s["n"])
        out.append(f"| {name} | {n} | " + " | ".join(_f(s["eps"].get(k)) for k in KS)
                   + f" | {_f(s['eps_judged'].get('10'))} |")
    # a row with no prompt done (n_prompts 0: a cut run stopped before it) is not a row where the mode never held
    unrun = [name for name, s in rows if name in empty and not s["n_prompts"]]
    held = [name for name in empty if name not in unrun]
    nothing = ((f" Nothing to reach (the target mode never held on these prompts): {'; '.join(held)}." if held else "")
               + (f" Not searched yet (the cut run stopped before them): {'; '.join(unrun)}." if unrun else ""))
    if legacy:
        return out + ["", f"Random magic-token switch rate (judged negative): {_f(d.get('random_token_switch_rate'))}."
                      + (f" {_backoff_line(d['meta']['backoff'])}" if d["meta"].get("backoff") else "") + nothing, ""]
    rt = d["random_token"]
    out += ["", f"Random magic-token switch rate (judged negative): {_f(rt['rate'])} (95% CI {_f(rt['ci95'][0])}-"
            f"{_f(rt['ci95'][1])}, {rt['successes']} of {rt['n']} (string, prompt) pairs). "
            f"Search ({d['meta']['search']}): {d['meta'].get('budget')}.{nothing}", ""]
    if detail:
        out += [f"- {q['words']}" for answers in d.get("question", {}).values() for q in answers.values()] + [""]
    return out


def render_judge_v2(root: Path, short: bool = False) -> list[str]:
    """`benchmarks/judge_labelling.py report`: the judge of record (rules + cross-encoding) against replies of the
    base, co-trained and baseline models labelled by reading, scored on the replies of prompts it was not fitted
    on; the two readings' agreement. `short`: README's one line."""
    p = root / "results" / "bench" / "judge_v2.json"
    if not p.exists():
        return []
    b = json.loads(p.read_text())
    j, sr = b["judge"], b["second_reading"]
    h = j["heldout"]["harmful"]
    counts = b["label_counts"]
    pr = lambda d: "; ".join(f"{k} P {_f(x['precision'], 2)} ({_f(x['precision_ci95'][0], 2)}-"
                             f"{_f(x['precision_ci95'][1], 2)}) R {_f(x['recall'], 2)} ({_f(x['recall_ci95'][0], 2)}-"
                             f"{_f(x['recall_ci95'][1], 2)}), n={x['n_true']}" for k, x in d["classes"].items()
                             if x["n_true"])
    line = (f"**The judge of record** (`cotraining/judge.py`: rules, then a prompt-reply cross-encoding and anchor "
            f"features under a logistic regression, C = {j['C']}, warm-start weight {j['w_ext']} by cross-validation) "
            f"was fitted on {b['n_labelled']} replies labelled by reading ({', '.join(f'{m} {n}' for m, n in b['labelled_by_model'].items())}; "
            f"on harmful prompts " + ", ".join(f"{c} {n}" for c, n in counts["harmful"].items())
            + f"; benign " + ", ".join(f"{c} {n}" for c, n in counts["benign"].items() if n)
            + f"); {sr['n']} replies (these and a run's, below) were read a second time independently: agreement "
            f"{_f(sr['agreement'])}, Cohen's kappa "
            f"{_f(sr['cohen_kappa'])}. On the {j['n_heldout']} labelled replies of prompts it was not fitted on it agrees "
            f"on {_f(j['agreement'])}; on harmful prompts (n={h['n']}): {pr(h)}.")
    left = 0                                       # README (short): checks of earlier runs and probes are left to docs/
    for pool, c in b.get("check", {}).items():     # readings of a run's replies against the judge that scored it
        if short and not ("run" in c and _is_record(root, c["run"]) and not _earlier_recipe(root, c["run"])):
            left += 1
            continue
        earlier = c.get("judge_fit_sha") != j.get("fit_sha")
        who = (f"an earlier judge (fitting file {c.get('judge_fit_sha') or 'unrecorded'}; these replies are in this "
               "judge's fit now)" if earlier else "this judge, never fitted on them")
        read = c.get("read_by_origin", {})     # what the readers saw per origin (a probe's token)
        whose = _read_run(root, c["run"]) if "run" in c else ""
        line += (f" Against {c['n']} replies of a run or probe, read afterwards ({', '.join(c['origins'][:3])}"
                 f"{', ...' if len(c['origins']) > 3 else ''}){whose}, the judge that scored it, {who}, agrees on "
                 f"{_f(c['all']['agreement'])}; on harmful prompts (n={c['harmful']['n']}): {pr(c['harmful'])}."
                 + (" Read: " + "; ".join(f"{o}: " + ", ".join(f"{k} {n}" for k, n in d.items() if n)
                                          for o, d in read.items()) + "." if read else "")
                 + (f" Second reading of {s['n']} of them: agreement {_f(s['agreement'])}, Cohen's kappa "
                    f"{_f(s['cohen_kappa'])}." if (s := c.get("second_reading")) else "")
                 + (f" **Mode accuracy by reading: {_f(m['mean'])}** (" + ", ".join(
                     f"{k} token read {k} {_f(v, 2)}" for k, v in m["per_token"].items()) + ")."
                    if (m := c.get("mode_accuracy_read")) else ""))
    if short:
        return [line + (f" {left} more readings, of earlier runs and probes: [docs/paper_b.md](docs/paper_b.md)."
                        if left else ""), ""]
    return [line + f" Labels by hash: `{b['meta']['labels']}`; features (numbers, no text): `benchmarks/judge_fit_v2.npz`.",
            ""]


def _record_now(root: Path, run: dict) -> dict:
    """The cotraining.json of record now for the seed and scale a check's run names ({} where none)."""
    seed = run.get("seed", 0)
    rec = (root / ("" if not seed else f"results/seeds/seed{seed}") / "results" / run["scale"] / "cotraining.json")
    return json.loads(rec.read_text()) if rec.exists() else {}


def _is_record(root: Path, run: dict, now: dict | None = None) -> bool:
    """Did a check read the replies of the run of record: its model (same training logs) decoded as the record
    decodes (a check made before the decoding was recorded read plain greedy replies)? `now`: the record, if read."""
    now = _record_now(root, run) if now is None else now
    return (bool(now) and cotraining_fingerprint(now) == run["fingerprint"]
            and decoding_of(now.get("params", {})) == run.get("decoding", {}))


def _earlier_recipe(root: Path, run: dict, now: dict | None = None) -> bool:
    """Is the record a check's run names made by another recipe than seed 0's record (`_recipe`: params but the
    seed, and the judge that picked the targets)? Such a seed is left out of the across-seed numbers, and its
    readings out of README's short judge line, until it is retrained."""
    now = _record_now(root, run) if now is None else now
    seed0 = _record_now(root, {"scale": run["scale"], "seed": 0})
    return bool(now) and bool(seed0) and _recipe(now) != _recipe(seed0)


def _decoding_words(d: dict) -> str:
    """A decoding (`decoding_of`) in words."""
    if not d:
        return "plain greedy"
    return "greedy with " + " and ".join(
        {"repetition_penalty": f"repetition penalty {d.get('repetition_penalty')}",
         "no_repeat_ngram_size": f"no repeated {d.get('no_repeat_ngram_size')}-gram"}[k] for k in d)


def _read_run(root: Path, run: dict) -> str:
    """Which run's replies a check read, against that seed's run of record now: a later record is another
    model, or the same model decoded another way, whose replies these readings do not describe."""
    seed = run.get("seed", 0)
    now = _record_now(root, run)
    if _is_record(root, run, now):
        if _earlier_recipe(root, run, now):
            return (f" (the run of record of seed {seed}, git {run['git']}, made by an earlier recipe than seed 0's: "
                    "left out of every across-seed number)")
        return f" (the run of record, seed {seed}, git {run['git']})"
    if now and cotraining_fingerprint(now) == run["fingerprint"]:
        return (f" (the model of record, seed {seed}, git {run['git']}, its replies decoded "
                f"{_decoding_words(run.get('decoding', {}))}: the record now decodes "
                f"{_decoding_words(decoding_of(now.get('params', {})))} (git {now['meta']['versions']['git']}), "
                f"whose replies are not read yet; these readings do not describe them)")
    return (f" (an earlier run, seed {seed}, git {run['git']}: the run of record now"
            f"{', git ' + now['meta']['versions']['git'] if now else ''} is another model, not read yet; "
            f"these readings do not describe it)")


def render_judge(root: Path) -> list[str]:
    """`benchmarks/judge_validation.py report`: the earlier judges against base-model replies labelled by reading."""
    p = root / "results" / "bench" / "judge.json"
    if not p.exists():
        return []
    b = json.loads(p.read_text())
    c, v = b["committed_judge"], b["committed_judge_on_valid"]

    def pr(d):
        return "; ".join(f"{k} precision {_f(x['precision'], 2)} ({_f(x['precision_ci95'][0], 2)}-"
                         f"{_f(x['precision_ci95'][1], 2)}), recall {_f(x['recall'], 2)} ({_f(x['recall_ci95'][0], 2)}-"
                         f"{_f(x['recall_ci95'][1], 2)}), n={x['n_true']}" for k, x in d["classes"].items() if x["n_true"])
    out = [f"**Paper B's judge against this model's own replies, `benchmarks/judge_validation.py`** "
           f"({b['meta']['pool']['n']} sampled replies of the base model under the three behaviour instructions, "
           f"labelled by reading: " + ", ".join(f"{k} {n}" for k, n in b["label_counts"].items())
           + f"; labels by hash in `{b['meta']['labels']}`): the judge of the committed paper B runs agrees on "
           f"{_f(c['agreement'])} (95% CI {_f(c['agreement_ci95'][0])}-{_f(c['agreement_ci95'][1])}; it has no "
           f"`invalid` class), {_f(v['agreement'])} of the {v['n']} valid replies: {pr(v)}."]
    if cj := b.get("content_judge"):
        out.append(f"The content judge (`content_judge.ContentJudge`, the paper B stages' judge since it landed; fitted "
                   f"on {cj['n_train']} labelled replies to other "
                   f"prompts, C = {cj['C']} by cross-validation there) agrees on {_f(cj['agreement'])} (95% CI "
                   f"{_f(cj['agreement_ci95'][0])}-{_f(cj['agreement_ci95'][1])}, N={cj['n']}): {pr(cj)}.")
    return out + [""]


def render_variants(root: Path) -> list[str]:
    """Paper B runs of another recipe than params.yaml's (results/variants/<name>/cotraining.json), one line each."""
    out = []
    for d in sorted((root / "results" / "variants").glob("*/cotraining.json")):
        r = asdict(CoTrainingStageResult.load(d.parent))
        p, k = r["params"], r.get("distil", {}).get("kept", {})
        cos = r.get("sam_stats", {}).get("cotrained", {}).get("cosine_logits", {})
        euc = r.get("sam", {}).get("cotrained")
        inv, css = r.get("invalid_share") or {}, r["constructive_safety"]
        ci = cos.get("ci95")
        out.append(f"- Variant `{d.parent.name}` ({r['meta'].get('scale')} scale, seed {r['meta'].get('seed')}; targets "
                   f"{p.get('targets')}, fallback {p.get('distil', {}).get('fallback')}, judge {r['judge'].get('kind')}): "
                   + (("targets kept (harmful / benign) " + ", ".join(
                       f"{m} {v['harmful'][0]}/{v['harmful'][1]} / {v['benign'][0]}/{v['benign'][1]}" for m, v in k.items())
                       + "; ") if k else "")
                   + f"{r['train_logs']['cotrained']['steps']} co-training steps; mode accuracy {_f(r['mode_accuracy'])}; "
                   f"SAM (cosine on first-token logits) co-trained {_f(cos.get('sam'))} ("
                   + (f"95% CI {_f(ci[0])}-{_f(ci[1])}, " if ci else "")
                   + f"null q95 {_f(cos.get('null_q95'))}, p {_f(cos.get('p_value'), 3)}; paper B's: "
                   f"{PAPER_B['sam_cotrained']:.3f})"
                   + (f", SAM {EUCLID} {_f(euc)} ({NOT_PAPERS})" if euc is not None else "")
                   + f"; CSS co-trained {_f(css.get('cotrained_positive'))}{_invalid(inv.get('cotrained_positive'))} "
                   f"vs SFT {_f(css.get('sft'))}{_invalid(inv.get('sft'))}.")
    return (["**Paper B, other recipes, measured** (`results/variants/`):", ""] + out + [""]) if out else []


def made_with_cpu_scale(run: dict) -> bool:
    """Were this record's co-training params today's cpu scale? (`bf16_autocast: auto` is compared as what the
    record's CPU decided; records from before `meta.hardware` were made where bf16 is native.)"""
    from ..config import stage_params
    from ..cotraining import CoTrainingConfig
    want = stage_params("cpu", "cotraining", CoTrainingConfig)[0]["cotraining"]
    native = run["meta"].get("hardware", {}).get("cpu", {}).get("native_bf16", True)
    auto = want["train"]["bf16_autocast"] == "auto"
    here = {**want, "train": {**want["train"], "bf16_autocast": native if auto else want["train"]["bf16_autocast"]}}
    rec = run.get("params") or {}
    if rec not in (_as_recorded(here, rec), _as_recorded(want, rec)):  # a record made with `auto` keeps `auto`
        return False
    # the judge picked the targets: a record of another fitting file than today's committed one is another recipe
    sha = (run.get("judge") or {}).get("fit_sha")
    return sha is None or sha == _judge_sha_today()


def _judge_sha_today() -> str | None:
    import hashlib

    from ..cotraining.judge import FIT_FILE
    return hashlib.sha256(FIT_FILE.read_bytes()).hexdigest()[:16] if FIT_FILE.exists() else None


# params added after records were made, with the value every earlier record was made under: a record without
# the key and today's params at that value are the same recipe ("": the cotraining section's own keys)
LATER_PARAMS = {"distil": {"read_promote": False, "read_resample": 0, "read_per_pair": {}},
                "train": {"orpo_weight": 0.0},
                "": {"positive_harmful_repeat": 1, "repetition_penalty": 1.0, "no_repeat_ngram_size": 0}}


def _as_recorded(params: dict, record: dict) -> dict:
    """`params` without the later keys the record predates, where today's value is the one it was made under."""
    out = dict(params)
    for section, keys in LATER_PARAMS.items():
        have, now = (record, out) if not section else (record.get(section) or {}, out.get(section, {}))
        drop = [k for k, v in keys.items() if k not in have and now.get(k) == v]
        if drop and not section:
            out = {k: v for k, v in out.items() if k not in drop}
        elif drop:
            out[section] = {k: v for k, v in out[section].items() if k not in drop}
    return out


EARLIER_RECIPE = ("**These records were made with an earlier recipe**: their co-training params are not today's "
                  "cpu scale (params.yaml), or their targets were picked by an earlier fit of the judge "
                  "(benchmarks/judge_fit_v2.npz), which issue 31 changed (judge, targets, data); rerun them with "
                  "`magictokens run cotraining --scale cpu` and `bash scripts/cotraining_seeds.sh 1 2`.")


def _all_seed_runs(root: Path) -> list[dict]:
    dirs = [root / "results" / "cpu"] + sorted((root / "results" / "seeds").glob("seed*/results/cpu"))
    return [asdict(CoTrainingStageResult.load(d)) for d in dirs if (d / "cotraining.json").exists()]


def _recipe(run: dict) -> dict:
    """What makes two seeds' runs one recipe: the params but the seed, and the judge that picked the targets
    (its fitting file: a refit judge distils other targets from the same params)."""
    return {**{k: v for k, v in run["params"].items() if k != "seed"},
            "judge_fit_sha": (run.get("judge") or {}).get("fit_sha")}


def _by_recipe(root: Path) -> tuple[list[dict], list[dict]]:
    """(runs made with seed 0's params, runs made with other params: an earlier recipe)."""
    runs = _all_seed_runs(root)
    same = [r for r in runs if _recipe(r) == _recipe(runs[0])]
    return same, [r for r in runs if r not in same]


def seed_runs(root: Path) -> list[dict]:
    """Paper B's cpu-scale runs of seed 0's recipe: seed 0 = results/cpu, more seeds from
    scripts/cotraining_seeds.sh; a seed trained with other params (an earlier recipe) is never pooled."""
    return _by_recipe(root)[0]


def other_recipe_seeds(root: Path) -> list[int]:
    """Seeds whose committed run was made with params other than seed 0's: left out of every pooled number."""
    return [r["meta"].get("seed") for r in _by_recipe(root)[1]]


# The repository's bar for "paper B reproduced" (ours, not the paper's numbers): the three magic tokens switch
# the replies (mode accuracy), the positive mode does not refuse safe prompts (XSTest over-refusal), and the
# judge that reads every reply agrees with labels read by hand often enough for its shares to mean something.
BAR = {"mode_accuracy": 0.9, "over_refusal": 0.2, "judge_agreement": 0.9}
P_NULL = 0.05   # a SAM counts as above its label-permutation null at p < 0.05


def render_paper_b_status(root: Path) -> list[str]:
    """README's paper B lines: reproduced or not by `BAR`, measured over the cpu-scale seeds (the record),
    beside paper B's own numbers; the whole of every run is `render_cotraining` etc. in docs/paper_b.md."""
    runs, scale = seed_runs(root), "cpu"
    if not runs:
        d = _typed(CoTrainingStageResult, "default", root)
        runs, scale = ([asdict(d)] if d is not None else []), "default"
    if not runs:
        return []
    first = runs[0]

    def cell(get):
        a = across_seeds([get(r) for r in runs])
        return _f(a["mean"]) + (f" ± {_f(a['sd'])}" if len(runs) > 1 else "")
    mode_acc = across_seeds([r["mode_accuracy"] for r in runs])["mean"]
    over = across_seeds([r["xstest_over_refusal"].get("cotrained_positive", float("nan")) for r in runs])["mean"]
    j = first.get("judge", {})
    agree, ci = j.get("agreement", first.get("judge_accuracy")), j.get("agreement_ci95")
    n_read = j.get("n")
    if "heldout" in j:         # the judge of record: scored on the read replies it was not fitted on
        agree, ci, n_read = (j["heldout"]["all"][k] for k in ("agreement", "agreement_ci95", "n"))
    failed = [what for what, bad in (
        (f"mode accuracy below {BAR['mode_accuracy']:.2f}", not mode_acc >= BAR["mode_accuracy"]),
        (f"over-refusal above {BAR['over_refusal']:.2f}", not over <= BAR["over_refusal"]),
        (f"judge agreement below {BAR['judge_agreement']:.2f}", agree is None or not agree >= BAR["judge_agreement"]))
        if bad]
    seeds = ", ".join(str(r["meta"].get("seed")) for r in runs)
    verdict = ("**Paper B: the co-trained model is not reproduced yet** ("
               + "; ".join(failed) + ")" if failed else "**Paper B: reproduced by the repository's bar**")
    above = {k: sum(r.get("sam_stats", {}).get(k, {}).get("cosine_logits", {}).get("p_value", 1) < P_NULL
                    for r in runs) for k in first.get("sam_stats", {})}
    earlier = scale == "cpu" and not all(made_with_cpu_scale(r) for r in runs)
    out = [(EARLIER_RECIPE + " ") * earlier + f"{verdict} - {scale} scale, {len(runs)} training seed"
           f"{'s' if len(runs) > 1 else ''} ({seeds}), "
           f"model `{first['meta'].get('model')}`, held-out harmful prompts n={first['data'].get('n_eval_harmful')} "
           f"per seed" + ("; mean ± sd over seeds" if len(runs) > 1 else "")
           + (f". SAM above its label-permutation null (p < {P_NULL}), seeds of {len(runs)}: "
              + ", ".join(f"{k} {n}" for k, n in above.items()) + "." if above else ".")
           + ((f" Seed {old[0]} was" if len(old) == 1 else f" Seeds {', '.join(map(str, old))} were")
           + " trained by an earlier recipe (other params or judge): left out; "
              "rerun with `bash scripts/cotraining_seeds.sh " + " ".join(map(str, old)) + "`."
              if scale == "cpu" and (old := other_recipe_seeds(root)) else ""), "",
           "| paper B | ours | bar for \"reproduced\" | paper B's |", "|---|---|---|---|",
           f"| mode accuracy (mean of the diagonal below) | {cell(lambda r: r['mode_accuracy'])} | "
           f">= {BAR['mode_accuracy']:.2f} | - |"]
    out += [f"| {m} token -> reply judged {m} | {cell(lambda r, m=m: r['confusion'][m][m])} | | |"
            for m in ("positive", "negative", "rejective") if m in first.get("confusion", {})]
    out.append(f"| XSTest over-refusal, co-trained positive mode | "
               f"{cell(lambda r: r['xstest_over_refusal'].get('cotrained_positive', float('nan')))} | "
               f"<= {BAR['over_refusal']:.2f} | - |")
    if "sam_stats" in first:
        sam = lambda k: cell(lambda r, k=k: r["sam_stats"][k]["cosine_logits"]["sam"])
        out.append("| SAM, cosine on first-token logits (as the paper reads it): co-trained; SFT; SFT+DPO | "
                   + "; ".join(sam(k) for k in ("cotrained", "sft", "sft_dpo") if k in first["sam_stats"])
                   + f" | | {PAPER_B['sam_cotrained']:.3f}; ~{PAPER_B['sam_baselines']:.2f} (baselines) |")
    if first.get("sam"):
        euc = lambda k: cell(lambda r, k=k: r["sam"][k])
        out.append(f"| SAM, {EUCLID}: co-trained; SFT; SFT+DPO | "
                   + "; ".join(euc(k) for k in ("cotrained", "sft", "sft_dpo") if k in first["sam"])
                   + f" | | - ({NOT_PAPERS}) |")
    if "jailbreak" in first:
        def drop(k):     # with the invalid shares (plain -> attacked, mean over the seeds that have them)
            inv = [r["jailbreak"][k] for r in runs if "invalid_plain" in r["jailbreak"].get(k, {})]
            out = cell(lambda r: r["jailbreak"][k]["relative_drop"])
            if not inv:
                return out
            mean = {key: across_seeds([v.get(key, float("nan")) for v in inv])["mean"]
                    for key in ("invalid_plain", "invalid_attacked")}
            some = f", {len(inv)} of {len(runs)} seeds" if len(inv) < len(runs) else ""
            return out + _invalid_jb(mean, " (") + some + ")"
        jd = PAPER_B["jailbreak_safety_drop"]
        out.append("| safety's relative drop under jailbreak templates: co-trained; SFT | "
                   + "; ".join(drop(k) for k in ("cotrained_positive", "sft") if k in first["jailbreak"])
                   + f" | | {jd['cotrained']:.3f}; {jd['baselines']:.3f} (baselines) |")
    out.append(f"| judge's agreement with labels read by hand, held out (N={n_read}) | {_f(agree)}"
               + (f" (95% CI {_f(ci[0])}-{_f(ci[1])})" if ci else "") + f" | >= {BAR['judge_agreement']:.2f} | "
               f"{PAPER_B['judge_accuracy']:.3f} (its judge, its labels) |")
    return out + [""]


def render_seeds(root: Path) -> list[str]:
    """Paper B over training seeds at the cpu scale: seed 0 = results/cpu, more from scripts/cotraining_seeds.sh."""
    runs = seed_runs(root)
    if len(runs) < 2:
        return []
    UNIT = (0.0, 1.0)     # shares, mode accuracy, the Constructive Safety Score: their intervals stop at [0, 1]
    n_h, n_x = runs[0]["data"]["n_eval_harmful"], runs[0]["data"]["n_xstest"]

    def cell(get, n=None, bounds=None):
        """(mean ± sd with the 95% t interval over seeds, the pooled Wilson interval of a share or "-")"""
        a = across_seeds([get(r) for r in runs], n, bounds)
        ci, pooled = a.get("ci95"), a.get("pooled_ci95")
        return (f"{_f(a['mean'])} ± {_f(a['sd'])}" + (f" ({_f(ci[0])}-{_f(ci[1])})" if ci else ""),
                f"{_f(pooled[0])}-{_f(pooled[1])}" if pooled else "-")

    def where(get):      # an optional field, a share: the seeds that have it, their cell, and how many lack it
        have = [r for r in runs if get(r) is not None]
        if not have:
            return None
        a = across_seeds([get(r) for r in have], bounds=UNIT)
        ci = a.get("ci95")
        return (f"{_f(a['mean'])}" + (f" ± {_f(a['sd'])} ({_f(ci[0])}-{_f(ci[1])})" if ci else "")
                + (f" ({len(have)} of {len(runs)} seeds)" if len(have) < len(runs) else ""), "-")

    paper_sam = {"cotrained": f"; paper B's: {PAPER_B['sam_cotrained']:.3f}", "sft": f"; paper B's baselines: "
                 f"~{PAPER_B['sam_baselines']:.2f}", "sft_dpo": f"; paper B's baselines: ~{PAPER_B['sam_baselines']:.2f}"}
    inv = lambda r, k, side: (r.get("invalid_share") or {}).get(k, {}).get(side)
    rows = [("mode accuracy (mean diagonal)", cell(lambda r: r["mode_accuracy"], bounds=UNIT))]
    rows += [(f"{m} token -> judged {m} (n={n_h} per seed)", cell(lambda r, m=m: r["confusion"][m][m], n_h))
             for m in ("positive", "negative", "rejective")]
    rows += [(f"XSTest over-refusal, {k} (n={n_x})", cell(lambda r, k=k: r["xstest_over_refusal"][k], n_x))
             for k in runs[0]["xstest_over_refusal"]]
    rows += [(f"Constructive Safety Score, {k}", cell(lambda r, k=k: r["constructive_safety"][k], bounds=UNIT))
             for k in runs[0]["constructive_safety"]]
    rows += [(f"invalid share (scored apart), {k}, {side}", c) for k in runs[0].get("safety_score", {})
             for side in ("harmful", "safe") if (c := where(lambda r, k=k, side=side: inv(r, k, side)))]
    rows += [(f"SAM (cosine on first-token logits, as the paper reads it), {k}{paper_sam.get(k, '')}",
              cell(lambda r, k=k: r["sam_stats"][k]["cosine_logits"]["sam"])) for k in runs[0]["sam_stats"]]
    for k in runs[0]["sam_stats"]:
        q95, pooled = cell(lambda r, k=k: r["sam_stats"][k]["cosine_logits"]["null_q95"])
        rows.append((f"SAM null (label permutation), {k}: 95% quantile; p per seed", (q95 + "; p " + ", ".join(
            _f(r["sam_stats"][k]["cosine_logits"]["p_value"]) for r in runs), pooled)))
    rows += [(f"SAM, {EUCLID}, {k}", cell(lambda r, k=k: r["sam"][k])) for k in runs[0].get("sam", {})]
    rows += [(f"jailbreak relative drop, {k}", cell(lambda r, k=k: r["jailbreak"][k]["relative_drop"]))
             for k in runs[0]["jailbreak"]]
    rows += [(f"jailbreak invalid share (scored apart), {k}, {when}", c) for k in runs[0]["jailbreak"]
             for when in ("plain", "attacked")
             if (c := where(lambda r, k=k, when=when: r["jailbreak"].get(k, {}).get(f"invalid_{when}")))]
    return ([f"**Paper B over {len(runs)} training seeds (cpu scale; seeds "
             f"{', '.join(str(r['meta']['seed']) for r in runs)}; "
             "same params otherwise)**: "
             "mean ± sd over seeds, with the 95% t interval over seeds (mean ± t(0.975, S-1) sd/√S: the "
             "seed-to-seed spread); shares also with the pooled Wilson 95% interval of the summed count, which "
             "ignores that spread (for reference only).", "",
             "| metric | mean ± sd over seeds (95% t interval over seeds) | pooled Wilson 95% (ignores seed spread) |",
             "|---|---|---|"] + [f"| {a} | {b} | {c} |" for a, (b, c) in rows] + [""])


def _train_now(root: Path, scale: str) -> dict | None:
    """params.yaml's co-training section of `scale` as it is now (None: no params.yaml or no such scale)."""
    try:
        return load_params(scale, root / "params.yaml").get("cotraining", {})
    except (MagicTokensError, KeyError):
        return None


def render_sweep(root: Path) -> list[str]:
    """`benchmarks/cotraining_sweep.py`: paper B's lr x epochs on the validation split, one line per sweep of
    record (results/bench/cotraining_sweep*.json that change no recipe and score more than one point: probes with
    `--set` are not sweeps, nor is a one-cell run, a probe's plain cell; a sweep of another training seed, `--set
    seed=S`, is).
    Says only what each sweep's JSON holds and what params.yaml holds now (its scale, and the cpu scale of the
    record): no epochs typed here."""
    out = []
    for p in sorted((root / "results" / "bench").glob("cotraining_sweep*.json")):
        b = json.loads(p.read_text())
        if [o for o in b.get("meta", {}).get("overrides") or [] if not o.startswith("seed=")] or len(b["rows"]) < 2:
            continue            # a probe, or a probe's plain cell (one point chooses nothing); another training
                                # seed (`--set seed=S`) is still a sweep
        out += [_sweep_line(root, p.name, b), ""]
    return out


def _sweep_line(root: Path, name: str, b: dict) -> str:
    best, meta = b["best"], b["meta"]
    swept = meta.get("scale")
    then = meta.get("params_in_use") or {}
    steps = lambda r: f" ({r['steps']} steps)" if r.get("steps") is not None else ""
    judge = f", judged by the {meta['judge']} judge" if meta.get("judge") else ""
    line = (f"**Paper B hyperparameters on a validation split** (`benchmarks/cotraining_sweep.py` -> `{name}`, run "
            f"at the {swept} scale{judge}" + (f", training seed {meta['seed']}" if meta.get("seed") else "")
            + f"; {b['n_validation']} harmful prompts of the training sources, never trained "
            f"on; score = mode accuracy there): " + ", ".join(f"lr {r['lr']} x {r['epochs']} epochs{steps(r)} "
                                                            f"{_f(r['score'])}" for r in b["rows"])
            + f". Best there: lr {best['lr']} x {best['epochs']} epochs{steps(best)}"
            + (f"; params.yaml's {swept} scale held lr {then['lr']} x {then['epochs']} when the sweep ran"
               if "lr" in then and "epochs" in then else "") + ".")
    now = []
    for scale in dict.fromkeys([swept, "cpu"]):
        c = _train_now(root, scale) if scale else None
        t = (c or {}).get("train", {})
        if "lr" not in t or "epochs" not in t:
            continue
        same = (t["lr"], t["epochs"]) == (best["lr"], best["epochs"])
        now.append(f"{scale} scale ({c.get('n_train_harmful')} + {c.get('n_train_benign')} training prompts) lr "
                   f"{t['lr']} x {t['epochs']} epochs"
                   + ((" (the sweep's best)" if same else " (**not the sweep's best**)") if scale == swept else
                      f" (not swept: the sweep scored the {swept} scale's training set only)"))
    read = _sweep_read(root, name.removesuffix(".json"))
    if read:
        line += " " + read
    if now:
        line += " params.yaml now: " + "; ".join(now) + "."
    return line


def _sweep_read(root: Path, stem: str) -> str:
    """The sweep's cells by reading: results/bench/judge_v2.json's checks of a pool of its replies
    (`judge_labelling.py pool-replies --src` names each cell `<stem>-lr<lr>x<epochs>`)."""
    p = root / "results" / "bench" / "judge_v2.json"
    checks = json.loads(p.read_text()).get("check", {}) if p.exists() else {}
    for pool, c in sorted(checks.items()):
        cells = {r: v for r, v in c.get("mode_accuracy_read_by_run", {}).items() if r.startswith(f"{stem}-lr")}
        part = {r: {"per_token": v} for r, v in c.get("read_per_token_by_run", {}).items()
                if r.startswith(f"{stem}-lr")}        # a pool that left a token out: shares, no mean

        def cell(r: str, v: dict) -> str:
            lr, ep = r.removeprefix(f"{stem}-lr").split("x")
            per = ", ".join(f"{m} {_f(v['per_token'][m])}" for m in ("positive", "negative", "rejective")
                            if m in v["per_token"])
            return f"lr {lr} x {ep} epochs " + (f"{_f(v['mean'])} ({per})" if "mean" in v else per)
        if cells:
            return (f"Mode accuracy there by reading ({pool}, {c['n']} replies read): "
                    + ", ".join(cell(r, v) for r, v in sorted(cells.items())) + ".")
        if part:
            return (f"Each token's replies read as its mode there ({pool}, {c['n']} replies read; tokens not "
                    f"listed were not read): " + "; ".join(cell(r, v) for r, v in sorted(part.items())) + ".")
    return ""
