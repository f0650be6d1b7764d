#!/usr/bin/env bash
# Runs on the GPU machine, from the repository root, after scripts/device/cuda-build.sh made .device/:
# the conformance suite (tensor-core and generic kernels), the benchmarks, and PyTorch's SDPA anchors
# measured in the same run. Logs and JSON go to $OUT (or test-output/).
#   scripts/device/cuda-run.sh [verify] [bench | decode] [anchor]     (default: verify bench anchor)
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
    bench) timeout "${FA_BENCH_TIMEOUT:-240}" node .device/cuda-bench.mjs --out "$out" 2>&1 | tee "$out/cuda-bench.log" ;;
    decode) timeout "${FA_BENCH_TIMEOUT:-240}" node .device/cuda-bench.mjs --decode-only --out "$out" 2>&1 | tee "$out/cuda-bench.log" ;;
    anchor) timeout "${FA_ANCHOR_TIMEOUT:-240}" python3 packages/cuda/bench/sdpa_anchor.py --out "$out" 2>&1 | tee "$out/cuda-anchor.log" ;;
  esac
done
