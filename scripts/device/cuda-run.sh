#!/usr/bin/env bash
# Runs on the GPU machine, from the repository root, after scripts/device/cuda-build.sh made .device/:
# the conformance suite (tensor-core and generic kernels), the benchmarks, and PyTorch's SDPA anchors
# measured in the same run. Logs and JSON go to $OUT (or test-output/).
#   scripts/device/cuda-run.sh [verify] [bench | bwd | decode] [anchor] [profile] [profile-bwd] [profile-decode]
#   (default: verify bench anchor)
# bwd: the backward shapes, variants and checks only (cuda-bench --backward-only; FA_BWD_VARIANTS: the
# backward variants that bench and bwd time, default 0,8,12,14). profile-bwd: Nsight
# Compute on the backward kernels (cuda-ncu-bwd-summary.txt).
# profile: Nsight Compute (clocks left alone) on one d = 128 forward and one decode: cuda-ncu.ncu-rep,
# cuda-ncu.txt (details), cuda-ncu-sass.csv (per-instruction stall samples), cuda-ncu-summary.txt.
# profile-decode: Nsight Compute kernel durations of the 32k decode, its merge in the last CTA against
# the combine kernel (cuda-ncu-decode.txt).
set -uo pipefail
out=${OUT:-test-output}
mkdir -p "$out"
source .device/runtime/enter.sh
mkdir -p /tmp/fa-cuda
xz -dc .device/flashattn_cuda.node.xz > /tmp/fa-cuda/flashattn_cuda.node
export FLASHATTN_CUDA_ADDON=/tmp/fa-cuda/flashattn_cuda.node
export PYTHONUNBUFFERED=1
steps=${*:-verify bench anchor}
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm --format=csv | tee "$out/cuda-gpu.txt"
for step in $steps; do
  case $step in
    verify) timeout "${FA_VERIFY_TIMEOUT:-300}" node .device/cuda-verify.mjs --mode both --clones --jobs "${FA_VERIFY_JOBS:-12}" --out "$out" 2>&1 | tee "$out/cuda-verify.log" ;;
    bench) timeout "${FA_BENCH_TIMEOUT:-240}" node .device/cuda-bench.mjs --bwd-variants "${FA_BWD_VARIANTS:-0,8,12,14}" --out "$out" 2>&1 | tee "$out/cuda-bench.log" ;;
    bwd) timeout "${FA_BENCH_TIMEOUT:-240}" node .device/cuda-bench.mjs --backward-only --bwd-variants "${FA_BWD_VARIANTS:-0,8,12,14}" --out "$out" 2>&1 | tee "$out/cuda-bench.log" ;;
    decode) timeout "${FA_BENCH_TIMEOUT:-240}" node .device/cuda-bench.mjs --decode-only --out "$out" 2>&1 | tee "$out/cuda-bench.log" ;;
    profile)
      timeout "${FA_PROFILE_TIMEOUT:-240}" ncu --clock-control none -k 'regex:tc_fwd_kernel|tc_decode_kernel' -c 2 --import-source no \
        --section SpeedOfLight --section ComputeWorkloadAnalysis --section MemoryWorkloadAnalysis \
        --section Occupancy --section LaunchStats --section SchedulerStats --section WarpStateStats \
        --section InstructionStats --section SourceCounters -f -o "$out/cuda-ncu" \
        node .device/cuda-bench.mjs --profile 2>&1 | tail -20
      ncu -i "$out/cuda-ncu.ncu-rep" --page details > "$out/cuda-ncu.txt" 2>&1
      ncu -i "$out/cuda-ncu.ncu-rep" --page source --print-source sass --csv > "$out/cuda-ncu-sass.csv" 2>&1
      ncu -i "$out/cuda-ncu.ncu-rep" --page raw --csv > "$out/cuda-ncu-raw.csv" 2>&1
      python3 packages/cuda/bench/ncu_summary.py "$out/cuda-ncu-raw.csv" 2>&1 | tee "$out/cuda-ncu-summary.txt"
      ;;
    profile-bwd)
      # The backward's kernels (dK/dV and dQ passes, run 18's FA2-layout kernels), same sections.
      timeout "${FA_PROFILE_TIMEOUT:-240}" ncu --clock-control none -k 'regex:tc_bwd_dkdv_kernel|tc_bwd_dq_kernel|tc_bwd_fa2_kernel' -c 7 --import-source no \
        --section SpeedOfLight --section ComputeWorkloadAnalysis --section MemoryWorkloadAnalysis \
        --section Occupancy --section LaunchStats --section SchedulerStats --section WarpStateStats \
        --section InstructionStats -f -o "$out/cuda-ncu-bwd" \
        node .device/cuda-bench.mjs --profile-bwd 2>&1 | tail -20
      ncu -i "$out/cuda-ncu-bwd.ncu-rep" --page raw --csv > "$out/cuda-ncu-bwd-raw.csv" 2>&1
      python3 packages/cuda/bench/ncu_summary.py "$out/cuda-ncu-bwd-raw.csv" 2>&1 | tee "$out/cuda-ncu-bwd-summary.txt"
      ;;
    profile-decode)
      timeout "${FA_PROFILE_TIMEOUT:-240}" ncu --clock-control none -k 'regex:tc_decode_kernel|combine_kernel' \
        --metrics gpu__time_duration.sum node .device/cuda-bench.mjs --profile-decode > "$out/cuda-ncu-decode.txt" 2>&1
      grep -E "tc_decode_kernel|combine_kernel|gpu__time_duration" "$out/cuda-ncu-decode.txt"
      ;;
    anchor) timeout "${FA_ANCHOR_TIMEOUT:-240}" python3 packages/cuda/bench/sdpa_anchor.py --out "$out" 2>&1 | tee "$out/cuda-anchor.log" ;;
  esac
done
