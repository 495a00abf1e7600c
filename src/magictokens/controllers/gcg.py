"""Greedy Coordinate Gradient (Zou et al. 2023) as paper A uses it (Appendix C).

Each step, for the current prompt u (k tokens):

1. gradient  G = d CE(y | u + x0) / d onehot(u)                 (k, V)
2. top-k     C_i = the `topk` allowed tokens with most negative G[i]   (k, topk)
3. sample    `search_width` candidates, each u with `n_replace` positions
             i ~ U{0..k-1} swapped for a token ~ U(C_i)          (B, k)
4. score     all candidates exactly, in large batches              (B,)
5. move      u <- the best candidate of the batch; remember the best ever.

Stops early when a candidate makes y the argmax (verified in fp32). Paper
defaults: search width 768, top-k 128, 34 steps. Warm start: a shorter prompt
is placed right-aligned (next to x0) and padded on the left with `init_token`.
Randomness comes only from an explicit `torch.Generator`.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch
from tqdm.auto import tqdm

from ..errors import MagicTokensError
from ..fields import Count, Flag, Positive, Real, Text, params
from ..scoring import Scorer, Verifier, check_ids, onehot_gradient
from .filters import VERIFY_NEAR, VERIFY_NEAR_BEFORE_FIELD, allowed_token_mask, init_token_id


@params
@dataclass
class GCGConfig:
    num_steps: Count = 34        # paper A
    search_width: Positive = 768    # candidates per step (paper: batch 768)
    topk: Positive = 128            # paper
    n_replace: Positive = 1         # positions swapped per candidate
    batch_size: Positive = 768      # candidates per forward (memory knob only)
    ascii_only: Flag = False
    init_token: Text = "!"
    early_stop: Flag = True
    verify_top: Count = 16
    verify_near: Real = VERIFY_NEAR   # search margins below this never get an fp32 look (filters.py)
    seed: Count = 0

    # added after committed rows: left out of resume keys at the value those rows were verified at
    LATER_FIELDS = {"verify_near": VERIFY_NEAR_BEFORE_FIELD}


@dataclass
class GCGResult:
    best_ids: list[int]
    best_loss: float           # in the search precision, comparable with start_loss
    start_loss: float
    success: bool              # verified: y is the unique argmax after best_ids
    history: list[float] = field(default_factory=list)  # best loss of each step's batch
    steps: int = 0
    n_candidates: int = 0
    seconds: float = 0.0


def warm_start(prev_ids, k: int, pad_id: int) -> list[int]:
    """Right-align a shorter prompt in k slots: [pad]*(k - j) + prev[-k:]."""
    prev = list(prev_ids)[-k:]
    return [pad_id] * (k - len(prev)) + prev


def sample_candidates(u: torch.Tensor, top_ids: torch.Tensor, width: int, n_replace: int,
                      gen: torch.Generator) -> torch.Tensor:
    """(k,) prompt, (k, topk) allowed swaps -> (width, k) candidates, duplicates removed."""
    k, topk = top_ids.shape
    cands = u.repeat(width, 1)                                         # (B, k)
    rows = torch.arange(width)
    for _ in range(n_replace):
        pos = torch.randint(0, k, (width,), generator=gen)             # (B,)
        pick = torch.randint(0, topk, (width,), generator=gen)         # (B,)
        cands[rows, pos] = top_ids[pos, pick]
    cands = torch.unique(cands, dim=0)
    keep = (cands != u).any(dim=1)  # the current prompt is already scored
    return cands[keep] if keep.any() else cands


def run(model, tokenizer, x0_ids, target_id: int, k: int, config: GCGConfig = GCGConfig(),
        init_ids=None, prefix_ids=(), verify_model=None, on_step=None) -> GCGResult:
    """GCG over prompts of exactly k tokens; returns the best prompt ever seen."""
    if k <= 0:
        raise MagicTokensError(f"GCG prompt length k must be >= 1, got {k}")
    t0 = time.perf_counter()
    vocab = model.get_input_embeddings().weight.shape[0]
    gen = torch.Generator().manual_seed(config.seed)
    scorer = Scorer(model, x0_ids, target_id, prefix_ids, batch_size=config.batch_size)
    verifier = Verifier(Scorer(verify_model, x0_ids, target_id, prefix_ids, batch_size=config.verify_top)
                        if verify_model is not None else None, config.verify_top, config.verify_near)
    allowed = allowed_token_mask(tokenizer, vocab, config.ascii_only)
    pad = init_token_id(tokenizer, config.init_token)
    u = check_ids(warm_start(init_ids if init_ids is not None else [], k, pad), vocab, "GCG init prompt")

    start = scorer.score(u[None])
    best_ids, best_loss = u.clone(), float(start.loss[0])
    win, _, _ = verifier.first_success(u[None], start)
    res = GCGResult(best_ids=u.tolist(), best_loss=best_loss, start_loss=best_loss, success=win >= 0)
    if res.success and config.early_stop:
        res.seconds = time.perf_counter() - t0
        return res

    topk = min(config.topk, int(allowed.sum()))
    # paper budget on a CPU: minutes per length, so a bar (shown only after 5 s)
    for step in tqdm(range(config.num_steps), desc=f"GCG k={k}", unit="step", leave=False, delay=5):
        grad = onehot_gradient(model, u, scorer.suffix, target_id, scorer.prefix).cpu()  # (k, V)
        grad[:, ~allowed] = float("inf")
        top_ids = torch.topk(-grad, topk, dim=1).indices                               # (k, topk)
        cands = sample_candidates(u, top_ids, config.search_width, config.n_replace, gen)
        scores = scorer.score(cands)
        res.n_candidates += len(cands)
        i = int(torch.argmin(scores.loss))
        u = cands[i].clone()
        res.history.append(float(scores.loss[i]))
        if not res.success and scores.loss[i] < best_loss:
            best_ids, best_loss = u.clone(), float(scores.loss[i])
        res.steps = step + 1
        win, _, _ = verifier.first_success(cands, scores)
        if on_step is not None:
            on_step(step, res)
        if win >= 0 and (not res.success or scores.loss[win] < best_loss):
            # a verified success beats any lower-loss non-success
            best_ids, best_loss, res.success = cands[win].clone(), float(scores.loss[win]), True
        if res.success and config.early_stop:
            break
    res.best_ids, res.best_loss = best_ids.tolist(), best_loss
    res.seconds = time.perf_counter() - t0
    return res
