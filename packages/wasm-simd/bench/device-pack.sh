#!/usr/bin/env bash
# Prepares what bench/device.sh needs on a machine with no Node and no node_modules (run here, from
# the repo root, after building core, cpu, cli and wasm-simd): .device/wasm/nm holds the CLI's
# dependencies and onnxruntime-node 1.30 (its Linux x64 binaries only, the 45 MB library xz-compressed)
# for the `flashattn bench --anchors` run. The Node binary comes from .device/runtime
# (../shared/device/pack-runtime.sh). Carry: .device/runtime .device/wasm packages/core/dist
# packages/cpu/dist packages/wasm-simd/dist packages/cli/dist.
set -euo pipefail
root=$(pwd)
pn=$root/node_modules/.pnpm
out=$root/.device/wasm/nm
rm -rf "$root/.device/wasm"
mkdir -p "$out/@colors"
for p in cli-progress@3.12.0/cli-progress cli-table3@0.6.5/cli-table3 commander@14.0.3/commander \
  string-width@4.2.3/string-width strip-ansi@6.0.1/strip-ansi ansi-regex@5.0.1/ansi-regex \
  emoji-regex@8.0.0/emoji-regex is-fullwidth-code-point@3.0.0/is-fullwidth-code-point \
  onnxruntime-common@1.30.0/onnxruntime-common; do
  cp -rL "$pn/${p%%/*}/node_modules/${p#*/}" "$out/"
done
cp -rL "$pn/@colors+colors@1.5.0/node_modules/@colors/colors" "$out/@colors/"
ort=$pn/onnxruntime-node@1.30.0/node_modules/onnxruntime-node
mkdir -p "$out/onnxruntime-node/bin/napi-v6/linux/x64"
cp -r "$ort/package.json" "$ort/dist" "$out/onnxruntime-node/"
cp "$ort/bin/napi-v6/linux/x64/onnxruntime_binding.node" "$out/onnxruntime-node/bin/napi-v6/linux/x64/"
xz -T2 -c "$ort/bin/napi-v6/linux/x64/libonnxruntime.so.1" > "$out/onnxruntime-node/bin/napi-v6/linux/x64/libonnxruntime.so.1.xz"
rm -rf "$out/onnxruntime-common/lib"
du -sh "$root/.device/wasm"
