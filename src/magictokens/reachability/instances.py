"""Paper A's instance families: (x0, y) pairs sampled from Wikitext and the model.

An *instance* is (x0, y): a state of |x0| tokens and one target token. Three
families (paper A, Sec. 5):

* ``true_token``   x0 = a random Wikitext span, y = the token that follows it
* ``top75``        y = one of the model's own `top_n` most likely next tokens
* ``uniform_rank`` y = the tokens at ranks 0, V/n, 2V/n, ... of P(. | x0)

"P(. | x0)" is, exactly, P(. | [special prefix] + x0), and a control prompt u
goes between the two: [special prefix] + u + x0. The special prefix is what
the tokenizer puts before any text by default (`special_prefix`: Gemma-3's
[<bos>]; SmolLM2 has none, so for it this is x0 and u + x0 as in the paper):
a model trained with <bos> always first is out of distribution without it,
and its k = 0 ranks and searched prompts would describe that artefact.
"""
from __future__ import annotations

import ast
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ..errors import MagicTokensError
from .config import ReachabilityConfig

HEADING = re.compile(r"^\s*=+ .* =+\s*$")


@dataclass
class Instance:
    id: str
    x0_ids: list[int]
    target_id: int
    kind: str
    meta: dict = field(default_factory=dict)


def paragraphs(text: str) -> list[str]:
    """Wikitext body paragraphs: one per line, headings (`` = Title = ``) and blank lines dropped."""
    return [line for line in text.splitlines() if line.strip() and not HEADING.match(line)]


def sample_wikitext_instances(tokenizer, text: str, lengths, n_per_len: int, seed: int,
                              kind: str = "true_token") -> list[Instance]:
    """Seeded random spans inside one Wikitext paragraph: x0 = p[s:s+L], y = p[s+L].

    As the authors sampled within single rows of Wikitext-103: x0 and y never
    straddle a heading or a line break. Every (paragraph, start) with room for
    L + 1 tokens is equally likely; `meta` records the paragraph and the start.
    """
    if not text.strip():
        raise MagicTokensError("the Wikitext source is empty: run `magictokens data`")
    paras = [tokenizer(p, add_special_tokens=False).input_ids for p in paragraphs(text)]
    rng = np.random.default_rng(seed)
    out = []
    for L in lengths:
        # every valid start, as (paragraph, offset) pairs in text order
        sizes = np.array([max(0, len(p) - L) for p in paras])               # starts with a next token
        total = int(sizes.sum())
        if total == 0:
            raise MagicTokensError(f"no Wikitext paragraph holds {L + 1} tokens, too few for |x0| = {L}")
        flat = np.sort(rng.choice(total, size=min(n_per_len, total), replace=False))
        bounds = np.cumsum(sizes)
        for j, f in enumerate(int(v) for v in flat):
            pi = int(np.searchsorted(bounds, f, side="right"))
            s = f - (int(bounds[pi - 1]) if pi else 0)
            ids = paras[pi]
            out.append(Instance(f"{kind}-L{L}-{j}", ids[s:s + L], ids[s + L], kind,
                                {"length": L, "paragraph": pi, "start": s}))
    return out


def authors_csv_instances(tokenizer, csv_path: str | Path, lengths, n_per_len: int, seed: int) -> list[Instance]:
    """Paper A's own x0 set (column `question`, next token `answer`).

    The texts are re-tokenized with this model's tokenizer; rows whose answer is
    not exactly one token are dropped. `length` is the authors' GPT-2 length, so
    a GPT-2 user compares like for like (and gets the same ids back).
    """
    df = pd.read_csv(csv_path, keep_default_na=False)
    if "question" not in df or "answer" not in df:
        raise MagicTokensError(f"{csv_path} needs columns 'question' and 'answer'")
    rng = np.random.default_rng(seed)
    out = []
    gpt2_len = df["question_ids"].map(lambda s: len(ast.literal_eval(s))) if "question_ids" in df else None
    for L in lengths:
        rows = df[gpt2_len == L] if gpt2_len is not None else df
        picked = []
        for i in rng.permutation(len(rows)):
            q, a = rows.iloc[int(i)]["question"], rows.iloc[int(i)]["answer"]
            x0 = tokenizer(q, add_special_tokens=False).input_ids
            y = tokenizer(a, add_special_tokens=False).input_ids
            if len(y) == 1 and x0:
                picked.append(Instance(f"true_token-L{L}-{len(picked)}", x0, y[0], "true_token",
                                       {"length": L, "csv_row": int(rows.index[int(i)])}))
            if len(picked) == n_per_len:
                break
        out += picked
    return out


@torch.inference_mode()
def next_token_logits(model, x0_ids, prefix_ids=()) -> torch.Tensor:
    """(|x0|,) -> (V,) fp32 logits of the uncontrolled next token, P(. | [special prefix] + x0).

    `prefix_ids`: the tokenizer's special prefix (`special_prefix`; [] for SmolLM2, [<bos>] for Gemma),
    scored in front of x0 as the searches score it in front of u + x0.
    """
    ids = torch.as_tensor([int(t) for t in prefix_ids] + [int(t) for t in x0_ids], device=model.device)[None]
    return model(input_ids=ids, logits_to_keep=1).logits[0, -1].float().cpu()


def top_n_instances(model, x0s: list[Instance], top_n: int, n_targets: int, seed: int,
                    prefix_ids=()) -> list[Instance]:
    """Targets among the model's own `top_n` next tokens: one seeded rank from each of
    `n_targets` equal strata of 0..top_n-1 (all of them when n_targets = top_n).
    Ranks are those of P(. | [special prefix] + x0) (`prefix_ids`, see `next_token_logits`)."""
    if not 0 < n_targets <= top_n:
        raise MagicTokensError(f"top75.n_targets={n_targets}: want 1 <= n_targets <= top_n={top_n}")
    rng = np.random.default_rng(seed)
    out = []
    for x in x0s:
        order = torch.argsort(next_token_logits(model, x.x0_ids, prefix_ids), descending=True)[:top_n]
        ranks = [int(rng.choice(stratum)) for stratum in np.array_split(np.arange(top_n), n_targets)]
        for r in ranks:
            out.append(Instance(f"top75-{x.id}-r{int(r)}", x.x0_ids, int(order[r]), "top75",
                                {"length": len(x.x0_ids), "rank": int(r)}))
    return out


def uniform_rank_instances(model, x0s: list[Instance], n_ranks: int, prefix_ids=()) -> list[Instance]:
    """Targets at ranks 0, V//n, 2V//n, ... of the uncontrolled distribution P(. | [special prefix] + x0)."""
    out = []
    for x in x0s:
        order = torch.argsort(next_token_logits(model, x.x0_ids, prefix_ids), descending=True)
        step = max(1, len(order) // n_ranks)
        for r in range(0, step * n_ranks, step):
            out.append(Instance(f"uniform-{x.id}-r{r}", x.x0_ids, int(order[r]), "uniform_rank",
                                {"length": len(x.x0_ids), "rank": r}))
    return out


def build_instances(cfg: ReachabilityConfig, tokenizer, model, seed: int, text: str,
                    authors_csv: str | Path | None = None) -> dict[str, list[Instance]]:
    """The three families of one run, exactly as the notebook and `magictokens search` build them.

    Model-ranked targets are ranked after the tokenizer's special prefix (`special_prefix`), as searched.
    """
    tt, t75, ur = cfg.true_token, cfg.top75, cfg.uniform_rank
    prefix = special_prefix(tokenizer)
    if tt.source == "wikitext":
        true = sample_wikitext_instances(tokenizer, text, tt.lengths, tt.n_per_len, seed)
    elif tt.source == "authors_csv":
        if authors_csv is None:
            raise MagicTokensError("true_token.source=authors_csv needs data/magic_words/k10_gpt2_wiki5k_init.csv")
        true = authors_csv_instances(tokenizer, authors_csv, tt.lengths, tt.n_per_len, seed)
    else:
        raise MagicTokensError(f"reachability.true_token.source={tt.source!r}: use 'wikitext' or 'authors_csv'")
    x0_75 = sample_wikitext_instances(tokenizer, text, t75.lengths, t75.n_x0_per_len, seed + 1, kind="x0")
    x0_ur = sample_wikitext_instances(tokenizer, text, ur.lengths, ur.n_x0_per_len, seed + 2, kind="x0")
    return {"true_token": true,
            "top75": top_n_instances(model, x0_75, t75.top_n, t75.n_targets, seed, prefix_ids=prefix),
            "uniform_rank": uniform_rank_instances(model, x0_ur, ur.n_ranks, prefix_ids=prefix)}


def special_prefix(tokenizer) -> list[int]:
    """The special tokens the tokenizer puts before any text by default (Gemma: [<bos>]; SmolLM2: []).

    Paper A scores y after [special prefix] + u + x0: a model trained with <bos> always first is out of
    distribution without it, so the prefix stays in front of the control prompt u, never after it.
    """
    with_special = tokenizer("a").input_ids
    bare = tokenizer("a", add_special_tokens=False).input_ids
    n = len(with_special) - len(bare)
    return list(with_special[:n]) if n > 0 and with_special[n:] == bare else []


def encode_target(tokenizer, text: str) -> int:
    """A target given as text -> its single token id (one clear error otherwise)."""
    if not text:
        raise MagicTokensError("the target is empty: give the next token as text, e.g. ' Paris'")
    ids = tokenizer(text, add_special_tokens=False).input_ids
    if len(ids) != 1:
        raise MagicTokensError(f"target {text!r} is {len(ids)} tokens {ids}: reachability targets are single "
                               f"tokens; pass the first token (e.g. {tokenizer.decode(ids[:1])!r})")
    return ids[0]
