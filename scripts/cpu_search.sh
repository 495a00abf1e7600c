#!/usr/bin/env bash
# The paper-scale reachability search of record on a CPU, resumable: run it in the
# background, beside other work with THREADS=1 (the default) or alone with THREADS=2.
# Rows land in results/paper/instances/reachability/fast/ one per finished instance
# (fsynced), so a stop loses at most the instance in flight; commit them often:
#   git add results/paper/instances/reachability/fast && git commit -m "paper-scale rows"
# When every family is done: magictokens run reachability --scale paper && magictokens report
#   usage: [THREADS=1] bash scripts/cpu_search.sh [MINUTES]
set -euo pipefail
cd "$(dirname "$0")/.."
threads=${THREADS:-1}
export OMP_NUM_THREADS=$threads MKL_NUM_THREADS=$threads
exec .venv/bin/magictokens search --scale paper ${1:+--minutes $1}
