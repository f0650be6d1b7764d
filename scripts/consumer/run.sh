#!/usr/bin/env bash
# The consumer test of issue 8: pack every publishable package, then install from those tarballs only,
# outside the workspace, as a user would, and run attention in each kind of project:
#   1. plain Node ESM with @flashattn/core + @flashattn/cpu (and nothing of webgpu, wasm-simd, cuda);
#   2. CommonJS with the same two packages;
#   3. a Vite browser build of the same two, run in headless Chromium;
#   4. adding @flashattn/wasm-simd makes getBackend('auto') pick it;
#   5. @flashattn/cuda installs on a machine without nvcc, with a message, and reports itself unavailable.
# Needs the packages built (pnpm build). Prints each tarball's size (the README's package table).
set -euo pipefail
top=$(cd "$(dirname "$0")/../.." && pwd)
work=$(mktemp -d /tmp/flashattn-consumer.XXXXXX)
trap 'rm -rf "$work"' EXIT
packs=$work/packs
mkdir -p "$packs"
cd "$top"
for p in core conformance cpu wasm-simd webgpu cuda cli; do
  (cd "packages/$p" && pnpm pack --pack-destination "$packs" >/dev/null)
done
echo "tarballs:"
for f in "$packs"/*.tgz; do printf '  %-36s %s\n' "$(basename "$f")" "$(du -k "$f" | cut -f1) KiB"; done
tgz() { ls "$packs"/flashattn-"$1"-*.tgz; }

# Nothing a user does not run: no tests, no sources, no source maps, no other platforms' binaries.
for f in "$packs"/*.tgz; do
  if tar -tzf "$f" | grep -E '(^package/(test|src|bench)/|\.map$|\.test\.)' | grep -v '^package/native/src/' ; then
    echo "FAIL: $(basename "$f") ships files a user does not run (above)"; exit 1
  fi
done

export npm_config_audit=false npm_config_fund=false npm_config_update_notifier=false

echo "::: 1. Node ESM: core + cpu"
mkdir -p "$work/esm" && cd "$work/esm"
printf '{ "name": "consumer-esm", "private": true, "type": "module" }\n' > package.json
npm install --no-save "$(tgz core)" "$(tgz cpu)" >/dev/null
for forbidden in webgpu cmake-js node-addon-api @flashattn/wasm-simd @flashattn/webgpu @flashattn/cuda onnxruntime-node; do
  if [[ -e node_modules/$forbidden ]]; then echo "FAIL: core + cpu pulled in $forbidden"; exit 1; fi
done
cp "$top/scripts/consumer/attention.mjs" .
node attention.mjs cpu

echo "::: 2. CommonJS: core + cpu"
mkdir -p "$work/cjs" && cd "$work/cjs"
printf '{ "name": "consumer-cjs", "private": true }\n' > package.json
npm install --no-save "$(tgz core)" "$(tgz cpu)" >/dev/null
cp "$top/scripts/consumer/check.cjs" .
node check.cjs

echo "::: 3. Vite browser build: core + cpu"
mkdir -p "$work/vite/src" && cd "$work/vite"
printf '{ "name": "consumer-vite", "private": true, "type": "module" }\n' > package.json
npm install --no-save "$(tgz core)" "$(tgz cpu)" vite@^8 >/dev/null
cat > index.html <<'HTML'
<!doctype html><html><body><pre id="out">running</pre><script type="module" src="/src/main.js"></script></body></html>
HTML
cat > src/main.js <<'JS'
import { getBackend, fromFloat32, toFloat32, referenceForward64 } from '@flashattn/core';
import '@flashattn/cpu';
const shape = [1, 33, 2, 16];
const n = shape.reduce((a, b) => a * b);
const rand = (s) => fromFloat32(Float32Array.from({ length: n }, (_, i) => Math.sin(i * 12.9898 + s) * 0.5), 'float32', shape);
const [q, k, v] = [rand(1), rand(2), rand(3)];
const backend = await getBackend('auto');
const { out } = await backend.forward(q, k, v, { causal: true });
const ref = referenceForward64(q, k, v, { causal: true }).out;
const got = toFloat32(out);
let err = 0;
for (let i = 0; i < n; i++) err = Math.max(err, Math.abs(got[i] - ref[i]));
document.getElementById('out').textContent = JSON.stringify({ backend: backend.name, err });
JS
npx vite build --logLevel warn
node "$top/scripts/consumer/browser.mjs" "$work/vite/dist"

echo "::: 4. adding wasm-simd: auto picks it"
cd "$work/esm"
npm install --no-save "$(tgz core)" "$(tgz cpu)" "$(tgz wasm-simd)" >/dev/null
node attention.mjs wasm-simd

echo "::: 5. cuda without nvcc installs with a message"
mkdir -p "$work/cuda" && cd "$work/cuda"
printf '{ "name": "consumer-cuda", "private": true, "type": "module" }\n' > package.json
nonvcc=$work/bin && mkdir -p "$nonvcc" && ln -s "$(command -v node)" "$nonvcc/node"
PATH=$nonvcc:/usr/bin:/bin CUDA_HOME= CUDA_PATH= FLASHATTN_CUDA_NO_DEFAULT_CUDA=1 \
  npm install --no-save --foreground-scripts "$(tgz core)" "$(tgz cuda)" >install.log 2>&1
if ! grep -q 'the CUDA addon is not built' install.log; then
  echo "FAIL: the cuda install did not say why it skipped the build"; cat install.log; exit 1
fi
grep '@flashattn/cuda:' install.log
node -e "import('@flashattn/core').then(async (c) => { await import('@flashattn/cuda'); const s = (await c.listBackends()).find((b) => b.name === 'cuda'); if (!s || s.available) { console.error('FAIL: cuda status', s); process.exit(1); } console.log('cuda:', s.reason); })"
echo "::: 6. the flashattn command and the conformance cases, from their tarballs"
mkdir -p "$work/cli" && cd "$work/cli"
printf '{ "name": "consumer-cli", "private": true, "type": "module" }\n' > package.json
npm install --no-save --omit=optional --legacy-peer-deps "$(tgz core)" "$(tgz cpu)" "$(tgz conformance)" "$(tgz cli)" >/dev/null
npx --no-install flashattn info
npx --no-install flashattn verify --backend cpu
node -e "import('@flashattn/conformance/cases').then((m) => { const n = m.conformanceCases({ quick: true }).length; if (n < 100) process.exit(1); console.log('conformance cases:', n); })"
echo "consumer test passed"
