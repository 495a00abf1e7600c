"""The result vocabulary every back-off search shares: one typed trace step per
k tried, and the back-off result (a JSONL row of the reachability stage).

`resume_key` is what of a search config keys its committed rows.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field


@dataclass
class TraceStep:
    """One k the search tried: what it found and what it cost (measured, not split)."""
    k: int
    method: str                   # none | greedy | gcg | k1_top | coordinate | shorten
    loss: float                   # -log P(y | u + x0) of `ids` (fp32 when verified)
    success: bool                 # y is the unique fp32 argmax after `ids`
    seconds: float                # wall time of this step alone
    n_candidates: int             # candidates scored in this step
    ids: list[int] = field(default_factory=list)
    steps: int = 0                # optimisation steps (GCG / coordinate); 1 for a one-shot sweep
    n_gradients: int = 0          # backward passes


@dataclass
class BackoffResult:
    k: int | None                 # shortest successful length; None = unsolved
    ids: list[int]                # the prompt at k (or the best unsuccessful one at max k)
    text: str
    retokenizes: bool             # decode(u + x0) encodes back to u + x0 (a prompt a user could type)
    base_loss: float              # -log P(y | x0), fp32
    base_rank: int                # rank of y under P(. | x0); 0 = argmax
    trace: list[TraceStep] = field(default_factory=list)   # k = 0 first, then every k tried
    seconds: float = 0.0
    n_candidates: dict = field(default_factory=lambda: {"greedy": 0, "gcg": 0})
    seconds_by_method: dict = field(default_factory=lambda: {"greedy": 0.0, "gcg": 0.0})
    n_gradients: int | None = None   # backward passes (fast search; None = not counted)
    verify: dict = field(default_factory=dict)  # fp32 verifier: checked, false_positive, unchecked_near


def resume_key(config, drop=("batch_size",)) -> dict:
    """asdict(config), nested, without the fields that do not change a search's outcome.

    `drop`: memory/speed knobs (batch sizes only chunk a step's candidates into
    forwards). A config class may list in `LATER_FIELDS` the fields it gained
    after rows were committed, with the value the code used before they
    existed: at that value they are left out, so a new knob orphans no row.
    """
    later = getattr(type(config), "LATER_FIELDS", {})
    out = {}
    for f in dataclasses.fields(config):
        v = getattr(config, f.name)
        if f.name in drop or (f.name in later and v == later[f.name]):
            continue
        out[f.name] = resume_key(v, drop) if dataclasses.is_dataclass(v) else _plain(v)
    return out


def _plain(v):
    """A JSON-able copy of a config value (lists and dicts copied)."""
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    if isinstance(v, dict):
        return {k: _plain(x) for k, x in v.items()}
    return v
