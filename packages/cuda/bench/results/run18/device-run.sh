#!/usr/bin/env bash
# Run 18's device runs (what scripts/device/cuda-run.sh does, with .device/bwd3's addon and runners;
# carry [".device/runtime", ".device/bwd3"]):
#   bash .device/bwd3/run.sh [verify] [verify-v8] [verify-v9] [verify-v10] [bwd] [profile-bwd]
# (FA_BWD_VARIANTS: the backward variants bwd times, default 0,8,12,14)
# verify-v8: the suite's cases in auto mode with the clones, with backward variant 8 (the FA2-layout
# kernel) in place of the default wherever it applies.
set -uo pipefail
out=${OUT:-test-output}
mkdir -p "$out"
source .device/runtime/enter.sh
mkdir -p /tmp/fa-bwd3
xz -dc .device/bwd3/flashattn_cuda.node.xz > /tmp/fa-bwd3/flashattn_cuda.node
export FLASHATTN_CUDA_ADDON=/tmp/fa-bwd3/flashattn_cuda.node
export PYTHONUNBUFFERED=1
log="$out/run.log"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm --format=csv | tee "$out/cuda-gpu.txt"
for step in "$@"; do
  echo "=== $step $(date -u +%T)" | tee -a "$log"
  case $step in
    verify) timeout 300 node .device/bwd3/cuda-verify.mjs --mode both --clones --jobs 12 --out "$out" 2>&1 | tee -a "$log" ;;
    verify-v8) timeout 200 node .device/bwd3/cuda-verify.mjs --mode auto --clones --jobs 12 --variant 8 --out "$out" 2>&1 | tee -a "$log" ;;
    verify-v9) timeout 200 node .device/bwd3/cuda-verify.mjs --mode auto --clones --jobs 12 --variant 9 --out "$out" 2>&1 | tee -a "$log" ;;
    verify-v10) timeout "${FA_V10_TIMEOUT:-200}" node .device/bwd3/cuda-verify.mjs --mode auto --clones --jobs 12 --variant 10 --out "$out" 2>&1 | tee -a "$log" ;;
    bwd) timeout "${FA_BENCH_TIMEOUT:-240}" node .device/bwd3/cuda-bench.mjs --backward-only --bwd-variants "${FA_BWD_VARIANTS:-0,8,12,14}" \
      --out "$out" 2>&1 | tee -a "$log" ;;
    profile-bwd)
      # The default, variant 8 and the two passes (14) at d = 128, s = 4096, full (profileBackward).
      timeout 240 ncu --clock-control none -k 'regex:tc_bwd_dkdv_kernel|tc_bwd_dq_kernel|tc_bwd_fa2_kernel' -c 7 \
        --import-source no --section SpeedOfLight --section ComputeWorkloadAnalysis --section MemoryWorkloadAnalysis \
        --section Occupancy --section SchedulerStats --section WarpStateStats --section InstructionStats \
        -f -o "$out/cuda-ncu-bwd" node .device/bwd3/cuda-bench.mjs --profile-bwd 2>&1 | tail -20
      ncu -i "$out/cuda-ncu-bwd.ncu-rep" --page raw --csv > "$out/cuda-ncu-bwd-raw.csv" 2>&1
      python3 packages/cuda/bench/ncu_summary.py "$out/cuda-ncu-bwd-raw.csv" 2>&1 | tee "$out/cuda-ncu-bwd-summary.txt"
      rm -f "$out/cuda-ncu-bwd.ncu-rep" ;;
  esac
done
echo "=== done $(date -u +%T)" | tee -a "$log"
