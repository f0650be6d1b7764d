#!/usr/bin/env bash
# Runs benchmark commands on a machine that has no Node (the lent GPU machine's CPU): takes the Node
# binary from .device/runtime/node.xz (../shared/device/pack-runtime.sh), links the workspace
# packages and what bench/device-pack.sh put in .device/wasm/nm into a root node_modules, then runs
# each command from packages/wasm-simd with $NODE and $FLASHATTN (the CLI) set.
# Usage (repo root): bash packages/wasm-simd/bench/device.sh 'cmd1' 'cmd2' ...
# Carry: .device/runtime .device/wasm packages/core/dist packages/cpu/dist packages/wasm-simd/dist
# packages/wasm-simd/build packages/cli/dist
set -euo pipefail
root=$(pwd)
xz -dc .device/runtime/node.xz > /tmp/node
chmod +x /tmp/node
export NODE=/tmp/node
export FLASHATTN="$root/packages/cli/bin/flashattn.js"
mkdir -p node_modules/@flashattn node_modules/@colors
for p in core cpu wasm-simd cli; do ln -sfn "../../packages/$p" "node_modules/@flashattn/$p"; done
nm=$root/.device/wasm/nm
for p in "$nm"/*; do [[ $(basename "$p") == @colors ]] || ln -sfn "$p" "node_modules/$(basename "$p")"; done
ln -sfn "$nm/@colors/colors" node_modules/@colors/colors
lib=$nm/onnxruntime-node/bin/napi-v6/linux/x64/libonnxruntime.so.1
[[ -f $lib ]] || xz -dc "$lib.xz" > "$lib"
cd "$root/packages/wasm-simd"
lscpu | grep -E 'Model name|^CPU\(s\)|MHz|L1d|L2|L3' || true
uptime
for c in "$@"; do
  echo "== $c"
  eval "$c"
done
