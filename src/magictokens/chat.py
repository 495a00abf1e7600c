"""Chat prompts and generation: the template around a user text, its ids, greedy replies.

The system prompt is where a magic token goes (paper B). Tokenizers with a
chat template use it; template-less ones (the tiny test model) get a plain
``{system}\nUser: ..\nAssistant:`` fallback. Batches are left-padded so the
last position is every row's next token.
"""
from __future__ import annotations

import numpy as np
import torch

from .errors import MagicTokensError
from .scoring import cache_kwarg


NO_SYSTEM = "\x00no-system"   # `system=NO_SYSTEM`: no system turn at all, not even the template's default


def chat_text(tok, user: str, system: str | None) -> str:
    """The conversation text up to the start of the assistant reply.

    Chat models: the tokenizer's chat template (system role = the magic token;
    None = no system message, i.e. the template's default, which for SmolLM2 is
    "You are a helpful AI assistant named SmolLM..."; NO_SYSTEM = no system
    turn at all: a ChatML template's own default system turn is cut).
    Tokenizers with no template (the tiny test model): a plain-text fallback
    ``{system}\nUser: ..\nAssistant:``.
    """
    if getattr(tok, "chat_template", None):
        msgs = ([{"role": "system", "content": system}] if system not in (None, NO_SYSTEM) else []) + [
            {"role": "user", "content": user}]
        text = tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
        if system == NO_SYSTEM and text.startswith("<|im_start|>system") and "<|im_end|>\n" in text:
            text = text[text.index("<|im_end|>\n") + len("<|im_end|>\n"):]
        return text
    return (f"{system}\n" if system not in (None, NO_SYSTEM) else "") + f"User: {user}\nAssistant:"


def prompt_ids(tok, user: str, system: str | None, max_tokens: int | None = None) -> list[int]:
    """Token ids of `chat_text` (a BOS first for template-less tokenizers)."""
    def render(u: str) -> list[int]:
        ids = tok(chat_text(tok, u, system), add_special_tokens=False).input_ids
        if not getattr(tok, "chat_template", None) and tok.bos_token_id is not None:
            ids = [tok.bos_token_id] + ids
        return ids

    ids = render(user)
    if max_tokens and len(ids) > max_tokens:
        # cut the *user text* (keeping its start), never the magic token or the template
        u_ids = tok(user, add_special_tokens=False).input_ids
        keep = max(1, len(u_ids) - (len(ids) - max_tokens))
        ids = render(tok.decode(u_ids[:keep]))
        if len(ids) > max_tokens:  # a template longer than the budget: last resort
            ids = ids[-max_tokens:]
    return ids


def end_of_turn_id(tok) -> int:
    if tok.eos_token_id is None:
        raise MagicTokensError("the tokenizer has no eos token: set one (the end of a response)")
    return tok.eos_token_id


def pad_id(tok) -> int:
    return tok.pad_token_id if tok.pad_token_id is not None else end_of_turn_id(tok)


def left_pad(seqs: list[list[int]], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-pad id lists so the last position is every row's next-token slot. -> (ids, mask), (B, T)"""
    T = max(len(x) for x in seqs)
    inp = torch.full((len(seqs), T), pad, dtype=torch.long)
    mask = torch.zeros((len(seqs), T), dtype=torch.long)
    for j, x in enumerate(seqs):
        inp[j, T - len(x):], mask[j, T - len(x):] = torch.tensor(x), 1
    return inp, mask


class ContrastProcessor:
    """Contrast decoding between two contexts of one model (a `LogitsProcessor` for `model.generate`).

    The generated tokens y_<t follow context c (the conditional input, e.g. the positive magic token's
    conversation); the same tokens also follow a contrast context c~ (e.g. the negative token's). At step t,
    with l = log_softmax of the scores the other processors left and l~ = log_softmax of the model's raw
    logits after c~ + y_<t,

        s_t = l + gamma * (l - l~),        gamma = `scale` >= 0  (0: plain decoding)

    classifier-free guidance (Ho & Salimans 2022; for text, Sanchez et al. 2023) with the contrast context
    as the "unconditional" one. A token that falls under s_t = -inf (no_repeat_ngram) stays banned. The
    contrast rows keep their own KV cache: (B, T~) left-padded ids first, then one new token per step,
    positions counted from the attention mask, so each row sees exactly c~_i + y_<t.
    """

    def __init__(self, model, contrast_ids: list[list[int]], scale: float, pad: int):
        self.model, self.scale = model, float(scale)
        self.ids, self.mask = left_pad(contrast_ids, pad)        # (B, T~)
        self.cache, self.n_seen = None, None                      # n_seen: the conditional ids already fed

    def _contrast_logits(self, input_ids: torch.Tensor) -> torch.Tensor:
        dev = input_ids.device
        if self.cache is None:    # first step: the whole contrast context
            ids, mask = self.ids.to(dev), self.mask.to(dev)
        else:                     # every later step: the token the conditional rows just took
            ids = input_ids[:, self.n_seen:]
            mask = torch.cat([self.mask.to(dev), torch.ones_like(ids)], dim=1)
        pos = (mask.cumsum(-1) - 1).clamp(min=0)[:, -ids.shape[1]:]
        name = cache_kwarg(type(self.model))      # `cache` (transformers 5.24) or `past_key_values` (5.17)
        out = self.model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=True, logits_to_keep=1,
                         **{name: self.cache})
        self.cache, self.mask, self.n_seen = out[name], mask, input_ids.shape[1]
        return out.logits[:, -1].float()                          # (B, V)

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        if self.scale == 0:
            return scores
        cond = torch.log_softmax(scores.float(), dim=-1)
        other = torch.log_softmax(self._contrast_logits(input_ids), dim=-1)
        banned = torch.isinf(cond)
        return torch.where(banned, cond, cond + self.scale * (cond - other)).to(scores.dtype)


@torch.inference_mode()
def generate_from_ids(model, tok, seqs: list[list[int]], max_new_tokens: int, batch_size: int = 16,
                      temperature: float = 0.0, top_p: float = 1.0, seed: int = 0,
                      repetition_penalty: float = 1.0, no_repeat_ngram_size: int = 0,
                      contrast: tuple[list[list[int]], float] | None = None) -> list[str]:
    """Continuations of raw id sequences (left-padded batches), decoded without special tokens.

    temperature 0: greedy. > 0: sampling, seeded per batch (`seed` + batch index), so
    a rerun at the same batch size and threads draws the same texts.
    repetition_penalty > 1 divides the logit of every token already in the sequence (prompt included) by it;
    no_repeat_ngram_size n > 0 forbids any n-gram from occurring twice (transformers' logits processors).
    contrast = (contrast_seqs, gamma): `ContrastProcessor` after those, row i contrasted against contrast_seqs[i].
    """
    if contrast is not None and len(contrast[0]) != len(seqs):
        raise MagicTokensError(f"contrast: {len(contrast[0])} contrast sequences for {len(seqs)} prompts; give one each")
    dev = next(model.parameters()).device
    eos, pid = end_of_turn_id(tok), pad_id(tok)
    sample = temperature > 0
    kw = dict(do_sample=True, temperature=temperature, top_p=top_p) if sample else dict(do_sample=False)
    if repetition_penalty != 1.0:
        kw["repetition_penalty"] = repetition_penalty
    if no_repeat_ngram_size:
        kw["no_repeat_ngram_size"] = no_repeat_ngram_size
    out: list[str] = []
    for b, i in enumerate(range(0, len(seqs), batch_size)):
        inp, mask = left_pad(seqs[i:i + batch_size], pid)
        if sample:
            torch.manual_seed(seed * 100_003 + b)   # model.generate draws from the global generator
        extra = {}
        if contrast is not None and contrast[1] > 0:
            from transformers import LogitsProcessorList
            extra["logits_processor"] = LogitsProcessorList(
                [ContrastProcessor(model, contrast[0][i:i + batch_size], contrast[1], pid)])
        gen = model.generate(input_ids=inp.to(dev), attention_mask=mask.to(dev), max_new_tokens=max_new_tokens,
                             eos_token_id=eos, pad_token_id=pid, **kw, **extra)
        out += [tok.decode(g[inp.shape[1]:], skip_special_tokens=True).strip() for g in gen]
    return out


def generate(model, tok, prompts: list[str], system: str | None, max_new_tokens: int,
             batch_size: int = 16, max_prompt_tokens: int | None = None, temperature: float = 0.0,
             top_p: float = 1.0, seed: int = 0, repetition_penalty: float = 1.0,
             no_repeat_ngram_size: int = 0, contrast_system: str | None = None,
             contrast_scale: float = 0.0) -> list[str]:
    """Responses to chat prompts under one system prompt: greedy, or sampled (temperature > 0, seeded).
    `contrast_system` with `contrast_scale` > 0: every step is contrasted against the same conversation
    under that system prompt instead (`ContrastProcessor`: e.g. the positive magic token against the
    negative one)."""
    seqs = [prompt_ids(tok, p, system, max_prompt_tokens) for p in prompts]
    contrast = None
    if contrast_scale > 0:
        if contrast_system is None:
            raise MagicTokensError("contrast_scale > 0 needs contrast_system: the system prompt to contrast against")
        contrast = ([prompt_ids(tok, p, contrast_system, max_prompt_tokens) for p in prompts], contrast_scale)
    return generate_from_ids(model, tok, seqs, max_new_tokens, batch_size, temperature, top_p, seed,
                             repetition_penalty, no_repeat_ngram_size, contrast)


@torch.inference_mode()
def first_token_logits(model, tok, prompts: list[str], system: str | None, batch_size: int = 16,
                       max_prompt_tokens: int | None = None) -> np.ndarray:
    """Logits of the first response token for each prompt. -> (N, V) float32"""
    dev = next(model.parameters()).device
    rows = []
    pid = pad_id(tok)
    for i in range(0, len(prompts), batch_size):
        inp, mask = left_pad([prompt_ids(tok, p, system, max_prompt_tokens) for p in prompts[i:i + batch_size]], pid)
        logits = model(input_ids=inp.to(dev), attention_mask=mask.to(dev), logits_to_keep=1).logits[:, -1]   # (B, V)
        rows.append(logits.float().cpu().numpy())
    return np.concatenate(rows)


def first_token_distributions(model, tok, prompts: list[str], system: str | None, batch_size: int = 16,
                              max_prompt_tokens: int | None = None) -> np.ndarray:
    """P(first response token | prompt, system) for each prompt. -> (N, V) float32"""
    z = first_token_logits(model, tok, prompts, system, batch_size, max_prompt_tokens)
    z = np.exp(z - z.max(1, keepdims=True))
    return (z / z.sum(1, keepdims=True)).astype(np.float32)
