// Forward/backward timing of the wasm-simd backend on the SPEC §9 CPU shapes.
// node bench/bench.mjs [--threads N] [--seq 2048] [--d 64] [--hq 8] [--causal] [--backward] [--dtype float32] [--reps 5]
import { parseArgs } from 'node:util';
import { tensorFromArray } from '@flashattn/core';
import { createWasmSimdBackend } from '../dist/index.js';

const { values } = parseArgs({
  options: {
    threads: { type: 'string', default: '1' },
    seq: { type: 'string', default: '2048' },
    d: { type: 'string', default: '64' },
    hq: { type: 'string', default: '8' },
    causal: { type: 'boolean', default: false },
    backward: { type: 'boolean', default: false },
    dtype: { type: 'string', default: 'float32' },
    reps: { type: 'string', default: '5' },
    br: { type: 'string' },
    bc: { type: 'string' },
    relaxed: { type: 'string', default: 'auto' },
  },
});
const threads = Number(values.threads);
const s = Number(values.seq);
const d = Number(values.d);
const hq = Number(values.hq);
const reps = Number(values.reps);
const opts = { threads };
if (values.br) opts.blockRows = Number(values.br);
if (values.bc) opts.blockCols = Number(values.bc);
if (values.relaxed !== 'auto') opts.relaxed = values.relaxed === 'true';
const be = await createWasmSimdBackend(opts);
let seed = 1;
const rnd = (n) => {
  const a = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    seed = (seed * 1103515245 + 12345) >>> 0;
    a[i] = (seed / 2 ** 32) * 2 - 1;
  }
  return a;
};
const shape = [1, s, hq, d];
const n = s * hq * d;
const q = tensorFromArray(rnd(n), shape, values.dtype);
const k = tensorFromArray(rnd(n), shape, values.dtype);
const v = tensorFromArray(rnd(n), shape, values.dtype);
const dout = tensorFromArray(rnd(n), shape, values.dtype);
const options = { causal: values.causal, returnLse: true };
const pairs = values.causal ? (s * (s + 1)) / 2 : s * s;
const fwdFlops = 4 * d * pairs * hq;
const median = (a) => [...a].sort((x, y) => x - y)[Math.floor(a.length / 2)];
const fwd = await be.forward(q, k, v, options);
const tf = [];
for (let r = 0; r < reps; r++) {
  const t0 = performance.now();
  await be.forward(q, k, v, options);
  tf.push(performance.now() - t0);
}
const mf = median(tf);
const peak = be.peakGflops(0.5);
const line = {
  variant: be.details.variant,
  threads,
  shape: `b1 hq${hq} d${d} s${s}${values.causal ? ' causal' : ''} ${values.dtype}`,
  forwardMs: +mf.toFixed(1),
  forwardGflops: +(fwdFlops / mf / 1e6).toFixed(2),
  peakGflops1Thread: +peak.toFixed(2),
};
if (values.backward) {
  await be.backward(dout, q, k, v, fwd.out, fwd.lse, options);
  const tb = [];
  for (let r = 0; r < reps; r++) {
    const t0 = performance.now();
    await be.backward(dout, q, k, v, fwd.out, fwd.lse, options);
    tb.push(performance.now() - t0);
  }
  const mb = median(tb);
  line.backwardMs = +mb.toFixed(1);
  line.backwardGflops = +((2.5 * fwdFlops) / mb / 1e6).toFixed(2);
}
console.log(JSON.stringify(line));
await be.dispose();
