"""The exhaustive k = 1 sweep: every allowed token t tried as the whole control prompt u = (t).

The ground truth that calibrates the fast search's k = 1 step (`fast.py` scores
only the gradient's top-N tokens; benchmarks/bench_fast.py `calibration`):

    scores   search-dtype margins m(t) = log P(y | t + x0) - max_{y' != y} log P(y' | t + x0)
             for all V_allowed tokens at once: (V_allowed, 1) -> (V_allowed,)
    solving  S = {t : fp32 m(t) > 0}: y is the unique fp32 argmax after u = (t).
             Only the `near_cap` highest search margins above `verify_near` are re-scored
             in fp32 (the verifier's shortlist rule), so with a capped shortlist S may miss
             a solver and a solver's best rank below is an upper bound.
    ranks    for each gradient ranking r (one-hot gradient of the objective at one
             placeholder token, most negative first), min_{t in S} rank_r(t): the
             smallest top-N of r that holds a solver (0-based; None when S is empty).

`authors_check_solves`: paper A's greedy checks only the lowest-loss token; does it solve?
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch

from ..fields import Count, Positive, Real, params
from ..scoring import Scorer, onehot_gradient
from .filters import VERIFY_NEAR, allowed_token_mask, init_token_id

# gradient rankings: name -> (the placeholder token at u's one slot, the objective differentiated);
# "target" places y itself (as fast.py's k = 1 step does), any other string is that single token
RANKINGS = {"ce_at_y": ("target", "ce"), "ce_at_bang": ("!", "ce"), "margin_at_y": ("target", "margin")}


@params
@dataclass
class SweepConfig:
    batch_size: Positive = 256      # candidates per forward (memory knob only)
    near_cap: Count = 512           # fp32 look at no more than this many near-successes
    verify_near: Real = VERIFY_NEAR


@dataclass
class K1Sweep:
    """One sweep; its fields, in this order, are a calibration row's (results/bench/fast/calibration.jsonl)."""
    n_allowed: int                  # V_allowed: tokens tried
    solving: list[int]              # S, in decreasing search margin
    min_rank: dict = field(default_factory=dict)   # ranking -> best solver's 0-based rank | None
    authors_check_solves: bool = False             # the lowest-loss token is in S
    n_near_checked: int = 0         # shortlist size (== near_cap: capped)
    seconds: float = 0.0


def run(model, tokenizer, x0_ids, target_id: int, config: SweepConfig = SweepConfig(),
        verify_model=None) -> K1Sweep:
    """Sweep every allowed token at k = 1. `model` scores (search dtype), `verify_model` (fp32) decides."""
    t0 = time.perf_counter()
    judge = verify_model if verify_model is not None else model
    allowed = allowed_token_mask(tokenizer, judge.get_input_embeddings().weight.shape[0])   # (V,)
    ids = torch.nonzero(allowed).squeeze(1)                                                 # (V_allowed,)
    scorer = Scorer(model, x0_ids, target_id, batch_size=config.batch_size)
    s = scorer.score(ids[:, None])
    near = torch.argsort(s.margin, descending=True)
    near = near[s.margin[near] > config.verify_near][:config.near_cap]    # the fp32 shortlist
    solving = []
    if len(near):
        v = Scorer(judge, x0_ids, target_id, batch_size=config.batch_size).score(ids[near][:, None])
        solving = ids[near][v.margin > 0].tolist()
    ranks = {}
    for name, (place, obj) in RANKINGS.items():
        place_id = target_id if place == "target" else init_token_id(tokenizer, place)
        g = onehot_gradient(model, torch.tensor([place_id]), scorer.suffix, target_id, None, obj)[0].cpu()   # (V,)
        g[~allowed] = float("inf")
        order = torch.argsort(g)                        # most negative first: the best swap first
        pos = torch.empty_like(order)
        pos[order] = torch.arange(len(order))           # token -> its rank
        ranks[name] = min((int(pos[t]) for t in solving), default=None)
    lowest = int(ids[int(torch.argmin(s.loss))])
    return K1Sweep(n_allowed=int(len(ids)), solving=solving, min_rank=ranks, authors_check_solves=lowest in solving,
                   n_near_checked=int(len(near)), seconds=time.perf_counter() - t0)
