#!/usr/bin/env bash
# cuda-b's device runs (what scripts/device/cuda-run.sh does, with this folder's addon and runners).
#   bash .device/cuda-b/run.sh [verify] [verify-decode] [decode] [bench] [anchor] [ncu-decode]
# decode (run 15): the bench's --decode-only tables (copy, float32 forward, decode and its variants).
# verify-better (run 15, after decode): the decode cases of the suite with each run-15 decode variant
# (7-9) that ran faster than the default at sk = 32k in this run's cuda-bench.json.
set -uo pipefail
out=${OUT:-test-output}
mkdir -p "$out"
source .device/runtime/enter.sh
mkdir -p /tmp/fa-cuda-b
xz -dc .device/cuda-b/flashattn_cuda.node.xz > /tmp/fa-cuda-b/flashattn_cuda.node
export FLASHATTN_CUDA_ADDON=/tmp/fa-cuda-b/flashattn_cuda.node
export PYTHONUNBUFFERED=1
log="$out/run.log"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm --format=csv | tee "$out/cuda-gpu.txt"
for step in "$@"; do
  echo "=== $step $(date -u +%T)" | tee -a "$log"
  case $step in
    verify) timeout 300 node .device/cuda-b/cuda-verify.mjs --mode both --clones --jobs 12 --out "$out" 2>&1 | tee -a "$log" ;;
    verify-decode) timeout 120 node .device/cuda-b/cuda-verify.mjs --mode auto --clones --filter decode --jobs 4 --out "$out" 2>&1 | tee -a "$log" ;;
    decode) timeout 200 node .device/cuda-b/cuda-bench.mjs --decode-only --out "$out" 2>&1 | tee -a "$log" ;;
    verify-better)
      for n in $(python3 -c "
import json
rows = json.load(open('$out/cuda-bench.json'))['rows']
at = lambda v: [r['ms'] for r in rows if r['what'].startswith('decode') and r['dtype'] == 'bfloat16'
                and r['s'] == 32768 and r.get('variant', 0) == v and 'generic' not in r['kernel']]
base = at(0)[0]
print(' '.join(str(v) for v in (7, 8, 9) if at(v) and at(v)[0] < base))"); do
        echo "verify-decode variant $n" | tee -a "$log"
        timeout 120 node .device/cuda-b/cuda-verify.mjs --mode auto --clones --filter decode --jobs 4 --variant "$n" \
          --out "$out" 2>&1 | tee -a "$log"
      done ;;
    bench) timeout 300 node .device/cuda-b/cuda-bench.mjs --out "$out" 2>&1 | tee -a "$log" ;;
    anchor) timeout 240 python3 packages/cuda/bench/sdpa_anchor.py --out "$out" 2>&1 | tee -a "$log" ;;
    ncu-decode)
      timeout 120 ncu --clock-control none -k 'regex:tc_decode_kernel|combine_kernel' --metrics gpu__time_duration.sum \
        node .device/cuda-b/cuda-bench.mjs --profile-decode > "$out/cuda-ncu-decode.txt" 2>&1
      grep -E "tc_decode_kernel|combine_kernel|gpu__time_duration" "$out/cuda-ncu-decode.txt" | tee -a "$log" ;;
  esac
done
echo "=== done $(date -u +%T)" | tee -a "$log"
