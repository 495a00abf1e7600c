"""Controllers: find control prompts u that steer a causal LM.

One algorithm per module, each with a dataclass config whose defaults are the
paper's and a ``run(...)`` returning a result dataclass:

* :mod:`greedy`  - greedy back-generation (paper A, App. C)
* :mod:`gcg`     - Greedy Coordinate Gradient (paper A, App. C)
* :mod:`backoff` - Algorithm 1 of paper A: k=0, greedy k=1..3, GCG k=4,6,8,10
"""
from .backoff import BackoffConfig, BackoffResult
from .gcg import GCGConfig, GCGResult
from .greedy import GreedyConfig, GreedyResult

__all__ = ["BackoffConfig", "BackoffResult", "GCGConfig", "GCGResult", "GreedyConfig", "GreedyResult"]
