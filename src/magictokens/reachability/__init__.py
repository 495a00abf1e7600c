"""Paper A's reachability experiments, as a library (the stage is `stages/reachability.py`).

* `config`    params.yaml `reachability:` (families, method, budgets)
* `instances` the three (x0, y) families: true token, top-75, uniform rank
* `runner`    resumable back-off searches over every instance, one JSONL row each
* `stats`     k-epsilon curves, the k = 0 census, correlations, speed, histogram
"""
from .config import ReachabilityConfig, Top75Config, TrueTokenConfig, UniformRankConfig, method_config
from .instances import (HEADING, Instance, authors_csv_instances, build_instances, encode_target, next_token_logits,
                        paragraphs, sample_wikitext_instances, special_prefix, top_n_instances,
                        uniform_rank_instances)
from .runner import batch_sizes_of, instance_seed, log_dir, resume_header, run_families, run_instances
from .stats import budget_label, correlations, k0_census, speed_stats, summarize, token_histogram

__all__ = ["HEADING", "Instance", "ReachabilityConfig", "Top75Config", "TrueTokenConfig", "UniformRankConfig",
           "authors_csv_instances", "batch_sizes_of", "budget_label", "build_instances", "correlations",
           "encode_target", "instance_seed", "k0_census", "log_dir", "method_config", "next_token_logits",
           "paragraphs", "resume_header", "run_families", "run_instances", "sample_wikitext_instances",
           "special_prefix", "speed_stats", "summarize", "token_histogram", "top_n_instances", "uniform_rank_instances"]
