// Runs one attention call through getBackend('auto') and checks the backend and the answer.
import { fromFloat32, getBackend, listBackends, referenceForward64, toFloat32 } from '@flashattn/core';

const expected = process.argv[2];
await import('@flashattn/cpu');
if (expected === 'wasm-simd') await import('@flashattn/wasm-simd');
const shape = [2, 37, 4, 32];
const n = shape.reduce((a, b) => a * b);
const rand = (s) =>
  fromFloat32(
    Float32Array.from({ length: n }, (_, i) => Math.sin(i * 12.9898 + s) * 0.5),
    'float32',
    shape,
  );
const [q, k, v] = [rand(1), rand(2), rand(3)];
const backend = await getBackend('auto');
if (backend.name !== expected) {
  console.error(`FAIL: auto picked ${backend.name}, expected ${expected}`, await listBackends());
  process.exit(1);
}
const { out } = await backend.forward(q, k, v, { causal: true });
const ref = referenceForward64(q, k, v, { causal: true }).out;
const got = toFloat32(out);
let err = 0;
for (let i = 0; i < n; i++) err = Math.max(err, Math.abs(got[i] - ref[i]));
await backend.dispose();
if (!(err < 1e-5)) {
  console.error(`FAIL: max error ${err}`);
  process.exit(1);
}
console.log(`ok: ${backend.name}, max error ${err.toExponential(2)}`);
