#!/usr/bin/env bash
# Benchmarks of the CPU backends (cpu, wasm-simd) on the lent GPU machine's host CPU: 16 quiet cores
# against the shared 2-vCPU development machine, but no Node and no node_modules there.
#
#   here, from the repo root, after `pnpm -r build` (core, cpu, wasm-simd, cli) and
#   ../shared/device/pack-runtime.sh .device (which writes .device/runtime):
#     bash scripts/device/cpu-host.sh pack
#   there (device tool `run`, carry: .device/runtime .device/cpu-host packages/core/dist
#   packages/cpu/dist packages/wasm-simd/dist packages/wasm-simd/build packages/cli/dist):
#     bash scripts/device/cpu-host.sh run cpu|wasm-simd 'cmd1' 'cmd2' ...
#
# `pack` copies the CLI's dependencies and onnxruntime-node (its Linux x64 binaries only, the 45 MB
# library xz-compressed) into .device/cpu-host/nm, for `flashattn bench --anchors`. `run` unpacks
# Node, links the workspace packages and those dependencies into a root node_modules, and runs each
# command from packages/<backend> with $NODE (the Node binary) and $FLASHATTN (the CLI script) set.
set -euo pipefail
root=$(pwd)
mode=${1:-}
shift || true
nm=$root/.device/cpu-host/nm
ortBin=onnxruntime-node/bin/napi-v6/linux/x64

if [[ $mode == pack ]]; then
  pn=$root/node_modules/.pnpm
  rm -rf "$root/.device/cpu-host"
  mkdir -p "$nm/@colors" "$nm/$ortBin"
  # The CLI's runtime dependencies and theirs (pnpm keeps each under .pnpm/<name>@<version>).
  for p in cli-progress@3 cli-table3@0 commander@14 string-width@4 strip-ansi@6 ansi-regex@5 \
    emoji-regex@8 is-fullwidth-code-point@3 onnxruntime-common@1; do
    name=${p%@*}
    dir=$(ls -d "$pn/$p".* | sort -V | tail -1)
    cp -rL "$dir/node_modules/$name" "$nm/"
  done
  cp -rL "$(ls -d "$pn"/@colors+colors@1.* | tail -1)/node_modules/@colors/colors" "$nm/@colors/"
  ort=$(ls -d "$pn"/onnxruntime-node@1.* | sort -V | tail -1)/node_modules/onnxruntime-node
  cp -r "$ort/package.json" "$ort/dist" "$nm/onnxruntime-node/"
  cp "$ort/bin/napi-v6/linux/x64/onnxruntime_binding.node" "$nm/$ortBin/"
  xz -T2 -c "$ort/bin/napi-v6/linux/x64/libonnxruntime.so.1" >"$nm/$ortBin/libonnxruntime.so.1.xz"
  rm -rf "$nm/onnxruntime-common/lib"
  du -sh "$root/.device/cpu-host"
  exit 0
fi

backend=${1:-}
shift || true
if [[ $mode != run || ! -d $root/packages/$backend ]]; then
  echo "usage: bash scripts/device/cpu-host.sh pack | run cpu|wasm-simd 'cmd' ..." >&2
  exit 2
fi
xz -dc .device/runtime/node.xz >/tmp/node
chmod +x /tmp/node
export NODE=/tmp/node
export FLASHATTN="$root/packages/cli/bin/flashattn.js"
mkdir -p node_modules/@flashattn node_modules/@colors
for p in core cpu wasm-simd cli; do ln -sfn "../../packages/$p" "node_modules/@flashattn/$p"; done
for p in "$nm"/*; do [[ $(basename "$p") == @colors ]] || ln -sfn "$p" "node_modules/$(basename "$p")"; done
ln -sfn "$nm/@colors/colors" node_modules/@colors/colors
lib=$nm/$ortBin/libonnxruntime.so.1
[[ -f $lib ]] || xz -dc "$lib.xz" >"$lib"
cd "$root/packages/$backend"
lscpu | grep -E 'Model name|^CPU\(s\)|MHz|L1d|L2|L3' || true
uptime
for c in "$@"; do
  echo "== $c"
  eval "$c"
done
