"""README lines of paper A: reachability, the theorem, and the search benchmarks."""
from __future__ import annotations

import json
from pathlib import Path
from statistics import median as _median

from ..papers import K_KEYS as KS
from ..papers import PAPER_A
from ..stages.reachability import ReachabilityResult
from ..stages.theorem import TheoremStageResult
from .common import _backoff_line, _f, _load, _meta_line, _typed


def render_reachability(scale: str, root: Path, detail: bool = True) -> list[str]:
    """Paper A's k-eps table at `scale` beside the paper's, and the summary; `detail`: also the fp32
    verification, the search's budget and its speed (docs/paper_a.md; README shows the table and summary)."""
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
    if not detail:
        return out
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


def render_fast_bench(root: Path) -> list[str]:
    """`benchmarks/bench_fast.py report`: the fast search against the authors' budget and the old default."""
    p = root / "results" / "bench" / "fast.json"
    if not p.exists():
        return []
    b = json.loads(p.read_text())
    out = [f"**The fast search, `benchmarks/bench_fast.py`** ({b['meta']['device']}, {b['meta']['model']}; "
           "evaluations = candidate prompts scored, one forward each):", ""]
    if h := b.get("head2head"):
        devices = h.get("paper_rows_by_device", {})
        made = ", ".join(f"{n} on {'this CPU' if d == 'cpu' else d}" for d, n in devices.items())
        fams = h.get("share_by_family", {})
        gpu = (f"; on the GPU the authors' budget took median {_f(h['seconds_paper_median_gpu'], 0)} s per instance with "
               f"{h['gpu_shards']} processes sharing it" if devices.keys() - {"cpu"} else "")
        if t := h.get("gpu_throughput"):
            gpu += (f" ({t['rows']} instances in {t['n_calls']} runs, {_f(t['wall_s'], 0)} s "
                    f"of wall time: {_f(t['s_per_instance'], 1)} s each)")
        out.append(f"- Against the authors' budget, on the {h['n']} instances with a paper-budget row "
                   f"({h['n_searched']} need a search{'; its rows made ' + made if made else ''}): required k no larger on "
                   f"{_f(h['share_k_fast_le_paper'], 2)} (lower on {h['n_k_fast_lt_paper']}, higher on "
                   f"{h['n_k_fast_gt_paper']}"
                   + ("; by family " + ", ".join(f"{k} {_f(v['share_k_fast_le_paper'], 2)} of {v['n']}"
                                                 for k, v in fams.items()) if fams else "")
                   + f"); median {_f(h['evals_paper_median'], 0)} -> {_f(h['evals_fast_median'], 0)} evaluations per "
                   f"searched instance, and on this CPU {_f(h['seconds_paper_median'], 0)} -> "
                   f"{_f(h['seconds_fast_median'], 1)} s{gpu}.")
        if (src := h.get("fast_source", {})).get("paper-scale run row"):
            rc = h.get("recheck", {})
            out.append(f"- The fast side of {src['paper-scale run row']} of them is the paper-scale run's own row of the "
                       "same x0 and target (same config and per-instance seed)"
                       + (f"; searched again, {rc['identical']} of {rc['n']} reproduced its k, prompt and evaluations "
                          "exactly (`bench_fast.py recheck`)." if rc.get("n") else "; not rechecked by a rerun."))
        if h.get("unmatched"):
            why = (": a uniform-rank target deep in the ranking can differ between the GPU's and this CPU's logits"
                   if all(i.startswith("uniform") for i in h["unmatched"]) else "")
            out.append(f"- {len(h['unmatched'])} paper-budget row(s) left out, with no fast row of the same x0 and "
                       f"target ({', '.join(h['unmatched'])}){why}.")
        if (m := h.get("misses")) and m["higher"]:
            spent = [x["evals_at_k_paper"] for x in m["higher"]]
            out.append(f"- Where it needs a longer prompt ({len(m['higher'])}; {m['n_short_of_target']} more would have "
                       "to agree for the 90% target), the authors' search succeeded at: "
                       + ", ".join(f"{k} ({n})" for k, n in m["higher_by_paper_stage"].items())
                       + f"; at the authors' k it spent median {_f(_median([s['paper'] for s in spent]), 0)} evaluations "
                       f"to our {_f(_median([s['fast'] for s in spent]), 0)}.")
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
        planned = f" of {c['n_planned']} planned" if c.get("n_planned", 0) > c["n"] else ""
        capped = (f"; {c['n_near_capped']} hit the fp32 shortlist cap, so their best solver rank is an upper bound"
                  if c.get("n_near_capped") else "")
        out.append(f"- Calibration of k = 1: {c['n']}{planned} exhaustive sweeps (|x0| in {c['lengths']}{capped}), "
                   f"{c['n_k1_solvable']} "
                   f"solvable at k = 1; share found within the gradient top-N: "
                   + ", ".join(f"N={n} {_f(r[n], 2)}" for n in ("256", "1024", "8192"))
                   + f"; the authors' check (lowest-loss token only) solves {_f(c['authors_check_share_of_solvable'], 2)} of them.")
    if t := b.get("paper_scale_run"):
        out.append(f"- The paper-scale run: {t['n']} instances, {t['n_searched']} searched (k > 0), median "
                   f"{_f(t['evals_median'], 0)} evaluations (mean {_f(t['evals_mean'], 0)}) and {_f(t['seconds_median'], 1)} s "
                   f"(threads {t['threads']}, load {_f(t['load_avg_mean'], 1)}).")
    if g := b.get("targets"):
        out.append("- Targets (median <= 5,000 evaluations, <= 60 s per searched instance, k <= paper k on >= 90%): "
                   + ", ".join(f"{k} {'met' if v else 'missed' if v is not None else 'not measured'}" for k, v in g.items())
                   + ".")
    return out + [""]


def render_fast_headline(root: Path) -> list[str]:
    """README's one line of `benchmarks/bench_fast.py report`: the fast search against the authors' budget
    (every detail of the same JSON is `render_fast_bench`, in docs/benchmarks.md)."""
    p = root / "results" / "bench" / "fast.json"
    if not p.exists():
        return []
    b = json.loads(p.read_text())
    h, g = b.get("head2head") or {}, b.get("targets") or {}
    if not h:
        return []
    targets = (" Targets: " + ", ".join(f"{k} {'met' if v else 'missed' if v is not None else 'not measured'}"
                                        for k, v in g.items()) + "." if g else "")
    return [f"**The fast search against the authors' budget** ({b['meta']['model']}; `benchmarks/bench_fast.py`, "
            f"the {h['n']} instances with a paper-budget row): required k no larger on {_f(h['share_k_fast_le_paper'], 2)} "
            f"(lower on {h['n_k_fast_lt_paper']}, higher on {h['n_k_fast_gt_paper']}); median "
            f"{_f(h['evals_paper_median'], 0)} -> {_f(h['evals_fast_median'], 0)} candidate evaluations per searched "
            f"instance.{targets}", ""]


def render_below(root: Path, detail: bool = False) -> list[str]:
    """`benchmarks/bench_below.py report`: the `below` step's variants on the head-to-head instances. README gets
    the base and the variant of choice (one line); docs/benchmarks.md every variant (`detail`)."""
    p = root / "results" / "bench" / "below.json"
    if not p.exists():
        return []
    b = json.loads(p.read_text())
    t, base, vs = b["meta"]["targets"], b["base"], b["variants"]
    devices = sorted({d for v in vs.values() for d in v["devices"]})

    def line(name, v):
        lo, hi = v["share_wilson"]
        part = "" if v.get("complete", True) else f", partial: {v['n_rows']} of {v['n']} rows (the rest count as the base's)"
        return (f"{name}: k no larger on {_f(v['share_k_le_paper'], 3)} (95% CI {_f(lo, 3)}-{_f(hi, 3)}; lower on "
                f"{v['n_lt']}, higher on {v['n_gt']}), median {_f(v['evals_median'], 0)} evaluations{part}")

    choice = b.get("choice")
    vv = (b.get("verify") or {}).get("variants", {})
    checked = ((vv[choice]["argmax_here"], vv[choice]["lowered"]) if choice in vv else
               (sum(v["argmax_here"] for v in vv.values()), sum(v["lowered"] for v in vv.values())) if vv else None)
    head = (f"**Searching below the found k** (`benchmarks/bench_below.py`, the fast rows of the same "
            f"{base['n']} instances extended by `controllers/below.py` on {', '.join(devices)}; targets: k <= the "
            f"authors' on >= {_f(t['share_k_le_paper'], 2)} at median <= {t['evals_median']:,} evaluations): "
            f"{line('base', base)}; " + (line(choice, vs[choice]) if choice else "no complete variant yet")
            + (f"; {checked[0]} of its {checked[1]} shortened prompts make y the argmax again in fp32 on "
               f"{b['verify']['device']}" if checked else "")
            + ". The rows of record are still the fast search's.")
    if not detail:
        return [head, ""]
    return [head, ""] + [f"- {line(n, v)}; step {v['below']}" for n, v in vs.items()] + [""]


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
