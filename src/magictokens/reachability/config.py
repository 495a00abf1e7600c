"""params.yaml `reachability:`: the three instance families, the search method and its budget."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Literal

from pydantic import Field

from ..controllers import backoff, fast
from ..fields import Count, NonNegativeReal, Positive, params

Lengths = Annotated[list[Positive], Field(min_length=1)]     # |x0| values, at least one


@params
@dataclass
class TrueTokenConfig:
    source: Literal["wikitext", "authors_csv"] = "wikitext"
    lengths: Lengths = field(default_factory=lambda: [8, 10, 16, 22, 32])
    n_per_len: Count = 200              # paper: 1,000 per length for GPT-2


@params
@dataclass
class Top75Config:
    n_x0_per_len: Count = 5             # paper: 25 x0
    lengths: Lengths = field(default_factory=lambda: [8, 10, 16, 22, 32])
    top_n: Positive = 75
    n_targets: Positive = 75            # <= top_n: one rank from each of n_targets equal strata of 0..top_n-1


@params
@dataclass
class UniformRankConfig:
    n_x0_per_len: Count = 4             # 20 x0 over the five lengths
    lengths: Lengths = field(default_factory=lambda: [8, 10, 16, 22, 32])
    n_ranks: Positive = 185             # ranks 0, V/n, 2V/n, ...: every ~265th rank of a 49k vocabulary


@params
@dataclass
class ReachabilityConfig:
    true_token: TrueTokenConfig = field(default_factory=TrueTokenConfig)
    top75: Top75Config = field(default_factory=Top75Config)
    uniform_rank: UniformRankConfig = field(default_factory=UniformRankConfig)
    method: Literal["fast", "paper"] = "fast"   # fast (CPU method of record) | paper (the authors' Algorithm 1 budget)
    backoff: backoff.BackoffConfig = field(default_factory=backoff.BackoffConfig)   # method: paper
    fast: fast.FastConfig = field(default_factory=fast.FastConfig)                  # method: fast
    hist_top: Positive = 40
    # Start no new instance after this many minutes of the stage's searches (null: run
    # them all). A cut run aggregates the finished instances, a seeded random subset of
    # each family, and marks itself partial in the json and on every figure.
    search_minutes: NonNegativeReal | None = None


def method_config(cfg: ReachabilityConfig):
    """The search config of the chosen method: FastConfig or BackoffConfig."""
    return cfg.fast if cfg.method == "fast" else cfg.backoff
