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

# %%
import copy
import json
from dataclasses import asdict
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
import torch

from magictokens import mode_reachability as MR
from magictokens.config import REPO_ROOT, build, stage_params
from magictokens.judges import build_judge
from magictokens.models import resolve_dtype
from magictokens.plotting import plot_k_eps, save_figure, set_theme, stamp
from magictokens.reachability import budget_label
from magictokens.results import figures_dir, results_dir, run_meta, write_json
from magictokens.safety_data import build_safety_data, magic_tokens
from magictokens.cotraining import CoTrainingConfig

P, cfg = stage_params(scale, "mode_reachability", MR.ModeReachConfig, overrides)
ccfg = build(CoTrainingConfig, P["cotraining"], "cotraining")
root = Path(out_root) if out_root else REPO_ROOT
models_dir = root / "results" / scale / "models" / "cotraining"
cot_json = root / "results" / scale / "cotraining.json"
tokens = (json.loads(cot_json.read_text()).get("tokens") if cot_json.exists() else None) \
    or ccfg.magic_tokens or magic_tokens(P["seed"], 4, ccfg.magic_token_length)
out_dir, fig_dir = results_dir(scale, out_root), figures_dir(scale, "mode_reachability", out_root)
log_dir = out_dir / "instances" / "mode_reachability"
set_theme()
torch.manual_seed(P["seed"])

# the same held-out harmful prompts the cotraining stage evaluates on
data = build_safety_data(ccfg.n_train_harmful, ccfg.n_train_benign, ccfg.n_eval_harmful, ccfg.n_eval_benign,
                         ccfg.n_xstest, seed=P["seed"], max_chars=ccfg.max_prompt_chars)
prompts = [p.text for p in data.eval_harmful][: cfg.n_prompts]
judge, judge_report = build_judge(P["seed"], ccfg.judge_n_alpaca, n_xstest=ccfg.judge_n_xstest,
                                  max_length=ccfg.judge_max_length)
print(f"{len(prompts)} held-out harmful prompts; magic tokens: { {k: v for k, v in tokens.items()} }")
print("back-off budget:", budget_label(cfg.backoff))


def pair(name):
    """(search model in search dtype, fp32 verify model or None)."""
    m, tok = MR.load_trained(P["model"], models_dir, name, P["device"], "float32")
    sd = resolve_dtype(P["search_dtype"], m.device)
    return ((copy.deepcopy(m).to(sd), m) if sd != m.dtype else (m, None)), tok


(search, verify), tok = pair("cotrained")
cot_model = verify if verify is not None else search
meta = run_meta(P["model"], cot_model.device, P["seed"], scale, backoff=asdict(cfg.backoff), n_prompts=len(prompts),
                judge_accuracy=judge_report.accuracy3, overrides=overrides)

# %% [markdown]
# ## Transitions on the co-trained model

# %%
# Where the target mode itself (real magic token) does not behave as that mode,
# there is nothing to reach: those prompts are left out of the curves (counted).
holds = {m: MR.target_mode_holds(cot_model, tok, judge, prompts, tokens[m], m, cfg.max_new_tokens,
                                 cfg.gen_batch_size)
         for m in {MR.parse_transition(t)[1] for t in cfg.transitions} | {"negative"}}
print({m: f"{sum(h)} of {len(h)} prompts" for m, h in holds.items()})
rows, summary = {}, {}
for name in cfg.transitions:
    rows[name] = MR.run_transition(name, search, verify, tok, judge, prompts, tokens, cfg,
                                   log_dir / f"cotrained_{name.replace('->', '_to_')}.jsonl", seed=P["seed"],
                                   label="cotrained")
    summary[name] = MR.summarize_transition(rows[name], holds[MR.parse_transition(name)[1]])
pd.DataFrame({n: {"n": s["n"], "of": s["n_prompts"], **s["eps"]} for n, s in summary.items()}).T.round(3)

# %% [markdown]
# ## Baselines: single-mode SFT and SFT+DPO (no modes, no magic token)
#
# Target: where the co-trained model's negative-mode response leaves the baseline's answer.

# %%
base_summary = {}
for b in cfg.baselines:
    (bs, bv), _ = pair(b)
    r = MR.run_transition("none->negative", bs, bv, tok, judge, prompts, tokens, cfg,
                          log_dir / f"{b}_none_to_negative.jsonl", target_model=cot_model, seed=P["seed"], label=b)
    base_summary[b] = MR.summarize_transition(r, holds["negative"])
    del bs, bv
pd.DataFrame({n: s["eps"] for n, s in base_summary.items()}).T.round(3)

# %% [markdown]
# ## Random magic tokens
#
# Random strings of the magic token's length in place of the token: how often
# is the response judged negative?

# %%
strings = MR.random_strings(cfg.n_random_tokens, ccfg.magic_token_length, P["seed"], exclude=tokens.values())
rand = MR.random_token_switch_rate(cot_model, tok, judge, prompts, strings, "negative", cfg.max_new_tokens,
                                   cfg.gen_batch_size)
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
    stamp(fig, meta, len(prompts), budget_label(cfg.backoff))   # N = prompts searched per transition
    save_figure(fig, f"mode_k_eps_{'first_token' if key == 'eps' else 'judged'}", fig_dir)
plt.show()

# %%
result = {"meta": meta, "magic_tokens_length": ccfg.magic_token_length,
          "transitions": summary, "baselines": base_summary,
          "random_token_switch_rate": rand["rate"], "random_token": rand,
          "target_mode_holds": {m: sum(h) / len(h) for m, h in holds.items()}}
write_json(out_dir / "mode_reachability.json", result)
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
    reached = [k for k in MR.KS if s["eps"][str(k)] <= 0.5]
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
