#!/usr/bin/env bash
# The cpu backend's benchmarks on a machine that has no Node: the lent GPU machine, whose quiet
# multi-core host CPU gives steadier figures than the shared 2-vCPU development machine.
#
#   here, from the repo root, after building core, cpu and cli and running
#   ../shared/device/pack-runtime.sh (which writes .device/runtime):
#     bash packages/cpu/bench/device.sh pack
#   there (device tool `run`, carry: .device/runtime .device/cpu packages/core/dist
#   packages/cpu/dist packages/cli/dist):
#     bash packages/cpu/bench/device.sh run 'cmd1' 'cmd2' ...
#
# `pack` copies the CLI's dependencies and onnxruntime-node 1.30 (its Linux x64 binaries only, the
# large library xz-compressed) into .device/cpu/nm, for `flashattn bench --anchors`. `run` unpacks
# Node, links the workspace packages and those dependencies into a root node_modules, and runs each
# command from packages/cpu with $NODE (the Node binary) and $FLASHATTN (the CLI script) set.
set -euo pipefail
root=$(pwd)
mode=${1:-}
shift || true

if [[ $mode == pack ]]; then
  pn=$root/node_modules/.pnpm
  out=$root/.device/cpu/nm
  rm -rf "$root/.device/cpu"
  mkdir -p "$out/@colors"
  for p in cli-progress@3.12.0/cli-progress cli-table3@0.6.5/cli-table3 commander@14.0.3/commander \
    string-width@4.2.3/string-width strip-ansi@6.0.1/strip-ansi ansi-regex@5.0.1/ansi-regex \
    emoji-regex@8.0.0/emoji-regex is-fullwidth-code-point@3.0.0/is-fullwidth-code-point \
    onnxruntime-common@1.30.0/onnxruntime-common; do
    cp -rL "$pn/${p%%/*}/node_modules/${p#*/}" "$out/"
  done
  cp -rL "$pn/@colors+colors@1.5.0/node_modules/@colors/colors" "$out/@colors/"
  ort=$pn/onnxruntime-node@1.30.0/node_modules/onnxruntime-node
  bin=onnxruntime-node/bin/napi-v6/linux/x64
  mkdir -p "$out/$bin"
  cp -r "$ort/package.json" "$ort/dist" "$out/onnxruntime-node/"
  cp "$ort/bin/napi-v6/linux/x64/onnxruntime_binding.node" "$out/$bin/"
  xz -T2 -c "$ort/bin/napi-v6/linux/x64/libonnxruntime.so.1" >"$out/$bin/libonnxruntime.so.1.xz"
  du -sh "$root/.device/cpu"
  exit 0
fi

if [[ $mode != run ]]; then
  echo "usage: bash packages/cpu/bench/device.sh pack | run 'cmd' ..." >&2
  exit 2
fi
xz -dc .device/runtime/node.xz >/tmp/node
chmod +x /tmp/node
export NODE=/tmp/node
export FLASHATTN="$root/packages/cli/bin/flashattn.js"
mkdir -p node_modules/@flashattn node_modules/@colors
for p in core cpu cli; do ln -sfn "../../packages/$p" "node_modules/@flashattn/$p"; done
nm=$root/.device/cpu/nm
for p in "$nm"/*; do [[ $(basename "$p") == @colors ]] || ln -sfn "$p" "node_modules/$(basename "$p")"; done
ln -sfn "$nm/@colors/colors" node_modules/@colors/colors
lib=$nm/onnxruntime-node/bin/napi-v6/linux/x64/libonnxruntime.so.1
[[ -f $lib ]] || xz -dc "$lib.xz" >"$lib"
cd "$root/packages/cpu"
lscpu | grep -E 'Model name|^CPU\(s\)|MHz|L1d|L2|L3' || true
uptime
for c in "$@"; do
  echo "== $c"
  eval "$c"
done
