#!/usr/bin/env bash
# One time-limited call of the paper-scale reachability search on the device tool's GPU
# machine (no hub, no gguf; see README "Paper scale on the GPU machine"). The first call
# assembles the GGUF from gpu_carry/ (its first half copied to /tmp by the call before),
# installs `gguf`, and dequantizes once; then `accelerate launch` runs NSHARDS search
# processes that share the GPU (each its share of every family; merged at the end).
# Rows accumulate in /tmp/mt (kept while the machine stays warm), and every call copies
# all of them, flat, into $OUT (at most 8 files come back).
#   usage: [METHOD=fast|paper] bash scripts/gpu_search.sh SECONDS NSHARDS [bench]
#   METHOD=paper replicates the authors' budget (rows in instances/reachability/paper/);
#   the default, fast, continues the CPU run of record (instances/reachability/fast/).
set -uo pipefail
secs=${1:-400}; n=${2:-4}; bench=${3:-}; method=${METHOD:-fast}
export PYTHONPATH=$PWD/src:/tmp/site PYTHONUNBUFFERED=1 MAGICTOKENS_CACHE=/tmp/mtcache OMP_NUM_THREADS=2
M=/tmp/smollm2.gguf
if [ ! -f $M ]; then
  cat /tmp/gguf.part-aa gpu_carry/gguf.part-ab > $M.part && mv $M.part $M
  echo "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53  $M" | sha256sum -c || exit 1
  python3 -m pip install -q --no-index --no-deps --no-cache-dir --target /tmp/site gpu_carry/wheels/*.whl || exit 1
fi
t0=$(date +%s)
python3 -c "from magictokens.models import load_model; load_model('$M', device='cpu')" || exit 1   # dequantize once
if [ -n "$bench" ]; then
  timeout 170 python3 benchmarks/bench_search.py --model $M --out $OUT/bench_gpu.json > $OUT/bench.log 2>&1
  echo "bench rc=$?"; tail -c 3000 $OUT/bench.log
fi
left=$(( secs - ($(date +%s) - t0) ))
mins=$(python3 -c "print(max(0.5, ($left - 40) / 60))")
# NSHARDS processes share the GPU through accelerate's launcher (one log per family once merged)
nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv -l 60 > /tmp/mt_smi.log 2>&1 &
smi=$!
timeout -s INT $left python3 -m accelerate.commands.launch --multi_gpu --num_processes $n --num_machines 1 \
  --mixed_precision no --dynamo_backend no -m magictokens.pipeline search --scale paper --minutes $mins \
  --out-root /tmp/mt --set model=$M --set reachability.method=$method > /tmp/mt_search.log 2>&1
kill $smi 2>/dev/null
python3 -m magictokens.pipeline merge --scale paper --out-root /tmp/mt   # a launch cut by timeout leaves shard logs
for f in true_token top75 uniform_rank; do
  cp /tmp/mt/results/paper/instances/reachability/$method/$f.jsonl $OUT/$f.jsonl 2>/dev/null
done
tail -c 3000 /tmp/mt_search.log | tr '\r' '\n' | tail -12 > $OUT/shards.log
cat /tmp/mt_smi.log >> $OUT/shards.log
wc -l $OUT/*.jsonl; cat $OUT/shards.log | tail -40
