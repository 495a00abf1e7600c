#!/usr/bin/env bash
# Paper B at the cpu scale (its CPU figures of record) for more training seeds; seed 0 is
# `magictokens run cotraining --scale cpu` itself (results/cpu/): each seed retrains co-training +
# baselines and writes results/seeds/seed<S>/results/cpu/. `magictokens report` then puts mean,
# spread and pooled Wilson intervals over seed 0 and these in README. Each seed takes the cpu-scale
# stage's time (its recorded seconds_total, without the self-distillation it reuses) on the 2-core CPU, both threads: stop other
# heavy jobs first.
#   usage: bash scripts/cotraining_seeds.sh [SEED ...]      (default: 1 2)
set -euo pipefail
cd "$(dirname "$0")/.."
seeds=("$@")
[ ${#seeds[@]} -gt 0 ] || seeds=(1 2)
for seed in "${seeds[@]}"; do
  # the cpu scale's targets are one data set (data_seed 0) for every training seed: reuse seed 0's cached
  # self-distillation (same targets key) instead of sampling it again for each seed
  d="results/seeds/seed$seed/results/cpu/models/cotraining"
  mkdir -p "$d"
  for f in results/cpu/models/cotraining/targets-*.json; do [ -e "$f" ] && cp -n "$f" "$d/"; done
  .venv/bin/magictokens run cotraining --scale cpu --set "seed=$seed" --out-root "results/seeds/seed$seed"
done
