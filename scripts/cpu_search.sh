#!/usr/bin/env bash
# The paper-scale reachability search of record on a CPU, resumable: run it in the
# background, beside other work with THREADS=1 (the default) or alone with THREADS=2.
# Rows land in results/paper/instances/reachability/fast/ one per finished instance
# (fsynced), so a stop loses at most the instance in flight; commit them often:
#   git add results/paper/instances/reachability/fast && git commit -m "paper-scale rows"
# When every family is done: magictokens run reachability --scale paper && magictokens report
# Figure 1 first (true-token instances are mostly solved at k=0, uniform-rank ones mostly
# cost the whole budget): --family true_token, then top75, then uniform_rank.
#   usage: [THREADS=1] bash scripts/cpu_search.sh [--minutes M] [--family F ...]
set -euo pipefail
cd "$(dirname "$0")/.."
threads=${THREADS:-1}
export OMP_NUM_THREADS=$threads MKL_NUM_THREADS=$threads
exec .venv/bin/magictokens search --scale paper "$@"
