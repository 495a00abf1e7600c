"""Greedy back-generation (paper A, Appendix C).

Grow the control prompt one token at a time, *prepending*: with the current
prompt u (length j-1), try every allowed token t and keep

    t* = argmin_t  -log P(y | t + u + x0),       u <- t* + u

(except that when some t already makes y the argmax - verified in fp32 - the
verified success with the largest margin is kept instead: a success is what
the back-off search asks for), so the prompt for k = 2 extends the one for k = 1 (nested). Stops early at the
first k whose prompt makes y the argmax (verified in fp32).

Cost per added token: |allowed vocab| forwards of k + |x0| tokens. On a GPU that
is the paper's method; on a 2-core CPU a full step takes minutes, so
``candidates=N`` scores only the N tokens ranked best by the one-hot gradient
at the new position (the same linearisation GCG uses); the figures say which.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch

from ..errors import MagicTokensError
from ..fields import Count, Flag, Positive, Real, Text, params
from ..scoring import Scorer, Scores, Verifier, check_ids, onehot_gradient
from .filters import VERIFY_NEAR, VERIFY_NEAR_BEFORE_FIELD, allowed_token_mask, init_token_id


@params
@dataclass
class GreedyConfig:
    k_max: Count = 3                # paper: greedy for k = 1, 2, 3
    candidates: Positive | None = None  # None = every allowed token (paper); N = gradient top-N
    batch_size: Positive = 4096        # candidates per forward
    ascii_only: Flag = False
    init_token: Text = "!"         # placeholder at the new position for the gradient
    verify_top: Count = 16          # fp32 re-checks of the best bf16 candidates
    verify_near: Real = VERIFY_NEAR   # search margins below this never get an fp32 look (filters.py)
    stop_on_success: Flag = True

    # added after committed rows: left out of resume keys at the value those rows were verified at
    LATER_FIELDS = {"verify_near": VERIFY_NEAR_BEFORE_FIELD}


@dataclass
class GreedyResult:
    ids_by_k: dict[int, list[int]] = field(default_factory=dict)   # nested prompts
    loss_by_k: dict[int, float] = field(default_factory=dict)
    success_by_k: dict[int, bool] = field(default_factory=dict)
    seconds_by_k: dict[int, float] = field(default_factory=dict)   # measured per k (a shared sweep: its time)
    n_candidates_by_k: dict[int, int] = field(default_factory=dict)
    k: int | None = None          # first k that succeeded, None if none did
    n_candidates: int = 0
    seconds: float = 0.0

    @property
    def best_ids(self) -> list[int]:
        return self.ids_by_k[self.k] if self.k is not None else self.ids_by_k[max(self.ids_by_k)]


def greedy_step(scorer: Scorer, prompt: torch.Tensor, candidates: torch.Tensor):
    """Score every candidate t prepended to `prompt`. -> (controls (N, j), Scores)

    (N,) candidate ids + (j-1,) prompt -> (N, j) controls.
    """
    controls = torch.cat([candidates[:, None], prompt.expand(len(candidates), -1)], dim=1)
    return controls, scorer.score(controls)


@dataclass
class FirstStep:
    """What greedy's k=1 sweep needs to decide, for one target: the few candidates
    that can win (the `verify_top` highest margins and the lowest loss), in vocabulary order."""
    controls: torch.Tensor    # (n, 1)
    scores: Scores            # (n,) fields
    n_scored: int             # candidates the shared sweep scored
    seconds: float            # its wall time


def shared_first_steps(model, tokenizer, x0_ids, target_ids, config: GreedyConfig = GreedyConfig(),
                       prefix_ids=()) -> dict[int, FirstStep]:
    """The whole-vocabulary k=1 sweep once for many targets of one x0. -> {target: FirstStep}

    u = (t) for every allowed t; one forward per candidate gives P(. | t + x0),
    so loss and margin of every target come from the same logits: (V_allowed, m).
    Greedy keeps the verified success with the largest margin, else the lowest
    loss, so per target only those candidates are kept; `run(first_step=...)`
    then decides exactly as if it had swept alone (tested).
    """
    if config.candidates is not None:
        raise MagicTokensError("a shared k=1 sweep needs the whole vocabulary (greedy.candidates = null)")
    t0 = time.perf_counter()
    vocab = model.get_input_embeddings().weight.shape[0]
    targets = sorted(set(int(t) for t in target_ids))
    scorer = Scorer(model, x0_ids, targets[0], prefix_ids, batch_size=config.batch_size)
    controls = torch.nonzero(allowed_token_mask(tokenizer, vocab, config.ascii_only)).squeeze(1)[:, None]
    loss, margin = scorer.score_many(controls, targets)                  # (N, m) each
    seconds = time.perf_counter() - t0
    out = {}
    for j, t in enumerate(targets):
        top = torch.topk(margin[:, j], min(config.verify_top, len(controls))).indices
        keep = torch.unique(torch.cat([top, torch.argmin(loss[:, j])[None]]))   # sorted: argmin ties resolve alike
        out[t] = FirstStep(controls[keep], Scores(loss[keep, j], margin[keep, j], torch.full((len(keep),), -1)),
                           len(controls), seconds)
    return out


def run(model, tokenizer, x0_ids, target_id: int, config: GreedyConfig = GreedyConfig(),
        prefix_ids=(), start_ids=(), verify_model=None, on_step=None,
        first_step: FirstStep | None = None) -> GreedyResult:
    """Greedy back-generation for k = len(start_ids)+1 ... config.k_max.

    `first_step` (from `shared_first_steps`, same x0 and target) replaces the
    k=1 sweep; its `n_scored` and `seconds` are added to this result (zero them
    for every user of one sweep but the first, so throughput stays honest).
    """
    if config.k_max <= 0:
        raise MagicTokensError(f"greedy k_max must be >= 1, got {config.k_max}")
    t0 = time.perf_counter()
    vocab = model.get_input_embeddings().weight.shape[0]
    scorer = Scorer(model, x0_ids, target_id, prefix_ids, batch_size=config.batch_size)
    verifier = Verifier(Scorer(verify_model, x0_ids, target_id, prefix_ids, batch_size=config.verify_top)
                        if verify_model is not None else None, config.verify_top, config.verify_near)
    allowed = allowed_token_mask(tokenizer, vocab, config.ascii_only)
    all_allowed = torch.nonzero(allowed).squeeze(1)
    prompt = check_ids(start_ids, vocab, "start prompt")
    placeholder = torch.tensor([init_token_id(tokenizer, config.init_token)])
    res = GreedyResult()
    for k in range(len(prompt) + 1, config.k_max + 1):
        t_k, n_k = time.perf_counter(), 0
        if first_step is not None and k == 1:
            controls, scores = first_step.controls, first_step.scores
            n_k = first_step.n_scored
            t0 -= first_step.seconds          # the shared sweep's time belongs to this result
            t_k -= first_step.seconds
        else:
            if config.candidates is None:
                cands = all_allowed
            else:
                # rank tokens for the new first position by the one-hot gradient
                grad = onehot_gradient(model, torch.cat([placeholder, prompt]), scorer.suffix, target_id,
                                       scorer.prefix)[0].cpu()          # (V,)
                grad[~allowed] = float("inf")
                cands = torch.topk(-grad, min(config.candidates, int(allowed.sum()))).indices
            controls, scores = greedy_step(scorer, prompt, cands)
            n_k = len(cands)
        res.n_candidates += n_k
        win, vloss, _ = verifier.first_success(controls, scores)
        best = win if win >= 0 else int(torch.argmin(scores.loss))
        prompt = controls[best].clone()
        res.ids_by_k[k] = prompt.tolist()
        res.loss_by_k[k] = vloss if win >= 0 else float(scores.loss[best])
        res.success_by_k[k] = win >= 0
        res.seconds_by_k[k], res.n_candidates_by_k[k] = time.perf_counter() - t_k, n_k
        if on_step is not None:
            on_step(k, res)
        if win >= 0 and res.k is None:
            res.k = k
            if config.stop_on_success:
                break
    res.seconds = time.perf_counter() - t0
    return res
