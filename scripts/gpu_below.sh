#!/usr/bin/env bash
# The `below` step of the fast search on the device tool's GPU machine (issue 32), one call after the
# two `bash scripts/gpu_search.sh stash` calls that leave gguf.part-aa and -ab in /tmp
# (`bash scripts/gpu_prepare.sh` first, here; each call carries one part, this one part-ac and the wheels):
#   bash scripts/gpu_below.sh BENCH_SECONDS TOTAL_SECONDS [NPROC]
# 1. every variant of benchmarks/bench_below.py (or those in $VARIANTS) on the head-to-head fast rows, NPROC
#    processes shared among them (each a shard), until BENCH_SECONDS; 2. its report chooses a variant by the rule fixed in bench_below.py;
# 3. `record` with the choice on every paper-scale fast row, NPROC shards, until TOTAL_SECONDS.
# Everything it wrote comes back as $OUT/below.tar.gz (rows, below.json, logs), unpacked here with
#   tar -xzf <files_at>/below.tar.gz    (then `magictokens merge --scale paper` merges the record shards)
set -uo pipefail
export PYTHONPATH=$PWD/src:/tmp/site PYTHONUNBUFFERED=1 MAGICTOKENS_CACHE=/tmp/mtcache OMP_NUM_THREADS=1
PY=${PY:-python3}
M=${GGUF:-/tmp/smollm2.gguf}
bench_s=${1:-240}; total_s=${2:-540}; n=${3:-8}
t0=$(date +%s)
left() { echo $(( $1 - ($(date +%s) - t0) )); }
if [ ! -f "$M" ]; then
  cat /tmp/gguf.part-aa /tmp/gguf.part-ab gpu_carry/gguf.part-ac > $M.part && mv $M.part $M
  echo "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53  $M" | sha256sum -c || exit 1
fi
$PY -c "import gguf, pydantic" 2>/dev/null ||
  $PY -m pip install -q --no-index --no-deps --no-cache-dir --target /tmp/site gpu_carry/wheels/*.whl || exit 1
$PY -c "from magictokens.models import load_model; load_model('$M', device='cpu')" || exit 1   # dequantize once
nvidia-smi -L 2>/dev/null
mkdir -p /tmp/below_logs
variants=${VARIANTS:-$($PY -c "import sys; sys.path.insert(0, 'benchmarks'); import bench_below as B; print(' '.join(B.VARIANTS))")}
mins=$($PY -c "print(max(0.2, ($(left $bench_s) - 20) / 60))")
nv=$(echo $variants | wc -w); per=$(( n / nv > 0 ? n / nv : 1 ))   # processes per variant: each its own shard log
for v in $variants; do
  for i in $(seq 0 $((per - 1))); do
    timeout -s INT $(left $bench_s) $PY benchmarks/bench_below.py run --variants $v --shard $i/$per --model $M \
      --minutes $mins > /tmp/below_logs/run_${v}_$i.log 2>&1 &
  done
done
wait
$PY benchmarks/bench_below.py report > /tmp/below_logs/report.log 2>&1; cat /tmp/below_logs/report.log
choice=$($PY -c "import json; print(json.load(open('results/bench/below.json'))['choice'] or '')")
if [ -n "$choice" ] && [ $(left $total_s) -gt 60 ]; then
  mins=$($PY -c "print(max(0.2, ($(left $total_s) - 30) / 60))")
  for i in $(seq 0 $((n - 1))); do
    timeout -s INT $(( $(left $total_s) - 10 )) $PY benchmarks/bench_below.py record --variant $choice --shard $i/$n \
      --model $M --minutes $mins > /tmp/below_logs/record_$i.log 2>&1 &
  done
  wait
fi
for f in /tmp/below_logs/*.log; do echo "== $f"; tail -c 600 $f | tr '\r' '\n' | grep -v '^$' | tail -3; done \
  > /tmp/below_logs/tails.txt
$PY -c "import torch, transformers, json; print(json.dumps({'device': torch.cuda.get_device_name() if torch.cuda.is_available() else 'cpu', 'torch': torch.__version__, 'transformers': transformers.__version__, 'record_shards': $n, 'bench_seconds': $bench_s, 'total_seconds': $total_s, 'choice': '$choice'}))" \
  > /tmp/below_logs/gpu_meta.json
tar -czf ${OUT:-/tmp}/below.tar.gz results/bench/below results/bench/below.json \
  $(ls results/paper/instances/reachability/fast/*.shard*of*.jsonl 2>/dev/null) -C /tmp below_logs
cat /tmp/below_logs/tails.txt | tail -40
