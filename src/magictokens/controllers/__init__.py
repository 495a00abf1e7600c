"""Controllers: find control prompts u that steer a causal LM.

One algorithm per module, each with a dataclass config whose defaults are the
paper's (or, for the fast search, the measured CPU choice) and a ``run(...)``
returning a result dataclass:

* :mod:`greedy`     - greedy back-generation (paper A, App. C)
* :mod:`gcg`        - Greedy Coordinate Gradient (paper A, App. C)
* :mod:`backoff`    - Algorithm 1 of paper A: k=0, greedy k=1..3, GCG k=4,6,8,10
* :mod:`coordinate` - warm-started coordinate search, success checked on every candidate
* :mod:`fast`       - the same back-off question at ~1/20 of the evaluations (k=1 top-N,
                      coordinate search for k>=2, shortening by deletion)
"""
from .backoff import BackoffConfig, BackoffResult
from .coordinate import CoordinateConfig, CoordinateResult
from .fast import FastConfig
from .gcg import GCGConfig, GCGResult
from .greedy import GreedyConfig, GreedyResult

__all__ = ["BackoffConfig", "BackoffResult", "CoordinateConfig", "CoordinateResult", "FastConfig",
           "GCGConfig", "GCGResult", "GreedyConfig", "GreedyResult"]
