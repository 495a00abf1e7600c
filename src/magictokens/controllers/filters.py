"""Which vocabulary tokens a controller may place in a control prompt (and which it may start from),
and which scored candidates are near enough to success to get an fp32 look."""
from __future__ import annotations

from functools import lru_cache

import torch

from ..errors import MagicTokensError

# The default `verify_near` of every search config (greedy, GCG, coordinate): the fp32 verifier
# (scoring.Verifier) re-scores only candidates whose search-dtype margin
#     log P(y | u + x0) - max_{t != y} log P(t | u + x0)
# is above it. A far loser cannot flip to a success by rounding, so it is not worth a forward in fp32.
VERIFY_NEAR = -0.5
# The threshold rows were verified at before the configs had a `verify_near` field (the verifier's
# default then): their `LATER_FIELDS` value. Pinned apart from VERIFY_NEAR on purpose: if the default
# ever moves, rows made at -0.5 must stop resuming under it, not be claimed by the new value.
VERIFY_NEAR_BEFORE_FIELD = -0.5


def special_token_ids(tokenizer) -> set[int]:
    """Every id the tokenizer treats as special (BOS/EOS/PAD and added specials)."""
    ids = set(int(i) for i in tokenizer.all_special_ids)
    for idx, added in getattr(tokenizer, "added_tokens_decoder", {}).items():
        if getattr(added, "special", False):
            ids.add(int(idx))
    return ids


def allowed_token_mask(tokenizer, vocab_size: int, ascii_only: bool = False) -> torch.Tensor:
    """(V,) bool: True where a token may appear in a control prompt.

    Excludes special tokens, ids past the tokenizer (padding rows of the
    embedding matrix) and, if `ascii_only`, tokens whose text is not printable
    ASCII (paper A's released code searches the whole vocabulary; nanoGCG's
    default excludes non-ASCII).
    """
    return _mask(id(tokenizer), tokenizer, vocab_size, ascii_only).clone()


@lru_cache(maxsize=8)
def _mask(_key, tokenizer, vocab_size, ascii_only):
    mask = torch.zeros(vocab_size, dtype=torch.bool)
    n = min(vocab_size, len(tokenizer))
    mask[:n] = True
    for i in special_token_ids(tokenizer):
        if i < vocab_size:
            mask[i] = False
    if ascii_only:
        texts = tokenizer.batch_decode([[i] for i in range(n)])
        for i, t in enumerate(texts):
            if not (t.isascii() and t.isprintable() and t != ""):
                mask[i] = False
    return mask


def retokenizes(tokenizer, ids: list[int]) -> bool:
    """Does decode(ids) encode back to exactly `ids`? (A prompt a user could type.)"""
    text = tokenizer.decode(ids)
    return tokenizer(text, add_special_tokens=False).input_ids == list(ids)


def init_token_id(tokenizer, text: str) -> int:
    """The id of a single-token placeholder string (greedy's new slot, GCG's padding); one clear error otherwise."""
    ids = tokenizer(text, add_special_tokens=False).input_ids
    if len(ids) != 1:
        raise MagicTokensError(f"init_token {text!r} is {len(ids)} tokens for this tokenizer: choose a single-token string such as '!'")
    if ids[0] in special_token_ids(tokenizer) or ids[0] == tokenizer.unk_token_id:
        raise MagicTokensError(f"init_token {text!r} maps to a special/unknown token: choose an ordinary single-token string")
    return ids[0]
