#!/usr/bin/env bash
# Time-limited calls of the paper-scale reachability search on the device tool's GPU machine
# (no hub, no gguf, no pydantic, 64 MiB per call; see docs/gpu.md).
#   bash scripts/gpu_search.sh stash [smoke]   calls 1 and 2: keep the carried GGUF part in /tmp; with
#                                              smoke (call 1, carry gpu_carry/wheels and data/wikitext too), search with both
#                                              methods on a tiny model built in-process on the GPU
#   [METHOD=fast|paper] bash scripts/gpu_search.sh SECONDS NSHARDS [bench]
#                                              call 3 (at once, while the machine is warm): assemble
#                                              the GGUF, dequantize once, then NSHARDS `search --shard
#                                              i/N` processes share the GPU until SECONDS have passed
# METHOD=paper replicates the authors' budget (rows in instances/reachability/paper/); the
# default, fast, continues the CPU run of record (instances/reachability/fast/). Rows go to the
# repository copy there (so they resume what git holds) and come back in $OUT, one file per
# family, merged; partial.jsonl holds every shard row so far in case the call is cut.
set -uo pipefail
export PYTHONPATH=$PWD/src:/tmp/site PYTHONUNBUFFERED=1 MAGICTOKENS_CACHE=/tmp/mtcache OMP_NUM_THREADS=2
M=/tmp/smollm2.gguf
wheels() {   # gguf and pydantic are not in the GPU image: install the carried wheels once
  python3 -c "import gguf, pydantic" 2>/dev/null ||
    python3 -m pip install -q --no-index --no-deps --no-cache-dir --target /tmp/site gpu_carry/wheels/*.whl
}
if [ "${1:-}" = stash ]; then
  cp -v gpu_carry/gguf.part-* /tmp/ 2>/dev/null
  [ "${2:-}" = smoke ] || exit 0
  wheels || exit 1
  nvidia-smi -L; python3 -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__, torch.cuda.get_device_name())"
  for m in fast paper; do   # the device-agnostic path on a model built in-process (no weights needed)
    timeout 60 python3 -m magictokens.pipeline search --scale smoke --minutes 0.3 --out-root /tmp/smoke \
      --set reachability.method=$m 2>&1 | tail -1 || exit 1
  done
  python3 - <<'PY' || exit 1
import json, glob
rows = [json.loads(l) for f in glob.glob("/tmp/smoke/results/smoke/instances/reachability/*/*.jsonl") for l in open(f)]
print(len(rows), "smoke rows on the GPU; ks:", sorted(str(r["k"]) for r in rows))
PY
  exit 0
fi
secs=${1:-400}; n=${2:-4}; bench=${3:-}; method=${METHOD:-fast}
t0=$(date +%s)
if [ ! -f $M ]; then
  cat /tmp/gguf.part-aa /tmp/gguf.part-ab gpu_carry/gguf.part-ac > $M.part && mv $M.part $M
  echo "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53  $M" | sha256sum -c || exit 1
fi
wheels || exit 1
python3 -c "from magictokens.models import load_model; load_model('$M', device='cpu')" || exit 1   # dequantize once
if [ -n "$bench" ]; then
  timeout 170 python3 benchmarks/bench_search.py --model $M --out $OUT/bench_gpu.json > $OUT/bench.log 2>&1
  echo "bench rc=$?"; tail -c 3000 $OUT/bench.log
fi
logs=results/paper/instances/reachability/$method
left=$(( secs - ($(date +%s) - t0) ))
mins=$(python3 -c "print(max(0.5, ($left - 60) / 60))")
nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv -l 30 > /tmp/mt_smi.log 2>&1 &
smi=$!
pids=""
for i in $(seq 0 $((n - 1))); do   # --shard: no launcher, no process group; each its share of every family
  timeout -s INT $((left - 15)) python3 -m magictokens.pipeline search --scale paper --minutes $mins --shard $i/$n \
    --set model=$M --set reachability.method=$method > /tmp/mt_shard$i.log 2>&1 &
  pids="$pids $!"
done
while pgrep -f "pipeline search --scale paper" > /dev/null; do   # a call cut at its limit still returns what is under $OUT
  sleep 20; cat $logs/*.shard*of*.jsonl > $OUT/partial.jsonl 2>/dev/null
done
wait $pids
kill $smi 2>/dev/null
cat $logs/*.shard*of*.jsonl > $OUT/partial.jsonl 2>/dev/null
python3 -m magictokens.pipeline merge --scale paper
for f in true_token top75 uniform_rank; do cp $logs/$f.jsonl $OUT/ 2>/dev/null; done
for i in $(seq 0 $((n - 1))); do tail -c 400 /tmp/mt_shard$i.log | tr '\r' '\n' | tail -2; done > $OUT/shards.log
cat /tmp/mt_smi.log >> $OUT/shards.log
python3 -c "import torch, transformers, json; print(json.dumps({'device': torch.cuda.get_device_name(), 'torch': torch.__version__, 'transformers': transformers.__version__, 'shards': $n, 'seconds': $secs, 'method': '$method'}))" > $OUT/gpu_meta.json
wc -l $OUT/*.jsonl; tail -20 $OUT/shards.log
