#!/usr/bin/env bash
# cuda-build.sh's steps without the runtime pack (a worktree's .git is a file), into .device/ here
# and copied to /work/main/.device/bwd3/ with device-run.sh as run.sh (run 18: the FA2-layout
# backward; run 15's build.sh adapted). The runtime comes from /work/main/.device/runtime.
set -euo pipefail
cd /work/wt-cuda-b
build=/tmp/fa-cuda-bwd3-build
FLASHATTN_CUDA_ARCHS=${FLASHATTN_CUDA_ARCHS:-80;90} FLASHATTN_CUDA_TUNE=1 FLASHATTN_CUDA_PTXAS=1 FLASHATTN_CUDA_JOBS=2 FLASHATTN_CUDA_BUILD_DIR="$build" node packages/cuda/scripts/install.mjs --force
mkdir -p .device
strip -o .device/flashattn_cuda.node "$build/Release/flashattn_cuda.node" 2>/dev/null || cp "$build/Release/flashattn_cuda.node" .device/flashattn_cuda.node
xz -T2 -6 -f .device/flashattn_cuda.node
node scripts/device/cuda-bundle.mjs .device
mkdir -p /work/main/.device/bwd3
cp .device/flashattn_cuda.node.xz .device/cuda-bench.mjs .device/cuda-verify.mjs /work/main/.device/bwd3/
cp packages/cuda/bench/results/run18/device-run.sh /work/main/.device/bwd3/run.sh
ls -la /work/main/.device/bwd3
