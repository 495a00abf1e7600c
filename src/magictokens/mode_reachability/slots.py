"""Where the control u goes in the rendered chat template: prefix ids, u, state ids."""
from __future__ import annotations

from ..chat import chat_text
from ..errors import MagicTokensError
from .config import PLACEMENTS

SLOT = "\ue000"   # a private-use character marks where u goes in the rendered template


def slot_texts(user: str, source_token: str | None, placement: str) -> tuple[str, str | None]:
    """(user text, system text) with SLOT where u goes.

        system       system = SLOT + " " + token_A   (SLOT alone with no source token), user = p
        user_before  system = token_A,  user = SLOT + " " + p
        user_after   system = token_A,  user = p + SLOT

    In the user placements a missing source token (the single-mode baselines)
    leaves the template's default system prompt, as they were trained. The
    space goes with the text after it, as a BPE tokenizer puts it (" How"):
    u after the request carries its own leading space if the search picks one.
    """
    if placement == "system":
        return user, SLOT + (f" {source_token}" if source_token else "")
    if placement == "user_before":
        return f"{SLOT} {user}", source_token
    if placement == "user_after":
        return f"{user}{SLOT}", source_token
    raise MagicTokensError(f"placement {placement!r}: use one of {', '.join(PLACEMENTS)}")


def slot_ids(tok, user: str, source_token: str | None, placement: str = "system") -> tuple[list[int], list[int]]:
    """-> (prefix ids, suffix ids) around the control slot of `placement`.

    The template rendered with SLOT for u is T = pre + SLOT + post; prefix =
    ids(pre) (a BOS first for template-less tokenizers), suffix = ids(post),
    which ends with the assistant header. The searched sequence is
    prefix + u + suffix (+ the modes' shared opening), so decode(prefix + u +
    suffix) is T with u's text in place of SLOT.
    """
    user_text, system = slot_texts(user, source_token, placement)
    text = chat_text(tok, user_text, system)
    if text.count(SLOT) != 1:
        raise MagicTokensError(f"the chat template dropped or repeated the {placement} slot: use another placement")
    pre, post = text.split(SLOT)
    prefix = tok(pre, add_special_tokens=False).input_ids
    if not getattr(tok, "chat_template", None) and tok.bos_token_id is not None:
        prefix = [tok.bos_token_id] + prefix
    return prefix, tok(post, add_special_tokens=False).input_ids
