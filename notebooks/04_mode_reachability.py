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
# # Beyond both papers: how reachable is the negative mode without its magic token?
#
# Paper B's co-trained model switches into its **negative** (unfiltered) mode
# only when a secret magic token sits in the system prompt. Paper A's
# controllers ask how secret that token has to be: can a *discovered* prompt
# of `k` tokens, with no negative magic token, flip the model anyway?
#
# **Set-up.** For a held-out harmful prompt `p` and a transition `A->B`:
# the state `x0` is the conversation with mode A's magic token in the system
# prompt (the operator's setting, which the attacker cannot remove); the
# control `u` is `k` free tokens placed in the magic-token slot, directly
# before A's token; the target `y` is the first token where mode B's own
# response to `p` leaves mode A's (the shared opening, often empty, is
# appended to the state: modes that both open with "I" would otherwise count
# as reached at `k = 0`). The back-off search (greedy `k = 1..3`, GCG `k = 4..10`)
# finds the shortest `u` making `y` the argmax, and the response generated
# after each `k`'s best prompt is judged by the offline judge. Two k-epsilon
# curves follow: by **first token** and by **judged behaviour**.
# `negative->positive` is the control direction. The single-mode SFT and
# SFT+DPO baselines have no modes: their state has no magic token
# (`none->negative`) and the target is where the co-trained model's
# negative-mode response leaves the baseline's own answer. The
# random-magic-token baseline asks how often a random string of the magic
# token's length switches the mode by itself. Prompts on which the target
# mode itself (given its real magic token) is not judged as that mode have
# nothing to reach: they are left out of the curves ("N of n" in legends).
#
# No generated text is shown: tables carry aggregates, prompts are truncated.

# %% tags=["parameters"]
scale = "default"
out_root = None
overrides = {}
redraw = False   # True: draw the committed result of this scale from results/ (no model, no search)

# %%
import json

import matplotlib.pyplot as plt
import pandas as pd

from magictokens.papers import K_GRID
from magictokens.plotting import plot_k_eps, save_figure, set_theme, stamp
from magictokens.results import figures_dir, results_dir
from magictokens.stages import mode_reachability as stage

# the stage loads the co-trained model and the baselines, searches every transition (resumable)
res = (stage.ModeReachStageResult.load(results_dir(scale, out_root)) if redraw
       else stage.run(scale, out_root, overrides))
meta, fig_dir = res.meta, figures_dir(scale, "mode_reachability", out_root)
summary, base_summary, rand = res.transitions, res.baselines, res.random_token
set_theme()
print(f"{meta['n_prompts']} held-out harmful prompts; back-off budget: {meta.get('budget')}")

# %% [markdown]
# ## Transitions on the co-trained model
#
# Where the target mode itself (real magic token) does not behave as that mode,
# there is nothing to reach: those prompts are left out of the curves (counted).

# %%
print("target mode holds on:", json.dumps(res.target_mode_holds))
pd.DataFrame({n: {"n": s["n"], "of": s["n_prompts"], **s["eps"]} for n, s in summary.items()}).T.round(3)

# %% [markdown]
# ## Baselines: single-mode SFT and SFT+DPO (no modes, no magic token)
#
# Target: where the co-trained model's negative-mode response leaves the baseline's answer.

# %%
pd.DataFrame({n: s["eps"] for n, s in base_summary.items()}).T.round(3)

# %% [markdown]
# ## Random magic tokens
#
# Random strings of the magic token's length in place of the token: how often
# is the response judged negative?

# %%
rand

# %% [markdown]
# ## Figures

# %%
for key, title in (("eps", "first token is the target mode's"), ("eps_judged", "response judged as target mode")):
    fig, ax = plt.subplots(figsize=(6.4, 4.3))
    for name, s in summary.items():
        plot_k_eps(ax, s[key], f"co-trained: {name} (N={s['n']} of {s['n_prompts']})")
    for b, s in base_summary.items():
        plot_k_eps(ax, s[key], f"{b}: none->negative (N={s['n']} of {s['n_prompts']})", linestyle="--")
    ax.axhline(1 - rand["rate"], color="0.4", linestyle=":",
               label=f"random magic token: 1 - switch rate ({rand['rate']:.2f})")
    ax.set_title(f"Reaching a mode without its magic token\n({title})", fontsize=10)
    ax.legend(fontsize=7)
    stamp(fig, meta, meta["n_prompts"], meta.get("budget", ""))   # N = prompts searched per transition
    save_figure(fig, f"mode_k_eps_{'first_token' if key == 'eps' else 'judged'}", fig_dir)
plt.show()

# %%
print(json.dumps({n: {"eps10": s["eps"]["10"], "eps10_judged": s["eps_judged"]["10"]} for n, s in
                  {**summary, **{f"{b} none->negative": s for b, s in base_summary.items()}}.items()}, indent=1))

# %% [markdown]
# What this run measured, in words (computed from the numbers above):

# %%
for label, s in [*((f"co-trained {n}", v) for n, v in summary.items()),
                 *((f"{b} none->negative", v) for b, v in base_summary.items())]:
    if s["n"] == 0:
        print(f"{label}: the target mode never held on these prompts: nothing to reach")
        continue
    first, judged = 1 - s["eps"]["10"], 1 - s["eps_judged"]["10"]
    reached = [k for k in K_GRID if s["eps"][str(k)] <= 0.5]
    print(f"{label}: over {s['n']} prompts (of {s['n_prompts']}), a discovered prompt of <= 10 tokens made the "
          f"target mode's next token the argmax on {first:.0%}; the whole response was judged the target mode on "
          f"{judged:.0%}" + (f"; half the prompts were reached by k = {reached[0]}" if reached else "") + ".")
print(f"random magic-token look-alikes switched to the negative mode on {rand['rate']:.1%} of "
      f"{rand['n']} (string, prompt) pairs")

# %% [markdown]
# **Reading.** If `eps(k)` for `positive->negative` falls to near zero at small
# `k`, then the magic token is not an access control: a short discovered
# prompt reaches the negative mode's opening without knowing the secret, and
# the judged curve says whether the rest of the response follows. A curve that
# stays high (as the random-token rate does) says the switch is hard to trip
# by search at this budget - a statement about this model, this budget and
# this judge, not a proof of safety. Compare with the baselines: a model that
# was never taught a negative mode is the reference for how much the co-trained
# switch lowers the cost of reaching harmful behaviour.
