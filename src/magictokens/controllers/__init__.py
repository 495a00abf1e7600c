"""Controllers: find control prompts u that steer a causal LM.

One algorithm per module, each with a dataclass config whose defaults are the
paper's (or, for the fast search, the measured CPU choice) and a ``run(...)``
returning a result dataclass, as nanoGCG does:

* :mod:`greedy`     - greedy back-generation (paper A, App. C)
* :mod:`gcg`        - Greedy Coordinate Gradient (paper A, App. C)
* :mod:`backoff`    - Algorithm 1 of paper A: k=0, greedy k=1..3, GCG k=4,6,8,10
* :mod:`coordinate` - warm-started coordinate search, success checked on every candidate
* :mod:`fast`       - the same back-off question at ~1/20 of the evaluations (k=1 top-N,
                      coordinate search for k>=2, shortening by deletion)
* :mod:`below`      - fast's optional last step: a bounded extra budget below the found k

Shared pieces live beside them, never in a sibling algorithm: `filters`
(which tokens may be used), `results` (the trace step and back-off result
every search reports, and what of a config keys resumed rows) and the
package-level `scoring` (batched scoring, the fp32 verifier, gradients).

    from magictokens.controllers import FastConfig, run_fast
    r = run_fast(model, tok, x0_ids, target_id, FastConfig(), verify_model=fp32_model)   # -> BackoffResult
"""
from .backoff import BackoffConfig
from .backoff import run as run_backoff
from .coordinate import CoordinateConfig, CoordinateResult
from .coordinate import run as run_coordinate
from .fast import FastConfig
from .fast import run as run_fast
from .gcg import GCGConfig, GCGResult
from .gcg import run as run_gcg
from .greedy import GreedyConfig, GreedyResult
from .greedy import run as run_greedy
from .results import BackoffResult, TraceStep, resume_key

__all__ = ["BackoffConfig", "BackoffResult", "CoordinateConfig", "CoordinateResult", "FastConfig", "GCGConfig",
           "GCGResult", "GreedyConfig", "GreedyResult", "TraceStep", "resume_key", "run_backoff", "run_coordinate",
           "run_fast", "run_gcg", "run_greedy"]
