"""Shared helpers of the README renderers: loading a committed result, number format, the meta line."""
from __future__ import annotations

import json
from pathlib import Path

from ..config import flatten
from ..errors import MagicTokensError


def _load(scale: str, name: str, root: Path):
    p = root / "results" / scale / f"{name}.json"
    return json.loads(p.read_text()) if p.exists() else None


def _typed(cls, scale: str, root: Path):
    """A stage's committed result, loaded (and validated) through its type; None if the stage has not run."""
    try:
        return cls.load(root / "results" / scale)
    except MagicTokensError:
        return None


def _f(x, nd=3):
    if x is None:
        return "-"
    if isinstance(x, float) and x != x:
        return "nan"
    return f"{x:.{nd}f}" if isinstance(x, (int, float)) else str(x)


def _meta_line(meta: dict) -> str:
    v = meta.get("versions", {})
    sets = flatten(meta.get("overrides") or {})
    return (f"model `{meta.get('model')}`, seed {meta.get('seed')}, device {meta.get('device')}, "
            f"torch {v.get('torch')}, transformers {v.get('transformers')}"  # the commit is in the JSON
            + (", run with " + " ".join(f"`--set {k}={v}`" for k, v in sets.items()) if sets else ""))


def _backoff_line(b: dict) -> str:
    g, gc = b.get("greedy", {}), b.get("gcg", {})
    return (f"Budget: greedy k={b.get('greedy_ks')} over "
            f"{'the whole vocabulary' if g.get('candidates') is None else 'gradient top-%s candidates' % g.get('candidates')}; "
            f"GCG k={b.get('gcg_ks')}, width {gc.get('search_width')}, top-k {gc.get('topk')}, "
            f"{gc.get('num_steps')} steps (paper: whole vocabulary; 768, 128, 34).")
