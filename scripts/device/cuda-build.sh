#!/usr/bin/env bash
# Makes .device/ for a CUDA run on the GPU machine (which has no Node.js; see ../shared/device/README.md):
#   .device/runtime/            Node.js and loaders (../shared/device/pack-runtime.sh)
#   .device/flashattn_cuda.node.xz  the addon, built here by nvcc for sm_80/sm_90, with the tuning variants
#   .device/cuda-verify.mjs     the conformance suite against the cuda backend (bundled)
#   .device/cuda-bench.mjs      SPEC §9 benchmarks (bundled)
# Then run there:  scripts/device/cuda-run.sh
# Usage (from the repository root): scripts/device/cuda-build.sh
set -euo pipefail
top=$(git rev-parse --show-toplevel)
cd "$top"
../shared/device/pack-runtime.sh .device >/dev/null
build=${FA_CUDA_DEVICE_BUILD:-/tmp/flashattn-cuda-device-build}
FLASHATTN_CUDA_TUNE=1 FLASHATTN_CUDA_BUILD_DIR="$build" node packages/cuda/scripts/install.mjs --force
strip -o .device/flashattn_cuda.node "$build/Release/flashattn_cuda.node" 2>/dev/null ||
  cp "$build/Release/flashattn_cuda.node" .device/flashattn_cuda.node
xz -T2 -6 -f .device/flashattn_cuda.node  # -> .device/flashattn_cuda.node.xz (about 6 MB)
node scripts/device/cuda-bundle.mjs .device
du -sh .device/runtime .device/flashattn_cuda.node.xz .device/cuda-*.mjs
echo "carry: .device/runtime .device/flashattn_cuda.node.xz .device/cuda-verify.mjs .device/cuda-bench.mjs"
