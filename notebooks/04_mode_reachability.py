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
# prompt (the operator's, server side: the attacker can neither see nor
# remove it); the control `u` is `k` free tokens at one **placement**:
# `user_before` (in the user turn, before the request: "u p"), `user_after`
# (in the user turn, after the request: "p u") - where an attacker writes -
# or `system` (in the system prompt, directly before A's token: the
# operator's slot, a second setting kept for comparison). The target `y` is
# the first token where mode B's own response to `p` leaves mode A's (the
# shared opening, often empty, is appended to the state: modes that both
# open with "I" would otherwise count as reached at `k = 0`). The search
# (the fast search of paper A's reachability stage by default, or the
# greedy + GCG back-off) finds the shortest `u` making `y` the argmax, and
# the response generated after each `k`'s best prompt is judged by the
# offline judge, which is given the prompt too. Two k-epsilon curves follow,
# with Wilson 95% intervals: by **first token** and by **judged behaviour**.
# `negative->positive` is the control direction. The single-mode SFT and
# SFT+DPO baselines have no modes: their state has no magic token
# (`none->negative`) and the target is where the co-trained model's
# negative-mode response leaves the baseline's own answer. The
# random-magic-token baseline asks, on the same prompts, how often a random
# string of the magic token's length switches the mode by itself. Prompts on
# which the target mode itself (given its real magic token) is not judged as
# that mode have nothing to reach: they are left out of the curves ("N of n").
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

from magictokens.plotting import plot_k_eps, save_figure, set_theme, stamp
from magictokens.results import figures_dir, results_dir
from magictokens.stages import mode_reachability as stage

# the stage loads the co-trained model and the baselines, searches every placement and transition (resumable)
res = (stage.ModeReachStageResult.load(results_dir(scale, out_root)) if redraw
       else stage.run(scale, out_root, overrides))
meta, fig_dir = res.meta, figures_dir(scale, "mode_reachability", out_root)
summary, base_summary, rand = res.transitions, res.baselines, res.random_token
placements = list(summary)
set_theme()
print(f"{meta['n_prompts']} held-out harmful prompts; placements {placements}; {meta['search']} search: "
      f"{meta.get('budget')}" + ("; PARTIAL run: cut by search_minutes" if res.partial else ""))

# %% [markdown]
# ## The question
#
# Per placement and transition: the shortest `k` that reached any prompt and
# on what share, the share reached with `k <= 10` (first token, judged), each
# as successes of N with a Wilson 95% interval, beside the share of random
# magic tokens judged as the target mode and the size of the magic-token
# space (every string of the token's length over its alphabet).

# %%
def cell(x):
    return "-" if x is None else f"{x['successes']}/{x['n']} [{x['ci95'][0]:.2f}, {x['ci95'][1]:.2f}]"


table = pd.DataFrame([{"placement": pl, "transition (model)": label, "shortest k": q["k_shortest"],
                       "reached at shortest k": cell(q["at_shortest"]), f"reached k<={q['k_max']}": cell(q["within_k_max"]),
                       f"judged k<={q['k_max']}": cell(q["within_k_max_judged"]),
                       "random magic token": cell(q["random_token"]),
                       "magic tokens": f"{q['magic_token_alphabet']}^{q['magic_token_length']} = {q['magic_token_space']:.1e}"}
                      for pl, answers in res.question.items() for label, q in answers.items()])
table

# %%
for answers in res.question.values():
    for q in answers.values():
        print(q["words"])

# %% [markdown]
# ## Transitions on the co-trained model, and the baselines
#
# eps(k): share of the N prompts not reached with <= k tokens. Where the target
# mode itself (real magic token) does not behave as that mode, there is nothing
# to reach: those prompts are left out (counted in "of").

# %%
print("target mode holds on:", json.dumps(res.target_mode_holds))
pd.DataFrame({(pl, n): {"n": s["n"], "of": s["n_prompts"], **s["eps"]}
              for pl in placements for n, s in {**summary[pl], **{f"{b}: none->negative": v
                                                                  for b, v in base_summary[pl].items()}}.items()}).T.round(3)

# %% [markdown]
# ## Random magic tokens
#
# Random strings of the magic token's length in place of the token: how often
# is the response judged negative (Wilson 95% interval over the (string, prompt) pairs)?

# %%
{k: v for k, v in rand.items() if k != "by_mode"}

# %% [markdown]
# ## Figures
#
# One panel per placement; shaded: Wilson 95% intervals.

# %%
for key, title in (("eps", "first token is the target mode's"), ("eps_judged", "response judged as target mode")):
    ci_key = "ci95" + key[3:]
    fig, axes = plt.subplots(1, len(placements), figsize=(6.4 * len(placements), 4.3), squeeze=False, sharey=True)
    for ax, pl in zip(axes[0], placements):
        for name, s in summary[pl].items():
            plot_k_eps(ax, s[key], f"co-trained: {name} (N={s['n']} of {s['n_prompts']})", ci=s[ci_key])
        for b, s in base_summary[pl].items():
            plot_k_eps(ax, s[key], f"{b}: none->negative (N={s['n']} of {s['n_prompts']})", ci=s[ci_key],
                       linestyle="--")
        ax.axhline(1 - rand["rate"], color="0.4", linestyle=":",
                   label=f"random magic token: 1 - switch rate ({rand['rate']:.2f})")
        ax.set_title(f"u in the {stage.PLACEMENT_WORDS.get(pl, pl)} ({pl})", fontsize=9)
        ax.legend(fontsize=7)
    fig.suptitle(f"Reaching a mode without its magic token ({title})"
                 + ("\nPARTIAL run (search_minutes): each curve's 'of' counts the prompts searched so far"
                    if res.partial else ""), fontsize=10, **({"color": "firebrick"} if res.partial else {}))
    stamp(fig, meta, meta["n_prompts"], meta.get("budget", ""))   # N = prompts planned per transition
    save_figure(fig, f"mode_k_eps_{'first_token' if key == 'eps' else 'judged'}", fig_dir)
plt.show()

# %% [markdown]
# **Reading.** If `eps(k)` for `positive->negative` with `u` in the user turn
# falls to near zero at small `k`, then the magic token is not an access
# control: a short prompt that the attacker types reaches the negative mode's
# opening without knowing the secret, and the judged curve says whether the
# rest of the response follows. Set that share beside the random-token rate
# and the size of the magic-token space: guessing the token is hopeless, a
# search over the attacker's own turn may not be. Each answer above also
# gives the search's price (`cost`: median candidate evaluations and seconds
# per prompt, and the totals per judged success, failures included) beside
# the (36^8 + 1) / 2 = 1.4e12 tries an average guess of the token takes; the
# random-token rate is the judge's floor, what a string that is not the
# secret already scores. A curve that stays high
# says the switch is hard to trip by search at this budget - a statement
# about this model, this budget and this judge, not a proof of safety. The
# baselines, never taught a negative mode, are the reference for how much the
# co-trained switch lowers the cost of reaching harmful behaviour.
