#!/usr/bin/env bash
# Paper B at the cpu scale (its CPU figures of record) for more training seeds; seed 0 is
# `magictokens run cotraining --scale cpu` itself (results/cpu/): each seed retrains co-training +
# baselines and writes results/seeds/seed<S>/results/cpu/. `magictokens report` then puts mean,
# spread and pooled Wilson intervals over seed 0 and these in README. Each seed takes the cpu-scale
# stage's time (its recorded seconds_total: 28-36 min for seeds 0-2) on the 2-core CPU, both threads: stop other
# heavy jobs first.
#   usage: bash scripts/cotraining_seeds.sh [SEED ...]      (default: 1 2)
set -euo pipefail
cd "$(dirname "$0")/.."
seeds=("$@")
[ ${#seeds[@]} -gt 0 ] || seeds=(1 2)
for seed in "${seeds[@]}"; do
  .venv/bin/magictokens run cotraining --scale cpu --set "seed=$seed" --out-root "results/seeds/seed$seed"
done
