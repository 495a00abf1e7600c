"""Warm-started coordinate search with a success check on every candidate.

GCG (Zou et al. 2023) re-shaped for a single next-token target on a small
budget, with the published tricks that cut evaluations (ACG, Faster-GCG,
I-GCG, ARCA; see shared/SEARCH-NOTES.md). Each step, for the prompt u (k tokens):

1. gradient  G = d L(u + x0) / d onehot(u)                        (k, V)
   L = margin loss  max_{v != y} logit_v - logit_y  (< 0 <=> success), or CE
2. top-k     C_i = the `topk` allowed tokens with most negative G[i]     (k, topk)
3. sample    `width(step)` candidates, `n_replace(step)` positions each,
             minus every prompt already scored (visited set)       (B, k);
             a `random_share` of them take any allowed token instead of a
             top-k one (the gradient ranks many strong tokens far down)
4. score     in chunks of `chunk`; after each chunk the near-successes are
             re-checked in fp32 and the search stops at the first verified one
5. move      u <- the best candidate of the step; keep the best ever.

Schedule (ACG): the first `multi_steps` steps swap 2 positions per candidate
(large moves while far from the target), then 1; the width grows from `width`
to `width_max`, doubling every `grow_every` steps. Unlike the paper's GCG,
which checks only its final prompt after all 34 steps, any scored candidate
that makes y the argmax (fp32-verified) ends the search.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Literal

import torch

from ..errors import MagicTokensError
from ..fields import Count, Flag, Positive, Real, Share, params
from ..scoring import Scorer, Verifier, check_ids, objective, onehot_gradient, score_until_success
from .filters import VERIFY_NEAR, allowed_token_mask


@params
@dataclass
class CoordinateConfig:
    max_steps: Count = 16         # gradient steps at one k
    width: Positive = 64             # candidates at the first step ...
    width_max: Positive = 512        # ... doubling every `grow_every` steps up to this (ACG)
    grow_every: Positive = 3
    topk: Positive = 128             # swap tokens per position, by gradient (paper A: 128)
    multi_steps: Count = 2        # first steps swap 2 positions per candidate (ACG / I-GCG), then 1
    random_share: Share = 0.25  # share of candidates whose swap token is any allowed token, not a gradient top-k one
    chunk: Positive = 64             # success checked after every chunk of scored candidates
    objective: Literal["ce", "margin"] = "ce"       # ce | margin (what the gradient and the move minimise)
    batch_size: Positive = 64        # candidates per forward (memory knob only)
    ascii_only: Flag = False
    verify_top: Count = 8         # fp32 re-checks per chunk (highest search margins)
    verify_near: Real = VERIFY_NEAR   # search margins below this never get an fp32 look (filters.py)

    def __post_init__(self):
        if self.objective not in ("margin", "ce"):
            raise MagicTokensError(f"coordinate.objective={self.objective!r}: use 'margin' or 'ce'")
        for name in ("max_steps", "width", "width_max", "grow_every", "topk", "chunk", "batch_size", "verify_top"):
            if int(getattr(self, name)) <= 0:
                raise MagicTokensError(f"coordinate.{name} must be >= 1, got {getattr(self, name)}")
        if not 0.0 <= float(self.random_share) <= 1.0:
            raise MagicTokensError(f"coordinate.random_share must be in [0, 1], got {self.random_share}")

    def width_at(self, step: int) -> int:
        return min(self.width_max, self.width * 2 ** (step // self.grow_every))


@dataclass
class CoordinateResult:
    best_ids: list[int]
    best_obj: float             # objective of best_ids in the search precision (margin loss: < 0 = success)
    best_loss: float            # -log P(y | best_ids + x0), search precision
    success: bool               # verified in fp32: y is the unique argmax after best_ids
    steps: int = 0
    n_candidates: int = 0       # candidates scored (forwards), the start prompt included
    n_gradients: int = 0
    seconds: float = 0.0
    history: list[float] = field(default_factory=list)   # best objective of each step


def sample_swaps(u: torch.Tensor, top_ids: torch.Tensor, width: int, n_replace: int, visited: set,
                 gen: torch.Generator, allowed_ids: torch.Tensor | None = None, random_share: float = 0.0) -> torch.Tensor:
    """(k,) prompt, (k, topk) swap tokens -> (<= width, k) new candidates, none of them in `visited`.

    Draws 2x width with replacement, drops duplicates and visited prompts, keeps
    the first `width` in draw order (so the draw, not the id order, decides).
    A `random_share` of the draws take their token from all of `allowed_ids`:
    the one-hot gradient ranks some of the strongest single tokens (code
    punctuation that resets the context) tens of thousands deep.
    """
    k, topk = top_ids.shape
    n_draw = 2 * width
    cands = u.repeat(n_draw, 1)                                             # (2B, k)
    rows = torch.arange(n_draw)
    wild = torch.rand(n_draw, generator=gen) < random_share if allowed_ids is not None else None
    for _ in range(min(n_replace, k)):
        pos = torch.randint(0, k, (n_draw,), generator=gen)                  # (2B,)
        pick = torch.randint(0, topk, (n_draw,), generator=gen)              # (2B,)
        new = top_ids[pos, pick]
        if wild is not None and random_share > 0:
            any_tok = allowed_ids[torch.randint(0, len(allowed_ids), (n_draw,), generator=gen)]
            new = torch.where(wild, any_tok, new)
        cands[rows, pos] = new
    out, seen = [], set()
    for row in cands.tolist():
        t = tuple(row)
        if t in visited or t in seen:
            continue
        seen.add(t)
        out.append(row)
        if len(out) == width:
            break
    return torch.tensor(out, dtype=torch.long).reshape(-1, k)


def run(model, tokenizer, x0_ids, target_id: int, k: int, config: CoordinateConfig = CoordinateConfig(),
        init_ids=None, verify_model=None, seed: int = 0, visited: set | None = None,
        prefix_ids=(), verifier: Verifier | None = None) -> CoordinateResult:
    """Coordinate search over prompts of exactly k tokens from `init_ids` (length k).

    `verifier`: a caller's fp32 `Verifier` for this (x0, y), so its counts add up
    over several k; by default one is made from `verify_model`.
    """
    if k <= 0:
        raise MagicTokensError(f"coordinate search: prompt length k must be >= 1, got {k}")
    t0 = time.perf_counter()
    vocab = model.get_input_embeddings().weight.shape[0]
    u = check_ids(init_ids, vocab, "coordinate-search start prompt")
    if u.numel() != k:
        raise MagicTokensError(f"coordinate search: the start prompt has {u.numel()} tokens, want k={k}")
    gen = torch.Generator().manual_seed(int(seed))
    scorer = Scorer(model, x0_ids, target_id, prefix_ids, batch_size=config.batch_size)
    verifier = verifier if verifier is not None else Verifier(Scorer(verify_model, x0_ids, target_id, prefix_ids, batch_size=config.verify_top)
                        if verify_model is not None else None, config.verify_top, config.verify_near)
    allowed = allowed_token_mask(tokenizer, vocab, config.ascii_only)
    visited = set() if visited is None else visited

    start = scorer.score(u[None])
    visited.add(tuple(u.tolist()))
    win, _, _ = verifier.first_success(u[None], start)
    best_ids, best_obj, best_loss = u.clone(), float(objective(start, config.objective)[0]), float(start.loss[0])
    res = CoordinateResult(best_ids=u.tolist(), best_obj=best_obj, best_loss=best_loss, success=win >= 0,
                           n_candidates=1)
    topk = min(config.topk, int(allowed.sum()))
    for step in range(config.max_steps if not res.success else 0):
        grad = onehot_gradient(model, u, scorer.suffix, target_id, scorer.prefix, config.objective).cpu()  # (k, V)
        res.n_gradients += 1
        grad[:, ~allowed] = float("inf")
        top_ids = torch.topk(-grad, topk, dim=1).indices                                          # (k, topk)
        n_rep = 2 if step < config.multi_steps and k > 1 else 1
        cands = sample_swaps(u, top_ids, config.width_at(step), n_rep, visited, gen,
                             torch.nonzero(allowed).squeeze(1), config.random_share)
        if len(cands) == 0:            # every reachable swap already scored: nothing left to try here
            break
        scores, win, n = score_until_success(scorer, verifier, cands, config.chunk)
        res.n_candidates += n
        res.steps = step + 1
        visited.update(map(tuple, cands[:n].tolist()))
        obj = objective(scores, config.objective)
        if win >= 0:
            best_ids, best_obj, best_loss, res.success = cands[win].clone(), float(obj[win]), float(scores.loss[win]), True
            res.history.append(float(obj.min()))
            break
        i = int(torch.argmin(obj))
        u = cands[i].clone()           # GCG moves to the step's best even if it is worse: the visited set
        res.history.append(float(obj[i]))  # keeps it from walking back
        if obj[i] < best_obj:
            best_ids, best_obj, best_loss = u.clone(), float(obj[i]), float(scores.loss[i])
    res.best_ids, res.best_obj, res.best_loss = best_ids.tolist(), best_obj, best_loss
    res.seconds = time.perf_counter() - t0
    return res
