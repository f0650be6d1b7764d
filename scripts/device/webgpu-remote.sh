#!/usr/bin/env bash
# Runs on the GPU machine (see webgpu-pack.sh): conformance (quick list) and the benchmarks of
# @flashattn/webgpu in one process; the log and webgpu-bench.json land in $OUT.
set -uo pipefail
source .device/runtime/enter.sh
out=${OUT:-/tmp/webgpu-out}
mkdir -p "$out"
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,temperature.gpu --format=csv,noheader || true
node .device/webgpu/bench.mjs --out "$out" "$@" 2>&1 | tee "$out/webgpu-bench.log"
