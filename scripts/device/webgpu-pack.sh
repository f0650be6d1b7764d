#!/usr/bin/env bash
# Builds and packs what the GPU machine needs for the WebGPU run: .device/runtime (Node, Vulkan loader;
# ../shared/device/pack-runtime.sh) and .device/webgpu (bench.mjs bundle + node_modules/webgpu linux-x64).
# Then call the device tool's `run` with carry [".device/runtime", ".device/webgpu"] and the command:
#   bash scripts/device/webgpu-remote.sh
set -euo pipefail
cd "$(git rev-parse --show-toplevel)"
bash ../shared/device/pack-runtime.sh .device
pnpm --filter @flashattn/core --filter @flashattn/conformance build >/dev/null
node packages/webgpu/bench/bundle.mjs .device/webgpu
du -sh .device/runtime .device/webgpu
