"""Back-off prompt search (paper A, Algorithm 1).

For a state x0 and target y, find the shortest control prompt u with
y = argmax P(. | u + x0):

    k = 0      check x0 alone
    k = 1,2,3  greedy back-generation, nested (k=2 extends k=1)
    k = 4,6,8,10  GCG, each warm-started right-aligned from the best prompt so far

The first k that succeeds (verified in fp32) is the answer ("required k");
None means unsolved within the budget (plotted at "inf"). k=0 also gives the
base loss -log P(y | x0) and the base rank of y (0 = already the argmax).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

from ..errors import MagicTokensError
from ..fields import Positive, params
from ..scoring import k0_state
from . import gcg as gcg_mod
from . import greedy as greedy_mod
from .filters import retokenizes
from .results import BackoffResult, TraceStep, resume_key


@params
@dataclass
class BackoffConfig:
    greedy_ks: list[Positive] = field(default_factory=lambda: [1, 2, 3])
    gcg_ks: list[Positive] = field(default_factory=lambda: [4, 6, 8, 10])
    greedy: greedy_mod.GreedyConfig = field(default_factory=greedy_mod.GreedyConfig)
    gcg: gcg_mod.GCGConfig = field(default_factory=gcg_mod.GCGConfig)

    def __post_init__(self):
        ks = list(self.greedy_ks) + list(self.gcg_ks)
        if any(int(k) <= 0 for k in ks):
            raise MagicTokensError(f"prompt lengths must be >= 1 (k=0 is always checked), got {ks}")
        if ks != sorted(set(ks)):
            raise MagicTokensError(f"greedy_ks then gcg_ks must be strictly increasing, got {ks}")
        if self.greedy_ks and list(self.greedy_ks) != list(range(1, max(self.greedy_ks) + 1)):
            raise MagicTokensError(f"greedy back-generation is nested: greedy_ks must be 1..K, got {self.greedy_ks}")

    # What a runner needs to know of a search, told by the config itself (fast.FastConfig has the same).
    METHOD = "backoff"              # its name in a row's resume header

    @property
    def shares_first_step(self) -> bool:
        """Whole-vocabulary greedy: one k=1 sweep of an x0 scores every target of it at once."""
        return self.greedy.candidates is None and bool(self.greedy_ks)

    def resume_entry(self) -> dict:
        """The method's part of a row's resume header: {"backoff": resume_key(self)} (its rows predate a
        `method` entry, so none is added: committed rows keep resuming)."""
        return {self.METHOD: resume_key(self)}

    def batch_sizes(self) -> dict:
        """Candidates per forward (recorded in each row, never keyed: they only chunk a step's forwards)."""
        return {"greedy": self.greedy.batch_size, "gcg": self.gcg.batch_size}

    def budget_label(self) -> str:
        """Short budget string for figure stamps, e.g. 'greedy k<=3 (all vocab) | GCG 768x128x34'."""
        g, c = self.greedy, self.gcg
        cands = "all vocab" if g.candidates is None else f"grad top-{g.candidates}"
        return (f"greedy k<={max(self.greedy_ks) if self.greedy_ks else 0} ({cands}) | "
                f"GCG k={','.join(map(str, self.gcg_ks))} width x topk x steps = {c.search_width}x{c.topk}x{c.num_steps}")

    def search(self, model, tokenizer, x0_ids, target_id: int, verify_model=None, seed: int = 0,
               first_step=None, prefix_ids=()) -> BackoffResult:
        """`run` under this config (`first_step`: a shared k=1 sweep, see `shares_first_step`, made with
        the same `prefix_ids`: special tokens scored before u + x0, e.g. Gemma's <bos>)."""
        return run(model, tokenizer, x0_ids, target_id, self, prefix_ids=prefix_ids, verify_model=verify_model,
                   seed=seed, first_step=first_step)


def run(model, tokenizer, x0_ids, target_id: int, config: BackoffConfig = BackoffConfig(),
        prefix_ids=(), verify_model=None, seed: int = 0, first_step=None) -> BackoffResult:
    """Algorithm 1. `model` searches (bf16 for speed), `verify_model` (fp32) decides success.

    `first_step`: a zero-argument callable returning greedy's k=1 sweep
    (`greedy.FirstStep`), called only if k=0 fails: several targets of one x0
    then share one sweep (reachability.run_families).
    """
    t0 = time.perf_counter()
    x0, base_loss, base_rank, margin = k0_state(model, verify_model, x0_ids, target_id, prefix_ids)
    trace = [TraceStep(k=0, method="none", loss=base_loss, success=margin > 0, seconds=0.0, n_candidates=1)]

    def result(k, ids):
        ids = list(ids)
        return BackoffResult(k=k, ids=ids, text=tokenizer.decode(ids), retokenizes=retokenizes(tokenizer, ids + x0.tolist()),
                             base_loss=base_loss, base_rank=base_rank, trace=trace,
                             seconds=time.perf_counter() - t0, n_candidates=n_cand, seconds_by_method=secs)

    n_cand, secs = {"greedy": 0, "gcg": 0}, {"greedy": 0.0, "gcg": 0.0}
    if margin > 0:
        return result(0, [])

    best: list[int] = []
    if config.greedy_ks:
        cfg = greedy_mod.GreedyConfig(**{**config.greedy.__dict__, "k_max": max(config.greedy_ks), "stop_on_success": True})
        g = greedy_mod.run(model, tokenizer, x0, target_id, cfg, prefix_ids=prefix_ids, verify_model=verify_model,
                           first_step=first_step() if first_step is not None else None)
        n_cand["greedy"] += g.n_candidates
        secs["greedy"] += g.seconds
        for k in sorted(g.ids_by_k):
            trace.append(TraceStep(k=k, method="greedy", loss=g.loss_by_k[k], success=g.success_by_k[k],
                                   seconds=g.seconds_by_k[k], n_candidates=g.n_candidates_by_k[k], ids=g.ids_by_k[k],
                                   steps=1, n_gradients=0 if config.greedy.candidates is None else 1))
        if g.k is not None:
            return result(g.k, g.ids_by_k[g.k])
        best = g.ids_by_k[max(g.ids_by_k)]

    for k in config.gcg_ks:
        cfg = gcg_mod.GCGConfig(**{**config.gcg.__dict__, "seed": seed * 1000 + k})
        r = gcg_mod.run(model, tokenizer, x0, target_id, k, cfg, init_ids=best, prefix_ids=prefix_ids,
                        verify_model=verify_model)
        n_cand["gcg"] += r.n_candidates
        secs["gcg"] += r.seconds
        trace.append(TraceStep(k=k, method="gcg", loss=r.best_loss, success=r.success, seconds=r.seconds,
                               n_candidates=r.n_candidates, ids=r.best_ids, steps=r.steps, n_gradients=r.steps))
        best = r.best_ids
        if r.success:
            return result(k, best)
    return result(None, best)
