"""Batched scoring of control prompts: the one hot loop every controller shares.

A candidate sequence is ``prefix + u + suffix`` (paper A: prefix empty, suffix =
x0; paper B: prefix = chat header up to the magic-token slot, suffix = the rest
of the conversation up to the assistant turn). For each candidate u (k tokens)
we need only the next-token distribution at the *last* position:

    logits = LM(prefix + u + suffix)[-1]          (V,)
    loss   = -log softmax(logits)[y]              cross-entropy of the target
    margin = logits[y] - max_{v != y} logits[v]   > 0  <=>  y is the unique argmax

Speed: logits are computed at the last position only (``logits_to_keep=1``: the
(T, V) projection is ~25% of a small model's FLOPs), candidates go through in
large batches, and the prefix's keys/values are computed once and shared by
every batch. Loss and margin are always computed in fp32, whatever the model's
dtype, and a tie (margin == 0) is *not* a success.
"""
from __future__ import annotations

import functools
import inspect
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from .errors import MagicTokensError


@dataclass
class Scores:
    loss: torch.Tensor    # (N,) fp32, -log P(y | prefix + u + suffix)
    margin: torch.Tensor  # (N,) fp32, logit_y - max other logit; > 0 means success
    argmax: torch.Tensor  # (N,) long, the greedy next token


def check_ids(ids, vocab_size: int, what: str) -> torch.Tensor:
    """Validate a 1-D id sequence (may be empty for prefixes) against the vocabulary."""
    t = torch.as_tensor(ids, dtype=torch.long).reshape(-1)
    if t.numel() and (int(t.min()) < 0 or int(t.max()) >= vocab_size):
        raise MagicTokensError(f"{what} holds token ids outside the vocabulary [0, {vocab_size}): "
                               f"encode it with this model's tokenizer")
    return t


@functools.lru_cache(maxsize=None)
def cache_kwarg(model_cls) -> str:
    """The forward's name for a KV cache, in and out: ``cache`` where transformers has it
    (5.24; ``past_key_values`` warns there and goes in 5.40), else ``past_key_values`` (5.17)."""
    return "cache" if "cache" in inspect.signature(model_cls.forward).parameters else "past_key_values"


def last_logits(model, input_ids: torch.Tensor, past=None, inputs_embeds=None) -> torch.Tensor:
    """(B, T) ids (or (B, T, d) embeddings) -> (B, V) fp32 logits at the last position."""
    cache = {} if past is None else {cache_kwarg(type(model)): past}
    out = model(input_ids=input_ids, inputs_embeds=inputs_embeds, use_cache=past is not None, logits_to_keep=1,
                **cache)
    return out.logits[:, -1].float()


def loss_and_margin(logits: torch.Tensor, target: int) -> Scores:
    """(B, V) fp32 logits -> Scores for one target id."""
    logp = torch.log_softmax(logits, dim=-1)
    y_logit = logits[:, target]
    others = logits.clone()
    others[:, target] = float("-inf")
    return Scores(loss=-logp[:, target], margin=y_logit - others.max(dim=-1).values,
                  argmax=logits.argmax(dim=-1))


def loss_and_margin_many(logits: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, V) fp32 logits, (m,) target ids -> loss, margin, each (B, m).

    The same numbers `loss_and_margin` gives target by target: the best
    other logit is the top-1 unless the top-1 is the target, then the top-2.
    """
    logp = torch.log_softmax(logits, dim=-1)
    top = logits.topk(2, dim=-1)                                            # (B, 2)
    y_logit = logits[:, targets]                                            # (B, m)
    other = torch.where(top.indices[:, :1] == targets[None], top.values[:, 1:], top.values[:, :1])
    return -logp[:, targets], y_logit - other


class PrefixCache:
    """Keys/values of a fixed prefix, computed once, expanded per batch.

    transformers' DynamicCache grows in place when a forward appends to it, so
    each batch gets a fresh cache over *views* of the prefix tensors; the
    appended copy is a new tensor and the stored prefix never changes (tested:
    cached and uncached losses agree).
    """

    def __init__(self, model, prefix_ids: torch.Tensor):
        from transformers import DynamicCache   # here: transformers' import costs seconds (models.py)
        self._cls = DynamicCache
        with torch.inference_mode():
            out = model(input_ids=prefix_ids[None].to(model.device), use_cache=True)
            cache = getattr(out, cache_kwarg(type(model)))
        self.kv = [(layer.keys.clone(), layer.values.clone()) for layer in cache.layers]
        self.length = int(prefix_ids.numel())

    def expand(self, batch: int):
        return self._cls([(k.expand(batch, *k.shape[1:]), v.expand(batch, *v.shape[1:])) for k, v in self.kv])


class Scorer:
    """Scores many control prompts u (N, k) for one (prefix, suffix, target).

    ``use_prefix_cache`` trades memory for speed when the prefix is long; with
    an empty prefix (paper A) it does nothing.
    """

    def __init__(self, model, suffix_ids, target_id: int, prefix_ids=(), batch_size: int = 512,
                 use_prefix_cache: bool = True):
        vocab = model.get_input_embeddings().weight.shape[0]
        self.model = model
        self.device = model.device
        self.suffix = check_ids(suffix_ids, vocab, "x0 / suffix").to(self.device)
        self.prefix = check_ids(prefix_ids, vocab, "prefix").to(self.device)
        if not (0 <= int(target_id) < vocab):
            raise MagicTokensError(f"target id {target_id} is outside the vocabulary [0, {vocab}): "
                                   f"encode the target with this model's tokenizer")
        self.target = int(target_id)
        self.batch_size = int(batch_size)
        self.cache = PrefixCache(model, self.prefix) if (use_prefix_cache and self.prefix.numel()) else None
        self.n_scored = 0  # candidates scored so far (for throughput figures)

    def sequences(self, controls: torch.Tensor, with_prefix: bool) -> torch.Tensor:
        """(B, k) -> (B, [P] + k + L) token ids."""
        b = controls.shape[0]
        parts = [controls.to(self.device), self.suffix.expand(b, -1)]
        if with_prefix and self.prefix.numel():
            parts.insert(0, self.prefix.expand(b, -1))
        return torch.cat(parts, dim=1)

    @torch.inference_mode()
    def score(self, controls) -> Scores:
        """(N, k) long -> Scores with (N,) fields, in batches of `batch_size`."""
        controls = torch.as_tensor(controls, dtype=torch.long)
        if controls.dim() == 1:
            controls = controls[None]
        outs = []
        chunks = controls.split(self.batch_size)
        # a whole-vocabulary sweep takes minutes on a CPU: a bar shows up after 5 s, never before
        for chunk in tqdm(chunks, desc=f"scoring {len(controls)}", unit="batch", leave=False, delay=5,
                          disable=len(chunks) < 8):
            if self.cache is not None:
                logits = last_logits(self.model, self.sequences(chunk, False), past=self.cache.expand(len(chunk)))
            else:
                logits = last_logits(self.model, self.sequences(chunk, True))
            outs.append(loss_and_margin(logits, self.target))
        self.n_scored += int(controls.shape[0])
        return Scores(*(torch.cat([getattr(o, f) for o in outs]).cpu() for f in ("loss", "margin", "argmax")))


    @torch.inference_mode()
    def score_many(self, controls, targets) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, k) controls, (m,) targets -> loss, margin, each (N, m) fp32 on the CPU.

        One forward serves every target that shares this (prefix, suffix): the
        greedy k=1 sweep of a top-75 or uniform-rank x0 scores all its targets
        at once. Chunks are the same as `score`'s, so the numbers are too.
        """
        controls = torch.as_tensor(controls, dtype=torch.long)
        targets = torch.as_tensor(targets, dtype=torch.long).to(self.device)
        losses, margins = [], []
        chunks = controls.split(self.batch_size)
        for chunk in tqdm(chunks, desc=f"scoring {len(controls)} x {len(targets)} targets", unit="batch",
                          leave=False, delay=5, disable=len(chunks) < 8):
            if self.cache is not None:
                logits = last_logits(self.model, self.sequences(chunk, False), past=self.cache.expand(len(chunk)))
            else:
                logits = last_logits(self.model, self.sequences(chunk, True))
            loss, margin = loss_and_margin_many(logits, targets)
            losses.append(loss.cpu())
            margins.append(margin.cpu())
        self.n_scored += int(controls.shape[0])
        return torch.cat(losses), torch.cat(margins)


def onehot_gradient(model, control_ids: torch.Tensor, suffix_ids: torch.Tensor, target_id: int,
                    prefix_ids: torch.Tensor | None = None, objective: str = "ce") -> torch.Tensor:
    """Gradient of the target's loss w.r.t. the one-hot control prompt.

    ``objective``: ``ce`` = -log P(y | .) (paper A, GCG); ``margin`` =
    max_{v != y} logit_v - logit_y, whose sign is exactly failure/success
    (Carlini-Wagner; what the fast search minimises).

    One backward through ``onehot @ W_E``: (k, V) @ (V, d) -> (k, d). The
    linearisation ``loss(u with u_i := v) ~ loss(u) + grad[i, v] - grad[i, u_i]``
    ranks every swap at once (GCG; greedy preselection).

    Returns (k, V) fp32 on the model's device.
    """
    # an int8 search model has no backward: it names the fp32 model its gradients come from (models.py)
    model = getattr(model, "gradient_model", model)
    W = model.get_input_embeddings().weight  # (V, d)
    dev = W.device
    control_ids = control_ids.to(dev)
    onehot = torch.zeros(control_ids.numel(), W.shape[0], dtype=W.dtype, device=dev)
    onehot.scatter_(1, control_ids[:, None], 1.0)
    onehot.requires_grad_(True)
    parts = [onehot @ W, W[suffix_ids.to(dev)]]
    if prefix_ids is not None and prefix_ids.numel():
        parts.insert(0, W[prefix_ids.to(dev)])
    with torch.enable_grad():
        logits = last_logits(model, None, inputs_embeds=torch.cat(parts)[None])
        if objective == "margin":
            others = logits.clone()
            others[:, target_id] = float("-inf")
            loss = others.max(dim=-1).values.sum() - logits[:, target_id].sum()
        else:
            loss = torch.nn.functional.cross_entropy(logits, torch.tensor([target_id], device=dev))
        (grad,) = torch.autograd.grad(loss, onehot)
    return grad.float()


class Verifier:
    """Decides success in full precision: a bf16 argmax is not trusted near ties.

    ``search`` scored the candidates (bf16 on CPU/GPU for speed); the
    ``top`` candidates with the highest search margin are re-scored by
    ``verify`` (an fp32 copy of the model). With no verify model, the search
    scores decide.
    """

    def __init__(self, verify: Scorer | None, top: int = 16, near: float = -0.5):
        self.verify = verify
        self.top = max(1, int(top))
        self.near = float(near)       # search margins below this are not worth an fp32 look
        self.n_checked = 0
        self.n_false_positive = 0     # search said success (margin > 0), fp32 said no
        self.n_unchecked_near = 0     # near candidates (margin > near) left off the `top` shortlist

    def first_success(self, controls: torch.Tensor, search: Scores) -> tuple[int, float, float]:
        """-> (index of a verified success or -1, its verified loss, its verified margin)."""
        if self.verify is None:
            i = int(search.margin.argmax())
            ok = bool(search.margin[i] > 0)
            return (i if ok else -1), float(search.loss[i]), float(search.margin[i])
        order = torch.argsort(search.margin, descending=True)
        # only near-successes are worth an fp32 look: far losers cannot flip
        near = order[search.margin[order] > self.near]
        self.n_unchecked_near += max(0, int(near.numel()) - self.top)
        order = near[: self.top]
        if order.numel() == 0:
            return -1, float("nan"), float("nan")
        s = self.verify.score(controls[order])
        self.n_checked += int(order.numel())
        self.n_false_positive += int(((search.margin[order] > 0) & (s.margin <= 0)).sum())
        best = int(torch.argmax(s.margin))
        if s.margin[best] > 0:
            return int(order[best]), float(s.loss[best]), float(s.margin[best])
        return -1, float(s.loss[best]), float(s.margin[best])


@torch.inference_mode()
def base_scores(model, x0_ids, target_id: int, prefix_ids=()) -> tuple[float, int, float]:
    """-> (base loss, base rank of y, margin) for the uncontrolled state, fp32."""
    scorer = Scorer(model, x0_ids, target_id, prefix_ids, batch_size=1)
    ids = scorer.sequences(torch.zeros(1, 0, dtype=torch.long), True)
    logits = model(input_ids=ids, logits_to_keep=1).logits[0, -1].float()
    rank = int((logits > logits[target_id]).sum())
    s = scorer.score(torch.zeros(1, 0, dtype=torch.long))
    return float(s.loss[0]), rank, float(s.margin[0])


def k0_state(model, verify_model, x0_ids, target_id: int, prefix_ids=()):
    """Check x0 and score it alone with the fp32 judge (k = 0 of every back-off search).

    -> (x0 as a (|x0|,) tensor, base loss -log P(y | x0), base rank of y, margin).
    """
    judge = verify_model if verify_model is not None else model
    x0 = check_ids(x0_ids, judge.get_input_embeddings().weight.shape[0], "x0")
    if x0.numel() == 0:
        raise MagicTokensError("x0 is empty: give at least one state token")
    return (x0, *base_scores(judge, x0, target_id, prefix_ids))


def objective(scores: Scores, kind: str) -> torch.Tensor:
    """(N,) what the search minimises: -margin (success <=> < 0) or the CE loss."""
    return -scores.margin if kind == "margin" else scores.loss


def score_until_success(scorer: Scorer, verifier: Verifier, cands: torch.Tensor, chunk: int):
    """Score `cands` chunk by chunk; stop after the first chunk holding an fp32-verified success.

    -> (Scores of the scored prefix, index of the verified success or -1, n scored).
    """
    parts, win = [], -1
    for start in range(0, len(cands), chunk):
        block = cands[start:start + chunk]
        s = scorer.score(block)
        parts.append(s)
        i, _, _ = verifier.first_success(block, s)
        if i >= 0:
            win = start + i
            break
    n = sum(len(p.loss) for p in parts)
    merged = Scores(*(torch.cat([getattr(p, f) for p in parts]) for f in ("loss", "margin", "argmax")))
    return merged, win, n
