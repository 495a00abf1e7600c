"""Search below a found length: spend more only where the answer may change.

A back-off search (`fast.py`) that succeeds at k* has failed, on its budget, at
every grid length below k*. The authors' search (whole-vocabulary greedy at
k <= 3, GCG from its own start at k >= 4) sometimes succeeds there, so k* is an
upper bound looser than theirs on some instances. This step spends a bounded
extra budget at the grid length k' just below k*, and again below each new
success (at most `levels` lengths):

    k' = 1   score further tokens in the order of the one-hot gradient at u = (y):
             the `skip` best were scored by the fast search's k = 1 step, the next
             `k1_sweep` now (>= V: the whole allowed vocabulary, an exhaustive answer)
    k' >= 2  score every deletion of the prompt u* found at k* down to k' tokens
             (order kept: the prompt that works minus the tokens it can spare), then run
             a coordinate search (`coordinate.py`, `steps` steps) from each of the
             `starts` deletions with the lowest objective

Nothing here can raise k: a length is only ever replaced by a shorter verified
one, so k_below <= k* on every instance, and the cost is the added evaluations.
Success is the fast search's rule (any fp32-verified candidate).
"""
from __future__ import annotations

import dataclasses
import itertools
import time
from dataclasses import dataclass, field

import torch

from ..errors import MagicTokensError
from ..fields import Count, Positive, params
from ..scoring import Scorer, Verifier, objective, onehot_gradient, score_until_success
from . import coordinate
from .filters import allowed_token_mask
from .results import TraceStep


@params
@dataclass
class BelowConfig:
    k1_sweep: Count = 0        # gradient-ranked tokens scored at k' = 1 past the fast search's top-N (0: none)
    sweep_chunk: Positive = 512  # success checked after every chunk of the k' = 1 sweep
    starts: Count = 0          # coordinate searches at k' >= 2, one from each of the best deletions (0: none)
    steps: Positive = 16       # coordinate steps per start
    levels: Positive = 1       # grid lengths below k* searched at most (each needs a success at the one above)

    @property
    def on(self) -> bool:
        return self.k1_sweep > 0 or self.starts > 0

    def __post_init__(self):
        for name in ("k1_sweep", "starts"):
            if int(getattr(self, name)) < 0:
                raise MagicTokensError(f"below.{name} must be >= 0, got {getattr(self, name)}")
        for name in ("sweep_chunk", "steps", "levels"):
            if int(getattr(self, name)) <= 0:
                raise MagicTokensError(f"below.{name} must be >= 1, got {getattr(self, name)}")


OFF = BelowConfig()   # the value rows made before this step existed were searched under


@dataclass
class BelowResult:
    k: int                       # the shortest verified length: k* or lower
    ids: list[int]               # its prompt
    trace: list[TraceStep] = field(default_factory=list)   # one step per length tried below k*
    n_candidates: int = 0
    n_gradients: int = 0
    seconds: float = 0.0


def grid_below(ks, k: int) -> int | None:
    """The largest grid length < k (None if k is the smallest)."""
    lower = [kk for kk in ks if kk < k]
    return max(lower) if lower else None


def deletions_of(ids: list[int], k_new: int) -> torch.Tensor:
    """(C(k, k_new), k_new): every subsequence of `ids` with k_new tokens, order kept."""
    return torch.tensor([[ids[i] for i in c] for c in itertools.combinations(range(len(ids)), k_new)],
                        dtype=torch.long)


def k1_rest(model, scorer: Scorer, allowed: torch.Tensor, skip: int, objective_kind: str) -> torch.Tensor:
    """(n,) the allowed tokens the fast search's k = 1 step did not score (y and the gradient top-`skip`),
    best first by the same one-hot gradient at u = (y)."""
    y = scorer.target
    grad = onehot_gradient(model, torch.tensor([y]), scorer.suffix, y, scorer.prefix, objective_kind)[0].cpu()
    grad[~allowed] = float("inf")
    order = torch.topk(-grad, int(allowed.sum())).indices                       # every allowed token, best first
    scored = torch.cat([torch.tensor([y]), torch.topk(-grad, min(skip, int(allowed.sum()))).indices])
    return order[~torch.isin(order, scored)]


def run(model, tokenizer, scorer: Scorer, verifier: Verifier, k_found: int, ids_found: list[int], ks,
        config: BelowConfig, coord: coordinate.CoordinateConfig, allowed: torch.Tensor, skip: int,
        verify_model=None, seed: int = 0, prefix_ids=()) -> BelowResult:
    """Search the grid lengths below `k_found` (a verified success with prompt `ids_found`).

    `scorer`/`verifier`: the caller's, for this (x0, y); `coord`: the fast search's coordinate
    config (its `max_steps` replaced by `config.steps`); `allowed`: (V,) bool mask;
    `skip`: the caller's k = 1 step scored y and the gradient top-`skip` (not scored again).
    """
    t0 = time.perf_counter()
    gen = torch.Generator().manual_seed(int(seed))
    out = BelowResult(k=int(k_found), ids=[int(t) for t in ids_found])
    for _ in range(config.levels):
        k_new = grid_below(ks, out.k)
        if k_new is None:
            break
        t1 = time.perf_counter()
        if k_new == 1:
            if config.k1_sweep <= 0:
                break
            cands = k1_rest(model, scorer, allowed, skip, coord.objective)[: config.k1_sweep][:, None]   # (N, 1)
            if len(cands) == 0:
                break
            scores, win, n = score_until_success(scorer, verifier, cands, config.sweep_chunk)
            i = win if win >= 0 else int(torch.argmin(objective(scores, coord.objective)))
            ok, best, loss, steps, n_grad = win >= 0, cands[i].tolist(), float(scores.loss[i]), 1, 1
            method = "below_k1"
        else:
            if config.starts <= 0:
                break
            dels = deletions_of(out.ids, k_new)                                          # (C, k')
            scores, win, n = score_until_success(scorer, verifier, dels, len(dels))
            ok, n_grad, steps = win >= 0, 0, 0
            if ok:
                best, loss = dels[win].tolist(), float(scores.loss[win])
            else:
                obj = objective(scores, coord.objective)
                starts = torch.argsort(obj)[: config.starts]
                best, loss, best_obj = dels[int(starts[0])].tolist(), float(scores.loss[starts[0]]), float("inf")
                cfg = dataclasses.replace(coord, max_steps=config.steps)
                visited = {tuple(r) for r in dels.tolist()}
                for s in starts.tolist():
                    r = coordinate.run(model, tokenizer, scorer.suffix.cpu(), scorer.target, k_new, cfg,
                                       init_ids=dels[s].tolist(), verify_model=verify_model,
                                       seed=int(torch.randint(0, 2**31 - 1, (1,), generator=gen)),
                                       visited=visited, prefix_ids=prefix_ids, verifier=verifier)
                    n += r.n_candidates - 1      # its start prompt is a deletion, counted above
                    n_grad += r.n_gradients
                    steps += r.steps
                    if r.success or r.best_obj < best_obj:
                        best, loss, best_obj = r.best_ids, r.best_loss, r.best_obj
                    if r.success:
                        ok = True
                        break
            method = "below"
        out.n_candidates += n
        out.n_gradients += n_grad
        out.trace.append(TraceStep(k=k_new, method=method, loss=loss, success=ok, seconds=time.perf_counter() - t1,
                                   n_candidates=n, ids=list(best), steps=steps, n_gradients=n_grad))
        if not ok:
            break
        out.k, out.ids = k_new, [int(t) for t in best]
    out.seconds = time.perf_counter() - t0
    return out


def run_alone(model, tokenizer, x0_ids, target_id: int, k_found: int, ids_found: list[int], ks, config: BelowConfig,
              coord: coordinate.CoordinateConfig, skip: int, verify_model=None, seed: int = 0,
              prefix_ids=()) -> tuple[BelowResult, dict]:
    """`run` after the search is gone (a stored row): its own scorer and fp32 verifier, built as the fast
    search builds them. -> (result, the verifier's counts: checked, false_positive, unchecked_near)."""
    scorer = Scorer(model, x0_ids, target_id, prefix_ids, batch_size=coord.batch_size)
    verifier = Verifier(Scorer(verify_model, x0_ids, target_id, prefix_ids, batch_size=coord.verify_top)
                        if verify_model is not None else None, coord.verify_top, coord.verify_near)
    allowed = allowed_token_mask(tokenizer, model.get_input_embeddings().weight.shape[0], coord.ascii_only)
    r = run(model, tokenizer, scorer, verifier, k_found, ids_found, ks, config, coord, allowed, skip,
            verify_model=verify_model, seed=seed, prefix_ids=prefix_ids)
    return r, {"checked": verifier.n_checked, "false_positive": verifier.n_false_positive,
               "unchecked_near": verifier.n_unchecked_near}
