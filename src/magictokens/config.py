"""params.yaml: one section per scale, validated against the stage dataclasses.

Layout::

    default:            # the embedded CPU default (what a bare `dvc repro` runs)
      seed: 0
      model: smollm2-135m-instruct
      reachability: {...}
      theorem: {...}
      ...
    paper:              # GPU, paper budgets: only what differs from `default`
      reachability: {...}
    smoke:              # tests: tiny random model, seconds per notebook
      ...

`load_params(scale)` deep-merges the scale's overrides onto `default`, then
onto any `overrides` dict (papermill passes these). A key that `default` does
not have is a typo: it fails with one line naming the closest valid key.
"""
from __future__ import annotations

import dataclasses
import difflib
from pathlib import Path
from typing import Any, get_type_hints

import yaml

from .errors import MagicTokensError

SCALES = ("default", "paper", "smoke")
REPO_ROOT = Path(__file__).resolve().parents[2]


def deep_merge(base: dict, over: dict, where: str = "") -> dict:
    """Return base with `over` merged in; unknown keys in `over` are errors."""
    out = dict(base)
    for key, value in (over or {}).items():
        if key not in base:
            hint = difflib.get_close_matches(str(key), [str(k) for k in base], n=1)
            fix = f"did you mean {hint[0]!r}?" if hint else f"valid keys: {sorted(base)}"
            raise MagicTokensError(f"params.yaml: unknown key {where + str(key)!r}: {fix}")
        if isinstance(value, dict) and isinstance(base[key], dict):
            out[key] = deep_merge(base[key], value, where + f"{key}.")
        else:
            out[key] = value
    return out


def load_params(scale: str = "default", path: str | Path | None = None,
                overrides: dict | None = None) -> dict:
    """The merged parameter dict of one scale."""
    if scale not in SCALES:
        raise MagicTokensError(f"unknown scale {scale!r}: use one of {SCALES}")
    path = Path(path) if path else REPO_ROOT / "params.yaml"
    if not path.exists():
        raise MagicTokensError(f"{path} not found: run from the repository root or pass the params file path")
    raw = yaml.safe_load(path.read_text()) or {}
    if "default" not in raw:
        raise MagicTokensError(f"{path} has no 'default' section")
    params = raw["default"]
    if scale != "default":
        params = deep_merge(params, raw.get(scale) or {}, f"{scale}.")
    return deep_merge(params, overrides or {}, "override.")


def build(cls, data: dict | None, where: str):
    """Construct dataclass `cls` from a dict, recursing into dataclass fields.

    Unknown keys fail with the closest valid name (a params.yaml typo).
    """
    data = dict(data or {})
    names = {f.name: f for f in dataclasses.fields(cls)}
    hints = get_type_hints(cls)
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        if key not in names:
            hint = difflib.get_close_matches(key, list(names), n=1)
            fix = f"did you mean {hint[0]!r}?" if hint else f"valid keys: {sorted(names)}"
            raise MagicTokensError(f"params.yaml: unknown key {where}.{key}: {fix}")
        typ = hints[key]
        if dataclasses.is_dataclass(typ) and isinstance(value, dict):
            value = build(typ, value, f"{where}.{key}")
        kwargs[key] = value
    return cls(**kwargs)


def stage_params(scale: str, section: str, cls, overrides: dict | None = None):
    """-> (merged params of the scale, the stage's config dataclass).

    The random tiny model exists for tests: any other scale refuses it, so no
    figure can come from random weights.
    """
    from .models import TINY_MODEL

    params = load_params(scale, overrides=overrides)
    if params["model"] == TINY_MODEL and scale != "smoke":
        raise MagicTokensError("the tiny random model is for tests only: use --scale smoke, or a real model")
    if section not in params:
        raise MagicTokensError(f"params.yaml has no {section!r} section under 'default'")
    return params, build(cls, params[section], section)


def flatten(d: dict, prefix: str = "") -> dict:
    """{'a': {'b': 1}} -> {'a.b': 1}: the dotted keys `--set` takes (and a run's overrides)."""
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out
