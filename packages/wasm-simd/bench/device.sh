#!/usr/bin/env bash
# Runs the benchmarks on a quiet machine that has no Node: unpacks a Node binary carried in
# build/devnode/node.xz (xz -c $(which node)), links @flashattn/core, then runs the given commands
# from packages/wasm-simd with $NODE set. Usage (repo root): bash packages/wasm-simd/bench/device.sh 'cmd1' 'cmd2'
set -euo pipefail
root=$(pwd)
xz -dc packages/wasm-simd/build/devnode/node.xz > /tmp/node
chmod +x /tmp/node
mkdir -p node_modules/@flashattn
ln -sfn ../../packages/core node_modules/@flashattn/core
export NODE=/tmp/node
cd "$root/packages/wasm-simd"
lscpu | grep -E 'Model name|^CPU\(s\)' || true
for c in "$@"; do
  echo "== $c"
  eval "$c"
done
