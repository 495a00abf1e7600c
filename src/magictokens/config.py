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
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import get_type_hints

import yaml
from pydantic import TypeAdapter, ValidationError

from .errors import MagicTokensError
from .fields import Count, Text, params

SCALES = ("default", "cpu", "paper", "smoke")
TINY_MODEL = "tiny-random-llama"   # the random test model (models.build_tiny_model): smoke scale only
REPO_ROOT = Path(__file__).resolve().parents[2]


# maps keyed by the user's own names (a mode -> text), not by parameter names: any key may be added
OPEN_MAPS = ("prefix", "prefix_harmful", "read_per_pair")


def deep_merge(base: dict, over: dict, where: str = "") -> dict:
    """Return base with `over` merged in; unknown keys in `over` are errors (except inside an OPEN_MAPS map)."""
    out = dict(base)
    open_map = where.rstrip(".").rsplit(".", 1)[-1] in OPEN_MAPS
    for key, value in (over or {}).items():
        if key not in base and open_map:
            out[key] = value
            continue
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


def default_params_hash(root: Path = REPO_ROOT) -> str | None:
    """sha256 (12 hex) of params.yaml's `default` section: benchmarks/repro_time.py records it with its
    measurement and the README's line (report/timing.py) compares, so a stale measurement is told apart."""
    p = root / "params.yaml"
    if not p.exists():
        return None
    raw = yaml.safe_load(p.read_text())["default"]
    for *path, key in HASH_LATER:          # keys added at the value every earlier measurement ran under
        sec = raw
        for name in path:
            sec = sec.get(name) if isinstance(sec, dict) else None
        if isinstance(sec, dict) and key in sec and sec[key] == HASH_LATER[(*path, key)]:
            del sec[key]
    return hashlib.sha256(json.dumps(raw, sort_keys=True).encode()).hexdigest()[:12]


# params keys added after `default_params_hash` values were recorded, with the value those runs had: at that
# value they are left out, so a measurement made before the key existed is not called stale
HASH_LATER = {("cotraining", "train", "orpo_weight"): 0.0, ("cotraining", "distil", "read_per_pair"): {}}


@params
@dataclass
class CommonParams:
    """The keys every stage reads beside its own section."""
    seed: Count = 0
    model: Text = "smollm2-135m-instruct"
    device: Text = "auto"
    search_dtype: Text | None = "auto"     # auto: bf16 where the hardware has it natively, else fp32
    verify_dtype: Text | None = "auto"     # auto: fp32 (verification is full precision everywhere)


def _fields_at(cls, loc) -> list[str]:
    """The field names of the (nested) dataclass that `loc` points into."""
    for part in loc:
        if not dataclasses.is_dataclass(cls):
            return []
        cls = get_type_hints(cls).get(part)
    return [f.name for f in dataclasses.fields(cls)] if dataclasses.is_dataclass(cls) else []


def _key(loc) -> tuple:
    """A pydantic error location without its union-member tags: ('fast', 'coordinate', 'width') or ('ks', 0)."""
    return tuple(p for p in loc if isinstance(p, int) or str(p).isidentifier())


def one_line(exc: ValidationError, cls, where: str) -> str:
    """The first bad key as one line: the dotted key, the value, what is allowed (every union member's rule)."""
    errs = exc.errors()
    loc = _key(errs[0]["loc"])
    same = [e for e in errs if _key(e["loc"]) == loc]
    key = ".".join(str(p) for p in ((where,) if where else ()) + loc)
    more = len({_key(e["loc"]) for e in errs}) - 1
    more = f" (and {more} more bad key{'s' if more > 1 else ''})" if more else ""
    if errs[0]["type"] == "unexpected_keyword_argument":
        valid = _fields_at(cls, loc[:-1])
        hint = difflib.get_close_matches(str(loc[-1]), valid, n=1)
        fix = f"did you mean {hint[0]!r}?" if hint else f"valid keys: {sorted(valid)}"
        return f"params.yaml: unknown key {key}: {fix}{more}"
    rules = " or ".join(dict.fromkeys(e["msg"][0].lower() + e["msg"][1:] for e in same))
    return f"params.yaml: {key} = {errs[0]['input']!r}: {rules}{more}"


def build(cls, data: dict | None, where: str):
    """Validate a params dict against config dataclass `cls` (pydantic, by the field types) and build it.

    Any wrong type, out-of-range value or unknown key fails with one line
    naming the key, the value and what is allowed.
    """
    try:
        return TypeAdapter(cls).validate_python(dict(data or {}))
    except ValidationError as exc:
        raise MagicTokensError(one_line(exc, cls, where)) from None


def parse_sets(items: list[str]) -> dict:
    """['reachability.true_token.n_per_len=3', ...] -> nested dict (values parsed as YAML)."""
    out: dict = {}
    for item in items or []:
        if "=" not in item:
            raise MagicTokensError(f"--set {item!r}: write key.path=value, e.g. --set reachability.true_token.n_per_len=3")
        key, value = item.split("=", 1)
        node = out
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = yaml.safe_load(value)
    return out


def stage_params(scale: str, section: str, cls, overrides: dict | None = None):
    """-> (merged params of the scale, the stage's config dataclass).

    The random tiny model exists for tests: any other scale refuses it, so no
    figure can come from random weights.
    """
    params = load_params(scale, overrides=overrides)
    build(CommonParams, {k: v for k, v in params.items() if not isinstance(v, dict)}, "")
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
