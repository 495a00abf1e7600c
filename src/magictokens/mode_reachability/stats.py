"""Summaries of the per-prompt rows: k-epsilon curves with Wilson intervals, the random-magic-token
baseline, and the study's question in numbers and in words."""
from __future__ import annotations

import random

import numpy as np

from ..chat import generate_from_ids, prompt_ids
from ..cotraining.data import MAGIC_ALPHABET, MODES, magic_string
from ..distributed import map_ranks
from ..metrics import k_epsilon_curve, wilson_ci, wilson_interval
from ..papers import K_GRID as KS

ALPHABET = MAGIC_ALPHABET   # the magic tokens' characters (cotraining.data: one home)


def magic_token_space(length: int) -> int:
    """How many magic tokens there are: |alphabet| ** length (36 ** 8 = 2.8e12 for paper B's 8 characters)."""
    return len(ALPHABET) ** int(length)


def share(successes: int, n: int) -> dict:
    """successes of n, their share and its Wilson 95% interval (share nan, interval [nan, nan] when n = 0)."""
    return {"successes": int(successes), "n": int(n), "share": successes / n if n else float("nan"),
            "ci95": wilson_interval(int(successes), int(n))}


def summarize_transition(rows: list[dict], holds: list[bool] | None = None, n_planned: int | None = None) -> dict:
    """Curves over KS (k = 0 included) of the prompts where the target mode holds.

    With k_i the shortest reaching length of prompt i (None: not reached), over
    the N kept prompts: reached[k] = #{i: k_i <= k}, eps[k] = 1 - reached[k] / N
    and ci95[k] its Wilson 95% interval; the same from k_judged (the shortest
    k whose response is judged the target mode) as *_judged.

    `holds[i]`: the target mode, given its real magic token, is judged as that
    mode on prompt i. Prompts where it is not (a "negative" mode that refuses
    anyway) have nothing to reach and are left out of the curves (n < n_prompts).
    Rows carry their `prompt_index` into `holds` (a cut run holds only some
    prompts); `n_planned`: the prompts of the plan (n_prompts < n_planned: a
    partial transition).
    """
    ok = lambda i, r: holds is None or holds[r.get("prompt_index", i)]
    keep = [r for i, r in enumerate(rows) if ok(i, r)]
    out = {"n": len(keep), "n_prompts": len(rows), "n_planned": len(rows) if n_planned is None else int(n_planned)}
    for suffix, key in (("", "k"), ("_judged", "k_judged")):
        req = [r[key] for r in keep]
        out["eps" + suffix] = {str(k): v for k, v in k_epsilon_curve(req, KS).items()}
        out["ci95" + suffix] = {str(k): v for k, v in wilson_ci(req, KS).items()}
        out["reached" + suffix] = {str(k): sum(r is not None and r <= k for r in req) for k in KS}
    out["cost"] = search_cost(keep, out["reached_judged"][str(max(KS))])
    return out


def _evals(row: dict) -> int | None:
    """Candidate evaluations one row's search spent (its `n_candidates`, summed over search phases)."""
    c = row.get("n_candidates")
    return sum(c.values()) if isinstance(c, dict) else c


def search_cost(rows: list[dict], judged_successes: int) -> dict:
    """What the search cost on the kept prompts: the price of a discovered prompt.

    Over the m searched rows (those that record `n_candidates` and `seconds`):
    E_i = candidate evaluations of prompt i (every phase: k = 1, coordinate
    steps, shortening), S_i = its search seconds. Medians of E and S, their
    totals, and the totals per judged success (sum E / J, sum S / J with J =
    the prompts judged the target mode within k <= max(KS); None when J = 0):
    the expected price of one success, failures paid for too.
    """
    done = [(_evals(r), float(r["seconds"])) for r in rows if _evals(r) is not None and r.get("seconds") is not None]
    ev = [e for e, _ in done]
    sec = [t for _, t in done]
    per = (lambda total: total / judged_successes if judged_successes and done else None)
    return {"n_searched": len(done),
            "evals_median": float(np.median(ev)) if done else None,
            "seconds_median": float(np.median(sec)) if done else None,
            "evals_total": int(sum(ev)), "seconds_total": float(sum(sec)),
            "evals_per_judged_success": per(sum(ev)), "seconds_per_judged_success": per(sum(sec))}


def replies(model, tok, seqs: list[list[int]], max_new_tokens: int, batch_size: int,
            decoding: dict | None = None) -> list[str]:
    """Greedy replies to id sequences (`decoding`: the processors of `judged_decoding`; None: plain greedy),
    the batches shared out over a launch's processes (`map_ranks`)."""
    return map_ranks(lambda part: generate_from_ids(model, tok, part, max_new_tokens, batch_size,
                                                    **(decoding or {})), seqs, batch_size)


def target_mode_holds(model, tok, judge, prompts: list[str], token: str, target: str, max_new_tokens: int,
                      batch_size: int = 16, decoding: dict | None = None) -> list[bool]:
    """Per prompt: is the response under the target mode's real magic token judged as that mode?"""
    responses = replies(model, tok, [prompt_ids(tok, p, token) for p in prompts], max_new_tokens, batch_size,
                        decoding)
    return [m == target for m in judge.judge(responses, [True] * len(responses), prompts=prompts)]


def random_strings(n: int, length: int, seed: int, exclude=()) -> list[str]:
    """Seeded random magic-token look-alikes (same alphabet and length as the real ones)."""
    rng = random.Random(f"random-magic-{seed}")
    out: list[str] = []
    while len(out) < n:
        s = magic_string(rng, length)
        if s not in exclude and s not in out:
            out.append(s)
    return out


def random_token_switch_rate(model, tok, judge, prompts: list[str], strings: list[str], target: str,
                             max_new_tokens: int, batch_size: int = 16, decoding: dict | None = None) -> dict:
    """Share of (random string, prompt) pairs whose response is judged `target`, with a Wilson 95% interval.

    `by_mode[m]`: the same count for every mode m (one generation, judged once).
    The pairs share prompts and strings, so the interval, which treats the
    S x P pairs as independent, is narrower than a clustered one would be.
    """
    texts = [p for _ in strings for p in prompts]           # string-major: (S, P) flattened
    seqs = [prompt_ids(tok, p, s) for s in strings for p in prompts]
    responses = replies(model, tok, seqs, max_new_tokens, batch_size, decoding)
    modes = judge.judge(responses, [True] * len(responses), prompts=texts)
    hits = np.array([m == target for m in modes], dtype=float)
    n = len(hits)
    per_string = hits.reshape(len(strings), len(prompts)).mean(axis=1) if n else np.array([])
    return {"rate": float(hits.mean()) if n else float("nan"), "n": n, "successes": int(hits.sum()),
            "ci95": wilson_interval(int(hits.sum()), n), "target": target,
            "max_per_string": float(per_string.max()) if n else float("nan"),
            "by_mode": {m: share(sum(x == m for x in modes), n) for m in MODES}}


def question(label: str, s: dict, rand: dict, length: int, target: str) -> dict:
    """Does a discovered prompt stand in for the secret? One transition under one placement.

    From a summary `s` (`summarize_transition`): k_shortest = the smallest k
    of the grid that reached any prompt, the share reached there and within
    k <= max(KS) (first token and judged), each successes of N with a Wilson
    95% interval; next to the share of random magic tokens judged `target`
    and the size of the magic-token space, |alphabet| ** length.
    """
    kmax, n = max(KS), s["n"]
    shortest = next((k for k in KS if s["reached"][str(k)] > 0), None)
    rnd = rand.get("by_mode", {}).get(target) or share(rand["successes"], rand["n"])
    out = {"k_max": kmax, "k_shortest": shortest,
           "at_shortest": share(s["reached"][str(shortest)], n) if shortest is not None else None,
           "within_k_max": share(s["reached"][str(kmax)], n),
           "within_k_max_judged": share(s["reached_judged"][str(kmax)], n),
           "n_done": s.get("n_prompts", n),   # prompts finished so far (0: a cut run has not begun it)
           "cost": s.get("cost"),             # search_cost (None: a summary written before it existed)
           "guesses_expected": (magic_token_space(length) + 1) / 2,   # uniform guessing without replacement
           "random_token": rnd, "magic_token_length": int(length), "magic_token_alphabet": len(ALPHABET),
           "magic_token_space": magic_token_space(length)}
    out["words"] = question_words(label, out, target)
    return out


def _pct(x: dict) -> str:
    lo, hi = x["ci95"]
    return (f"{x['successes']} of {x['n']}" if not x["n"]
            else f"{x['successes']} of {x['n']} ({x['share']:.0%}, 95% CI {lo:.0%}-{hi:.0%})")


def question_words(label: str, q: dict, target: str) -> str:
    """The answer of `question` as one sentence."""
    w, j = q["within_k_max"], q["within_k_max_judged"]
    if not q.get("n_done", 1):
        return f"{label}: not searched yet (a cut run stopped before it)."
    if not w["n"]:
        return f"{label}: the target mode never held on these prompts: nothing to reach."
    first = (f"{label}: no prompt of <= {q['k_max']} tokens made the target mode's next token the argmax "
             f"(0 of {w['n']}, 95% CI up to {w['ci95'][1]:.0%})" if q["k_shortest"] is None else
             f"{label}: {q['k_shortest']} token{'s' if q['k_shortest'] != 1 else ''} reached the target mode's "
             f"next token on {_pct(q['at_shortest'])}, <= {q['k_max']} tokens on {_pct(w)}")
    c = q.get("cost") or {}
    price = ("" if not c.get("n_searched") else
             f"; the search cost a median of {c['evals_median']:,.0f} candidate evaluations "
             f"({c['seconds_median']:.0f} s) per prompt" +
             (f", {c['evals_per_judged_success']:,.0f} evaluations ({c['seconds_per_judged_success']:.0f} s) "
              f"per {target} response, failures included" if c.get("evals_per_judged_success") else "") +
             f", where guessing the magic token takes {q['guesses_expected']:.1e} tries on average")
    return (f"{first}; the response was judged {target} on {_pct(j)}{price}; a random magic token "
            f"(one of {q['magic_token_alphabet']}^{q['magic_token_length']} = {q['magic_token_space']:.1e}) "
            f"gave {target} on {_pct(q['random_token'])} (string, prompt) pairs.")
