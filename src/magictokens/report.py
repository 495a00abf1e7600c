"""The README's numbers, rendered from results/*.json (never typed by hand).

``magictokens report`` rewrites the block between ``<!-- results:begin -->``
and ``<!-- results:end -->`` in README.md; a test checks that the block is
what the committed results say.
"""
from __future__ import annotations

import json
import re
from dataclasses import asdict
from pathlib import Path

from .config import REPO_ROOT, flatten
from .errors import MagicTokensError
from .metrics import across_seeds, wilson_interval
from .papers import K_KEYS as KS
from .papers import PAPER_A, PAPER_B
from .stages.cotraining import CoTrainingStageResult
from .stages.mode_reachability import ModeReachStageResult, cotraining_fingerprint
from .stages.reachability import ReachabilityResult
from .stages.theorem import TheoremStageResult

BEGIN, END = "<!-- results:begin -->", "<!-- results:end -->"


def _load(scale: str, name: str, root: Path):
    p = root / "results" / scale / f"{name}.json"
    return json.loads(p.read_text()) if p.exists() else None


def _typed(cls, scale: str, root: Path):
    """A stage's committed result, loaded (and validated) through its type; None if the stage has not run."""
    try:
        return cls.load(root / "results" / scale)
    except MagicTokensError:
        return None


def _f(x, nd=3):
    if x is None:
        return "-"
    if isinstance(x, float) and x != x:
        return "nan"
    return f"{x:.{nd}f}" if isinstance(x, (int, float)) else str(x)


def _meta_line(meta: dict) -> str:
    v = meta.get("versions", {})
    sets = flatten(meta.get("overrides") or {})
    return (f"model `{meta.get('model')}`, seed {meta.get('seed')}, device {meta.get('device')}, "
            f"torch {v.get('torch')}, transformers {v.get('transformers')}"  # the commit is in the JSON
            + (", run with " + " ".join(f"`--set {k}={v}`" for k, v in sets.items()) if sets else ""))



def render_reachability(scale: str, root: Path) -> list[str]:
    out_dir = root / "results" / scale
    if not (out_dir / "reachability.json").exists():
        return []
    r = ReachabilityResult.load(out_dir)
    fam = {f: r.family(f) for f in ("true_token", "top75", "uniform_rank")}
    partial = ""
    if r.partial:
        partial = (" **Partial run**: the searches were cut by a time limit; finished "
                   + ", ".join(f"{fam[f].n} of {r.n_planned.get(f)} {f}" for f in fam)
                   + " instances (a seeded random subset; figures marked).")
    out = [f"**Paper A, reachability ({scale} scale)** - {_meta_line(r.meta)}.{partial}", "",
           "| eps(k) | " + " | ".join(f"k={k}" for k in KS) + " |", "|---|" + "---|" * len(KS)]

    def eps(f, k):   # "-" for a family a cut run never reached (its eps are placeholders)
        return _f(fam[f].eps.get(k)) if fam[f].n else "-"
    for f, label in (("true_token", "true next token"), ("top75", "top-75 targets"),
                     ("uniform_rank", "uniform-rank targets")):
        out.append(f"| ours: {label}, N={fam[f].n}{'' if fam[f].n else ' (not searched)'} | "
                   + " | ".join(eps(f, k) for k in KS) + " |")
    g = PAPER_A["gpt2_small_eps"]
    out.append("| paper: GPT-2 small, true token | " + " | ".join(_f(g.get(int(k))) for k in KS) + " |")
    cut = [(f, c0) for f, c0 in r.k0_census.items() if c0.n > fam[f].n]
    if cut:
        out += ["", "k = 0 needs no search, so eps(0) is known over every planned instance: "
                + "; ".join(f"{f} {_f(c0.eps0)} (95% CI {_f(c0.ci95[0])}-{_f(c0.ci95[1])}, N={c0.n})" for f, c0 in cut)
                + f" (paper GPT-2 small, true token: {_f(g[0])})."]

    def reached(f):   # portion reachable at k <= 10, with its interval
        if not fam[f].n:
            return "-"
        lo, hi = fam[f].ci95["10"]
        return _f(1 - fam[f].eps["10"]) + f" (95% CI {_f(1 - hi)}-{_f(1 - lo)}, N={fam[f].n})"
    ci = fam["true_token"].ci95.get("10")
    c = r.correlations
    (lo75, hi75), (lol, hil), (lor, hir) = PAPER_A["top75_reachable_k10"], PAPER_A["corr_loss_k"], PAPER_A["corr_rank_k"]
    out += ["", f"True token eps(10) = {eps('true_token', '10')}"
            + (f" (95% {fam['true_token'].interval} CI {_f(ci[0])}-{_f(ci[1])})" if ci and fam["true_token"].n else "")
            + "; paper: " + ", ".join(f"{m} {v:.3f}" for m, v in PAPER_A["eps10"].items()) + ". "
            f"Top-75 reachable at k <= 10: {reached('top75')} (paper {lo75:.2f}-{hi75:.2f}); "
            f"uniform-rank: {reached('uniform_rank')} (paper {PAPER_A['uniform_reachable_k10']:.2f}). "
            f"Pearson r(base loss, k) = {_f(c.get('loss_k'), 2)}, r(base rank, k) = {_f(c.get('rank_k'), 2)} "
            f"over {c.get('n_solved')} solved true-token instances (paper {lol:.2f}-{hil:.2f} and {lor:.2f}-{hir:.2f}).",
            ""]
    d = {"meta": r.meta, "verify": r.verify, "retokenizes": r.retokenizes}
    b = d["meta"].get("backoff", {})
    if v := d.get("verify"):
        near = d["meta"].get("search", {}).get("coordinate", {}).get("verify_near", -0.5)
        out += [f"fp32 verification: {v['checked']} candidates re-checked, {v['false_positive']} bf16 successes rejected, "
                f"{v['unchecked_near']} near candidates (bf16 margin > {near:g}) left off the shortlist; u + x0 "
                f"re-tokenizes to itself for {_f(d.get('retokenizes'), 3)} of the solved prompts.", ""]
    if d["meta"].get("budget"):
        out += [f"Search: {d['meta']['budget']}. {d['meta'].get('success_rule', '')}", ""]
    elif b:
        out += [_backoff_line(b), ""]
    s = _load(scale, "speed", root)
    if s:
        rates = " and ".join(f"{m} {_f(s[f'{m}_candidates_per_s'], 0)}" for m in ("greedy", "gcg", "k1", "coordinate")
                             if f"{m}_candidates_per_s" in s)
        evals = (f"; per searched instance (k > 0, N={s['n_searched']}): median {_f(s['evals_per_searched_median'], 0)} "
                 f"candidate evaluations, {_f(s['seconds_per_searched_median'], 1)} s" if s.get("n_searched") else "")
        out += [f"Speed ({s['device']}): back-off median {_f(s['backoff_median_s'], 2)} s, p90 "
                f"{_f(s['backoff_p90_s'], 2)} s per instance{evals}; {rates} candidates/s; "
                f"peak memory {_f(s['peak_mem_gb'], 2)} GB"
                + (f" (machine load average {_f(load, 1)} while it ran: other jobs shared the cores)"
                   if (load := s.get("load_avg_mean", s.get("load_avg_1_5_15_min", [0, 0, 0])[2])) > 1.5 else "")
                + (f" ({n} searches shared the device: per-instance seconds are shared-device timings)"
                   if (n := s.get("parallel_searches", 1)) > 1 else "")
                + ".", ""]
    return out


def render_theorem(scale: str, root: Path) -> list[str]:
    d = _typed(TheoremStageResult, scale, root)
    if d is None:
        return []
    ratios = [h["ratio"] for h in d.heads if h.get("ratio") is not None]
    best = max(ratios) if ratios else None
    med = sorted(ratios)[len(ratios) // 2] if ratios else None
    return [f"**Paper A, self-attention theorem ({scale} scale)** - {_meta_line(d.meta)}: "
            f"{len(d.heads)} (head, k) cases, violations = {d.violations}, tightness achieved/bound "
            f"median {_f(med, 3)}, max {_f(best, 3)}.", ""]


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
           f"n_train {d['meta'].get('n_train')}, n_eval {d['meta'].get('n_eval')}; {judge}.", "",
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
    sam, ss, xs, mm = (d.get(k, {}) for k in ("sam", "safety_score", "xstest_over_refusal", "mmlu"))
    out += ["", f"Mode accuracy {_f(d.get('mode_accuracy'))}. Safety Alignment Margin: "
            + ", ".join(f"{k} {_f(v)}" for k, v in sam.items())
            + f" (paper: {PAPER_B['sam_cotrained']:.3f} co-trained vs ~{PAPER_B['sam_baselines']:.2f} baselines). "
            "Safety score: " + ", ".join(f"{k} {_f(v)}" for k, v in ss.items()) + ". XSTest over-refusal: "
            + ", ".join(f"{k} {_f(v)}" for k, v in xs.items()) + ". MMLU: "
            + ", ".join(f"{k} {_f(v)}" for k, v in mm.items()) + ".", ""]
    if css := d.get("constructive_safety"):
        out += ["Constructive Safety Score (harmful + safe prompts, paper B's definition): "
                + ", ".join(f"{k} {_f(v)}" for k, v in css.items()) + ". SAM as the paper reads it (cosine on "
                "first-token logits; 95% prompt-bootstrap CI; p against a within-prompt label-permutation null): "
                + ", ".join(f"{k} {_f(v['cosine_logits']['sam'])} ({_f(v['cosine_logits']['ci95'][0])}-"
                            f"{_f(v['cosine_logits']['ci95'][1])}, p {_f(v['cosine_logits']['p_value'], 3)})"
                            for k, v in d.get("sam_stats", {}).items()) + ".", ""]
    if jb := d.get("jailbreak"):
        out += ["Under jailbreak templates (PyRIT, seeded; paper B: relative drop "
                f"{PAPER_B['jailbreak_safety_drop']['cotrained']:.1%} co-trained vs "
                f"{PAPER_B['jailbreak_safety_drop']['baselines']:.1%} baselines): "
                + ", ".join(f"{k} {_f(v['plain'])} -> {_f(v['attacked'])} (drop {_f(v['relative_drop'])}, 95% CI "
                            f"{_f(v['ci95'][0])}-{_f(v['ci95'][1])})" for k, v in jb.items()) + ".", ""]
    return out


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


def _backoff_line(b: dict) -> str:
    g, gc = b.get("greedy", {}), b.get("gcg", {})
    return (f"Budget: greedy k={b.get('greedy_ks')} over "
            f"{'the whole vocabulary' if g.get('candidates') is None else 'gradient top-%s candidates' % g.get('candidates')}; "
            f"GCG k={b.get('gcg_ks')}, width {gc.get('search_width')}, top-k {gc.get('topk')}, "
            f"{gc.get('num_steps')} steps (paper: whole vocabulary; 768, 128, 34).")


def render_mode_reachability(scale: str, root: Path) -> list[str]:
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
             f"mode_reachability --scale {scale}`)" if used else " (Which co-training run it used is not recorded.)")
    out = [f"**Beyond: reaching a mode without its magic token ({scale} scale)** - {_meta_line(d['meta'])}.{stale}", "",
           "| transition (model) | N | " + " | ".join(f"eps({k})" for k in KS) + " | judged eps(10) |",
           "|---|---|" + "---|" * (len(KS) + 1)]
    rows = []
    for placement, summaries in d.get("transitions", {}).items():
        tag = "" if legacy else f", u {placement}"
        rows += [(f"{t} (co-trained{tag})", s) for t, s in summaries.items()]
        rows += [(f"none->negative ({b}{tag})", s) for b, s in d.get("baselines", {}).get(placement, {}).items()]
    for name, s in rows:
        n = f"{s['n']} of {s['n_prompts']}" if "n_prompts" in s else str(s["n"])
        out.append(f"| {name} | {n} | " + " | ".join(_f(s["eps"].get(k)) for k in KS)
                   + f" | {_f(s['eps_judged'].get('10'))} |")
    if legacy:
        return out + ["", f"Random magic-token switch rate (judged negative): {_f(d.get('random_token_switch_rate'))}."
                      + (f" {_backoff_line(d['meta']['backoff'])}" if d["meta"].get("backoff") else ""), ""]
    rt = d["random_token"]
    out += ["", f"Random magic-token switch rate (judged negative): {_f(rt['rate'])} (95% CI {_f(rt['ci95'][0])}-"
            f"{_f(rt['ci95'][1])}, {rt['successes']} of {rt['n']} (string, prompt) pairs). "
            f"Search ({d['meta']['search']}): {d['meta'].get('budget')}.", ""]
    out += [f"- {q['words']}" for answers in d.get("question", {}).values() for q in answers.values()]
    return out + [""]


def render_bench(root: Path) -> list[str]:
    out = []
    for tag in ("gpu", "cpu"):
        p = root / "results" / "bench" / f"{tag}.json"
        if not p.exists():
            continue
        b = json.loads(p.read_text())
        r = b["ratios"]
        out += [f"**Search speed, `benchmarks/bench_search.py` ({b['device']}, {b['model']}, |x0| = {b['x0_len']}, "
                f"torch {b['versions'].get('torch')})**: {_f(b['score_per_s_search_dtype'], 1)} candidates/s in "
                f"{b['search_dtype']} vs {_f(b['score_per_s_fp32'], 1)} in fp32 (x{_f(r['search_dtype_vs_fp32'], 2)}); "
                f"batched vs one at a time x{_f(r['batched_vs_one_at_a_time'], 2)}; last-position logits vs every "
                f"position x{_f(r['last_position_vs_all_positions'], 2)}"
                + (f"; parameters left trainable vs frozen x{_f(r['requires_grad_true_vs_false'], 2)}"
                   if "requires_grad_true_vs_false" in r else "")
                + f". Greedy {_f(b['greedy_candidates_per_s'], 1)} candidates/s ({b['greedy_step_candidates']} per step, "
                f"{_f(b['greedy_step_s'], 2)} s); GCG {_f(b['gcg_step_s'], 2)} s per step of 768 candidates; back-off at the "
                f"{b['backoff_budget']} budget: median {_f(b['backoff_median_s'], 2)} s, p90 {_f(b['backoff_p90_s'], 2)} s; "
                f"peak memory {_f(b['peak_mem_gb'], 2)} GB.", ""]
    return out


def render_fast_bench(root: Path) -> list[str]:
    """`benchmarks/bench_fast.py report`: the fast search against the authors' budget and the old default."""
    p = root / "results" / "bench" / "fast.json"
    if not p.exists():
        return []
    b = json.loads(p.read_text())
    out = [f"**The fast search, `benchmarks/bench_fast.py`** ({b['meta']['device']}, {b['meta']['model']}; "
           "evaluations = candidate prompts scored, one forward each):", ""]
    if h := b.get("head2head"):
        out.append(f"- Against the authors' budget, on the {h['n']} instances with a paper-budget row "
                   f"({h['n_searched']} need a search): required k no larger on {_f(h['share_k_fast_le_paper'], 2)} "
                   f"(lower on {h['n_k_fast_lt_paper']}, higher on {h['n_k_fast_gt_paper']}); median "
                   f"{_f(h['evals_paper_median'], 0)} -> {_f(h['evals_fast_median'], 0)} evaluations and "
                   f"{_f(h['seconds_paper_median'], 0)} -> {_f(h['seconds_fast_median'], 1)} s per searched instance.")
    if v := b.get("vs_default"):
        f, d = v["fast"], v["default"]
        out.append(f"- Against the previous default search (greedy top-128, GCG 128x64x6), same {v['n']} true-token "
                   f"instances that k = 0 does not solve: eps(4) {_f(f['eps']['4'])} "
                   f"(95% CI {_f(f['ci95']['4'][0])}-{_f(f['ci95']['4'][1])}) vs {_f(d['eps']['4'])} "
                   f"({_f(d['ci95']['4'][0])}-{_f(d['ci95']['4'][1])}); eps(10) {_f(f['eps']['10'])} "
                   f"({_f(f['ci95']['10'][0])}-{_f(f['ci95']['10'][1])}) vs {_f(d['eps']['10'])} "
                   f"({_f(d['ci95']['10'][0])}-{_f(d['ci95']['10'][1])}); required k no larger on "
                   f"{_f(v['k_fast_le_default'], 2)}; median {_f(v['evals_median']['fast'], 0)} vs "
                   f"{_f(v['evals_median']['default'], 0)} evaluations, {_f(v['seconds_median']['fast'], 1)} vs "
                   f"{_f(v['seconds_median']['default'], 1)} s (threads {v['threads']}, load {_f(v['load_avg_mean'], 1)}).")
    if c := b.get("calibration"):
        r = c["recall_within_top_n"]["ce_at_y"]
        out.append(f"- Calibration of k = 1: {c['n']} exhaustive sweeps (|x0| in {c['lengths']}), {c['n_k1_solvable']} "
                   f"solvable at k = 1; share found within the gradient top-N: "
                   + ", ".join(f"N={n} {_f(r[n], 2)}" for n in ("256", "1024", "8192"))
                   + f"; the authors' check (lowest-loss token only) solves {_f(c['authors_check_share_of_solvable'], 2)} of them.")
    if t := b.get("paper_scale_run"):
        out.append(f"- The paper-scale run so far: {t['n_searched']} searched instances, median "
                   f"{_f(t['evals_median'], 0)} evaluations (mean {_f(t['evals_mean'], 0)}) and {_f(t['seconds_median'], 1)} s "
                   f"(threads {t['threads']}, load {_f(t['load_avg_mean'], 1)}).")
    if g := b.get("targets"):
        out.append("- Targets (median <= 5,000 evaluations, <= 60 s per searched instance, k <= paper k on >= 90%): "
                   + ", ".join(f"{k} {'met' if v else 'missed' if v is not None else 'not measured'}" for k, v in g.items())
                   + ".")
    return out + [""]


def render_judge(root: Path) -> list[str]:
    """`benchmarks/judge_validation.py report`: the judge against replies of this model labelled by reading."""
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
        out.append(f"- Variant `{d.parent.name}` ({r['meta'].get('scale')} scale, seed {r['meta'].get('seed')}; targets "
                   f"{p.get('targets')}, fallback {p.get('distil', {}).get('fallback')}, judge {r['judge'].get('kind')}): "
                   + (("targets kept (harmful / benign) " + ", ".join(
                       f"{m} {v['harmful'][0]}/{v['harmful'][1]} / {v['benign'][0]}/{v['benign'][1]}" for m, v in k.items())
                       + "; ") if k else "")
                   + f"{r['train_logs']['cotrained']['steps']} co-training steps; mode accuracy {_f(r['mode_accuracy'])}; "
                   f"SAM (cosine) co-trained {_f(cos.get('sam'))} (p {_f(cos.get('p_value'), 3)}); CSS co-trained "
                   f"{_f(r['constructive_safety'].get('cotrained_positive'))} vs SFT {_f(r['constructive_safety'].get('sft'))}.")
    return (["**Paper B, other recipes, measured** (`results/variants/`):", ""] + out + [""]) if out else []


def render_seeds(root: Path) -> list[str]:
    """Paper B over training seeds: seed 0 = results/default, more from scripts/cotraining_seeds.sh."""
    dirs = [root / "results" / "default"] + sorted((root / "results" / "seeds").glob("seed*/results/default"))
    runs = [asdict(CoTrainingStageResult.load(d)) for d in dirs if (d / "cotraining.json").exists()]
    if len(runs) < 2:
        return []
    strip = lambda p: {k: v for k, v in p.items() if k != "seed"}
    same = all(strip(r["params"]) == strip(runs[0]["params"]) for r in runs)
    n_h, n_x = runs[0]["data"]["n_eval_harmful"], runs[0]["data"]["n_xstest"]

    def cell(get, n=None):
        a = across_seeds([get(r) for r in runs], n)
        ci = a.get("pooled_ci95")
        return f"{_f(a['mean'])} ± {_f(a['sd'])}" + (f" ({_f(ci[0])}-{_f(ci[1])})" if ci else "")

    rows = [("mode accuracy (mean diagonal)", cell(lambda r: r["mode_accuracy"]))]
    rows += [(f"{m} token -> judged {m} (n={n_h} per seed)", cell(lambda r, m=m: r["confusion"][m][m], n_h))
             for m in ("positive", "negative", "rejective")]
    rows += [(f"XSTest over-refusal, {k} (n={n_x})", cell(lambda r, k=k: r["xstest_over_refusal"][k], n_x))
             for k in runs[0]["xstest_over_refusal"]]
    rows += [(f"Constructive Safety Score, {k}", cell(lambda r, k=k: r["constructive_safety"][k]))
             for k in runs[0]["constructive_safety"]]
    rows += [(f"SAM (cosine on logits), {k}", cell(lambda r, k=k: r["sam_stats"][k]["cosine_logits"]["sam"]))
             for k in runs[0]["sam_stats"]]
    rows += [(f"jailbreak relative drop, {k}", cell(lambda r, k=k: r["jailbreak"][k]["relative_drop"]))
             for k in runs[0]["jailbreak"]]
    return ([f"**Paper B over {len(runs)} training seeds (default scale; seeds "
             f"{', '.join(str(r['meta']['seed']) for r in runs)}; "
             + ("same params otherwise" if same else "PARAMS DIFFER beyond the seed: not comparable") + ")**: "
             "mean ± sd over seeds; shares also with the Wilson 95% interval of the pooled count.", "",
             "| metric | over seeds |", "|---|---|"] + [f"| {a} | {b} |" for a, b in rows] + [""])


def render(root: str | Path | None = None) -> str:
    root = Path(root or REPO_ROOT)
    lines: list[str] = []
    for scale in ("paper", "default"):
        for fn in (render_reachability, render_theorem, render_cotraining, render_mode_reachability):
            lines += fn(scale, root)
    lines += render_seeds(root)
    lines += render_variants(root)
    lines += render_fast_bench(root)
    lines += render_judge(root)
    lines += render_bench(root)
    if not lines:
        lines = ["(no results yet: run `dvc repro`)", ""]
    return "\n".join(lines).rstrip() + "\n"


def update_readme(path: str | Path | None = None, root: str | Path | None = None) -> bool:
    """Rewrite the results block; returns True if README changed."""
    path = Path(path or REPO_ROOT / "README.md")
    text = path.read_text()
    new = re.sub(re.escape(BEGIN) + r".*?" + re.escape(END), f"{BEGIN}\n{render(root)}{END}", text, flags=re.S)
    if new != text:
        path.write_text(new)
    return new != text
