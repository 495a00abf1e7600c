"""One question of paper A, asked of any causal LM: the shortest control prompt u that makes y next.

    reach(model, tokenizer, x0, target, ReachConfig()) -> ReachResult

    k*(x0, y) = min { k in ks, k <= max_k : exists u in V^k, y = argmax_t P(t | [special prefix] + u + x0) }

searched by the CPU method of record (`controllers/fast.py`: k = 0 alone,
a gradient top-N at k = 1, warm-started coordinate search for k >= 2,
shortening by deletion); every success is re-checked in fp32. The answer is
an upper bound on k* (a search may miss a shorter u), never a false success.
`ReachResult` reports the target's fp32 probability and rank before (x0
alone) and after (u + x0), and what the answer cost: candidate evaluations,
backward passes, seconds. `magictokens reach` is the same call from a shell
(pipeline.py) and appends the result as one JSON row.

x0 and u are raw text, no chat template (paper A is a base-model
experiment); a tokenizer that puts special tokens first by default (Gemma's
<bos>) keeps them in front of u (`special_prefix`, passed as `prefix_ids`):
a model trained with <bos> always first is out of distribution without it.
SmolLM2 has no such prefix: there the sequence is u + x0, as in the paper.
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from tqdm.auto import tqdm

from .controllers import fast
from .errors import MagicTokensError
from .fields import Count, Positive, params
from .models import dtype_of
from .reachability.instances import encode_target, special_prefix
from .scoring import base_scores, check_ids


@params
@dataclass
class ReachConfig:
    """The search for one (x0, y): the fast back-off over paper A's k grid up to `max_k`."""

    max_k: Positive = 10                # longest prompt tried (paper A's grid stops at 10)
    seed: Count = 0                     # the search's random pads and swaps
    search: fast.FastConfig = field(default_factory=fast.FastConfig)   # params.yaml reachability.fast

    def __post_init__(self):
        if isinstance(self.search, dict):
            self.search = fast.FastConfig(**self.search)
        if int(self.max_k) <= 0:
            raise MagicTokensError(f"max_k must be >= 1 (k = 0, x0 alone, is always checked), got {self.max_k}")

    def grid(self) -> list[int]:
        """The k grid searched: the fast config's lengths up to max_k (max_k itself added if off-grid)."""
        ks = [k for k in self.search.ks if k <= self.max_k]
        return ks if ks and ks[-1] == self.max_k else ks + [int(self.max_k)]


@dataclass
class ReachResult:
    x0: str
    target: str
    target_id: int
    k: int | None                       # shortest length found; None: no u with k <= max_k was found
    prompt: str                         # u as text ('' at k = 0; the best failed try when k is None)
    prompt_ids: list[int]
    retokenizes: bool                   # decode(u + x0) encodes back to the same ids
    prob_before: float                  # P(y | x0), fp32
    rank_before: int                    # rank of y under P(. | x0); 0 = argmax
    prob_after: float                   # P(y | u + x0), fp32
    rank_after: int
    evaluations: int                    # candidate prompts scored (forward passes of one sequence)
    gradients: int                      # one-hot backward passes
    seconds: float
    search_dtype: str
    device: str
    max_k: int
    seed: int
    trace: list[dict] = field(default_factory=list)   # per k tried: method, loss, success, seconds, candidates

    def summary(self) -> str:
        """What `magictokens reach` prints: the answer, the target before and after, the cost."""
        head = (f"k = {self.k}: u = {self.prompt!r}" if self.k else
                "k = 0: x0 alone already makes the target the argmax" if self.k == 0 else
                f"not reached with k <= {self.max_k} (best try {self.prompt!r})")
        return (f"{head}\n"
                f"target {self.target!r} (id {self.target_id}): P = {self.prob_before:.3g} (rank {self.rank_before}) "
                f"-> {self.prob_after:.3g} (rank {self.rank_after}) after u, fp32\n"
                f"cost: {self.evaluations:,} evaluations, {self.gradients} gradients, {self.seconds:.1f} s "
                f"({self.search_dtype} search on {self.device})")


def reach(model, tokenizer, x0: str, target: str, config: ReachConfig | None = None,
          verify_model=None, progress: bool = True) -> ReachResult:
    """The shortest control prompt u (k <= config.max_k) with argmax P(. | u + x0) = target.

    `model` scores candidates (any dtype), `verify_model` (fp32; None: `model`
    itself) decides success and gives the probabilities. `target` must be one
    token of the tokenizer (one clear error naming the fix otherwise).
    """
    config = config or ReachConfig()
    if not x0:
        raise MagicTokensError("x0 is empty: give the state text the prompt goes before, e.g. 'The capital of France is'")
    y = encode_target(tokenizer, target)
    x0_ids = tokenizer(x0, add_special_tokens=False).input_ids
    judge = verify_model if verify_model is not None else model
    vocab = judge.get_input_embeddings().weight.shape[0]
    if not 0 <= y < vocab:
        raise MagicTokensError(f"target id {y} is outside the model's vocabulary ({vocab}): tokenizer and model differ")
    prefix = special_prefix(tokenizer)
    grid = config.grid()
    search = fast.FastConfig(**{**asdict(config.search), "ks": grid})
    with tqdm(total=len(grid), desc=f"reach {target!r}", unit="k", disable=not progress) as bar:
        r = fast.run(model, tokenizer, x0_ids, y, search, verify_model=verify_model, seed=config.seed,
                     prefix_ids=prefix, on_k=lambda k, ok: bar.update(1) if not ok else bar.update(bar.total - bar.n))
    after = check_ids(list(r.ids) + list(x0_ids), vocab, "u + x0")
    with torch.inference_mode():
        loss_after, rank_after, _ = base_scores(judge, after, y, prefix)
    loss_before, rank_before = r.base_loss, r.base_rank
    return ReachResult(
        x0=x0, target=target, target_id=int(y), k=r.k, prompt=r.text if r.ids else "", prompt_ids=list(r.ids),
        retokenizes=r.retokenizes, prob_before=math.exp(-loss_before), rank_before=int(rank_before),
        prob_after=math.exp(-loss_after), rank_after=int(rank_after),
        evaluations=int(sum(r.n_candidates.values())), gradients=int(r.n_gradients or 0), seconds=r.seconds,
        search_dtype=dtype_of(model), device=str(next(model.parameters()).device),
        max_k=int(config.max_k), seed=int(config.seed),
        trace=[{k: v for k, v in asdict(t).items() if k != "ids"} for t in r.trace])


def reach_model(model: str, x0: str, target: str, config: ReachConfig | None = None, device: str = "auto",
                search_dtype: str = "auto", out=None, progress: bool = True) -> ReachResult:
    """`magictokens reach`: load `model` (alias, local path or hub name) as a search/verify pair, `reach`,
    and append the result with its run metadata (model, device, hardware, versions) as one JSON row to `out`."""
    from .models import load_search_pair
    from .results import run_meta

    config = config or ReachConfig()
    search, verify, tok = load_search_pair(model, search_dtype, "auto", device)
    res = reach(search, tok, x0, target, config, verify_model=verify, progress=progress)
    if out is not None:
        out = Path(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        row = {**asdict(res), "config": asdict(config),
               "meta": run_meta(model, next(search.parameters()).device, config.seed, "reach")}
        with open(out, "a") as f:
            f.write(json.dumps(row, default=float) + "\n")
    return res
