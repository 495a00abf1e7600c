"""A back-off search on a CPU budget: paper A's question, ~20x fewer evaluations.

Same question as Algorithm 1 (`backoff.py`): the shortest k in `ks` with a
u (k tokens) such that y = argmax P(. | u + x0), success verified in fp32.
What changes is how each k is searched (evidence: shared/SEARCH-NOTES.md and
benchmarks/bench_fast.py):

    k = 0     check x0 alone (one forward)
    k = 1     score only the `k1_candidates` tokens ranked best by the one-hot
              gradient at the new position, plus y itself, instead of the whole
              vocabulary (N calibrated against exhaustive sweeps:
              `bench_fast.py calibration`, exhaustive.py)
    k >= 2    a warm-started coordinate search (`coordinate.py`) instead of the
              k = 2, 3 vocabulary sweeps and the 34-step GCG: the best prompt of
              the previous k, right-aligned, padded on the left with y (51% of the
              authors' k = 4 solutions contain y) and random allowed tokens
    shorten   after a success at k, every prompt that deletes tokens down to a
              smaller grid length (at most `shorten_max` of them) is checked:
              all smaller lengths had failed, so any such hit lowers the answer
    below     then (`below`, off by default) a bounded extra budget at the grid
              length below the answer: a further k = 1 sweep, or coordinate
              searches started from deletions of the found prompt (`below.py`)

Success rule: any scored candidate whose fp32 argmax is y ends that k (the
authors check only greedy's lowest-loss token and GCG's final prompt, so this
rule can only give the same or a lower eps at equal candidates).
"""
from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field
from typing import Literal

import torch

from ..errors import MagicTokensError
from ..fields import Count, Flag, Positive, params
from ..scoring import Scorer, Verifier, k0_state, objective, onehot_gradient, score_until_success
from . import below as below_search
from . import coordinate
from .filters import allowed_token_mask, retokenizes
from .results import BackoffResult, TraceStep, resume_key


@params
@dataclass
class FastConfig:
    ks: list[Positive] = field(default_factory=lambda: [1, 2, 3, 4, 6, 8, 10])   # paper A's grid
    k1_candidates: Count = 1024         # gradient top-N scored at k = 1 (calibration: results/bench/)
    short_steps: Count = 6              # coordinate steps for k <= 3 (paper: whole-vocabulary sweeps)
    coordinate: coordinate.CoordinateConfig = field(default_factory=coordinate.CoordinateConfig)
    pad: Literal["target", "random"] = "target"               # new left slots: target = y then random tokens | random
    shorten: Flag = True
    shorten_max: Count = 64             # deletion candidates checked per smaller length
    below: below_search.BelowConfig = field(default_factory=below_search.BelowConfig)   # off: see below.py

    def __post_init__(self):
        if isinstance(self.coordinate, dict):
            self.coordinate = coordinate.CoordinateConfig(**self.coordinate)
        if isinstance(self.below, dict):
            self.below = below_search.BelowConfig(**self.below)
        ks = [int(k) for k in self.ks]
        if not ks or any(k <= 0 for k in ks) or ks != sorted(set(ks)):
            raise MagicTokensError(f"fast.ks must be strictly increasing lengths >= 1 (k=0 is always checked), got {ks}")
        if self.pad not in ("target", "random"):
            raise MagicTokensError(f"fast.pad={self.pad!r}: use 'target' or 'random'")
        for name in ("k1_candidates", "short_steps", "shorten_max"):
            if int(getattr(self, name)) <= 0:
                raise MagicTokensError(f"fast.{name} must be >= 1, got {getattr(self, name)}")

    # What a runner needs to know of a search, told by the config itself (backoff.BackoffConfig has the same).
    METHOD = "fast"                 # its name in a row's resume header
    # fields added after rows were committed, at the value those rows were searched under (resume_key)
    LATER_FIELDS = {"below": below_search.OFF}
    shares_first_step = False       # no whole-vocabulary k=1 sweep to share between targets of one x0

    def resume_entry(self) -> dict:
        """The method's part of a row's resume header: {"method": "fast", "fast": resume_key(self)}."""
        return {"method": self.METHOD, self.METHOD: resume_key(self)}

    def batch_sizes(self) -> dict:
        """Candidates per forward (recorded in each row, never keyed: they only chunk a step's forwards)."""
        return {"coordinate": self.coordinate.batch_size}

    def budget_label(self) -> str:
        """Short budget string for figure stamps."""
        c = self.coordinate
        return (f"fast search: k=1 grad top-{self.k1_candidates} | coordinate k=2,3 x{self.short_steps} steps, "
                f"k={','.join(str(k) for k in self.ks if k > 3)} x{c.max_steps} | width {c.width}-{c.width_max}, "
                f"top-k {c.topk}, {c.objective} loss | any fp32-verified candidate stops"
                + (f" | below: {self.below.starts} x {self.below.steps} steps, k=1 +{self.below.k1_sweep}, "
                   f"{self.below.levels} level(s)" if self.below.on else ""))

    def search(self, model, tokenizer, x0_ids, target_id: int, verify_model=None, seed: int = 0,
               prefix_ids=()) -> BackoffResult:
        """`run` under this config (`prefix_ids`: special tokens scored before u + x0, e.g. Gemma's <bos>)."""
        return run(model, tokenizer, x0_ids, target_id, self, verify_model=verify_model, seed=seed,
                   prefix_ids=prefix_ids)


def pad_left(prev: list[int], k: int, target_id: int, allowed_ids: torch.Tensor, mode: str,
             gen: torch.Generator) -> list[int]:
    """Right-align `prev` in k slots; the new slots get y (mode target, once) and random allowed tokens."""
    prev = list(prev)[-k:]
    n = k - len(prev)
    pads = allowed_ids[torch.randint(0, len(allowed_ids), (n,), generator=gen)].tolist()
    if mode == "target" and n > 0 and target_id not in prev:
        pads[-1] = int(target_id)     # y right next to the previous prompt
    return pads + prev


def deletions(ids: list[int], k_new: int, limit: int) -> torch.Tensor | None:
    """Every subsequence of `ids` of length k_new (order kept), or None if more than `limit`."""
    n = math.comb(len(ids), k_new)
    if n == 0 or n > limit:
        return None
    return below_search.deletions_of(ids, k_new)


def run(model, tokenizer, x0_ids, target_id: int, config: FastConfig = FastConfig(), verify_model=None,
        seed: int = 0, prefix_ids=(), on_k=None) -> BackoffResult:
    """The fast back-off. `model` searches (the hardware's dtype), `verify_model` (fp32) decides success.

    `on_k(k, success)`: called after each length is searched (a progress bar); it changes nothing.
    """
    t0 = time.perf_counter()
    x0, base_loss, base_rank, margin = k0_state(model, verify_model, x0_ids, target_id, prefix_ids)
    vocab = model.get_input_embeddings().weight.shape[0]
    trace = [TraceStep(k=0, method="none", loss=base_loss, success=margin > 0, seconds=0.0, n_candidates=1)]
    n_cand = {"k1": 0, "coordinate": 0, "shorten": 0}
    secs = {"k1": 0.0, "coordinate": 0.0, "shorten": 0.0}
    if config.below.on:     # rows searched without it keep the keys they were written with
        n_cand["below"], secs["below"] = 0, 0.0
    n_grad = 0
    cc = config.coordinate
    verifier = Verifier(Scorer(verify_model, x0, target_id, prefix_ids, batch_size=cc.verify_top)
                        if verify_model is not None else None, cc.verify_top, cc.verify_near)

    def result(k, ids):
        ids = [int(t) for t in ids]
        return BackoffResult(
            k=k, ids=ids, text=tokenizer.decode(ids),
            retokenizes=retokenizes(tokenizer, ids + x0.tolist()),
            base_loss=base_loss, base_rank=base_rank, trace=trace, seconds=time.perf_counter() - t0,
            n_candidates=n_cand, seconds_by_method=secs, n_gradients=n_grad,
            verify={"checked": verifier.n_checked, "false_positive": verifier.n_false_positive,
                    "unchecked_near": verifier.n_unchecked_near})

    if margin > 0:
        return result(0, [])
    gen = torch.Generator().manual_seed(int(seed))
    allowed = allowed_token_mask(tokenizer, vocab, cc.ascii_only)
    allowed_ids = torch.nonzero(allowed).squeeze(1)
    scorer = Scorer(model, x0, target_id, prefix_ids, batch_size=cc.batch_size)
    best: list[int] = []
    for k in config.ks:
        t1 = time.perf_counter()
        if k == 1:
            # rank every token for the single slot by the gradient at u = (y): (1, V) -> top-N, y first
            grad = onehot_gradient(model, torch.tensor([target_id]), scorer.suffix, target_id, scorer.prefix,
                                   cc.objective)[0].cpu()
            n_grad += 1
            grad[~allowed] = float("inf")
            top = torch.topk(-grad, min(config.k1_candidates, int(allowed.sum()))).indices
            cands = torch.cat([torch.tensor([target_id]), top[top != target_id]])[:, None]     # (N, 1)
            scores, win, n = score_until_success(scorer, verifier, cands, cc.chunk)
            obj = objective(scores, cc.objective)
            i = win if win >= 0 else int(torch.argmin(obj))
            best, ok, loss = cands[i].tolist(), win >= 0, float(scores.loss[i])
            n_cand["k1"] += n
            step = dict(steps=1, n_candidates=n, n_gradients=1)
            method = "k1_top"
        else:
            cfg = dataclasses.replace(cc, max_steps=config.short_steps if k <= 3 else cc.max_steps)
            init = pad_left(best, k, target_id, allowed_ids, config.pad, gen)
            r = coordinate.run(model, tokenizer, x0, target_id, k, cfg, init_ids=init, verify_model=verify_model,
                               seed=int(torch.randint(0, 2**31 - 1, (1,), generator=gen)), prefix_ids=prefix_ids,
                               verifier=verifier)
            best, ok, loss = r.best_ids, r.success, r.best_loss
            n_cand["coordinate"] += r.n_candidates
            n_grad += r.n_gradients
            step = dict(steps=r.steps, n_candidates=r.n_candidates, n_gradients=r.n_gradients)
            method = "coordinate"
        dt = time.perf_counter() - t1
        secs["k1" if k == 1 else "coordinate"] += dt
        trace.append(TraceStep(k=k, method=method, loss=loss, success=ok, seconds=dt, ids=list(best), **step))
        if on_k is not None:
            on_k(k, ok)
        if ok:
            k_found, ids = k, list(best)
            if config.shorten:
                k_found, ids = _shorten(k_found, ids, config, scorer, verifier, trace, n_cand, secs)
            if config.below.on:
                b = below_search.run(model, tokenizer, scorer, verifier, k_found, ids, config.ks, config.below,
                                     cc, allowed, config.k1_candidates, verify_model=verify_model,
                                     seed=below_seed(seed), prefix_ids=prefix_ids)
                trace.extend(b.trace)
                n_cand["below"] += b.n_candidates
                secs["below"] += b.seconds
                n_grad += b.n_gradients
                k_found, ids = b.k, b.ids
            return result(k_found, ids)
    return result(None, best)


def below_seed(seed: int) -> int:
    """The `below` step's own seed (not the search's generator): the step run later on a stored row
    (`below_row`) draws exactly what it would have drawn inside the search."""
    return (int(seed) * 1_000_003 + 17) % 2**31


def _shorten(k: int, ids: list[int], config: FastConfig, scorer: Scorer, verifier: Verifier, trace, n_cand, secs):
    """Delete tokens from a successful prompt down to each smaller grid length, shortest first."""
    t1 = time.perf_counter()
    for k_new in [kk for kk in config.ks if kk < k]:
        cands = deletions(ids, k_new, config.shorten_max)
        if cands is None:
            continue
        scores, win, n = score_until_success(scorer, verifier, cands, len(cands))
        n_cand["shorten"] += n
        if win >= 0:
            ids = cands[win].tolist()
            trace.append(TraceStep(k=k_new, method="shorten", loss=float(scores.loss[win]), success=True,
                                   seconds=time.perf_counter() - t1, n_candidates=n, ids=ids, steps=0, n_gradients=0))
            secs["shorten"] += time.perf_counter() - t1
            return k_new, ids
    secs["shorten"] += time.perf_counter() - t1
    return k, ids
