#!/usr/bin/env node
// This engine's f32x4 multiply-add peak on one thread (the yardstick of the ">= 60% of peak" target),
// for the plain SIMD build and, where the engine validates it, the relaxed-SIMD (FMA) build.
//   node bench/peak.mjs            (Node 20: add --experimental-wasm-relaxed-simd for the FMA build)
import { createWasmSimdBackend, hasRelaxedSimd } from '../dist/index.js';

for (const relaxed of hasRelaxedSimd() ? [false, true] : [false]) {
  const be = await createWasmSimdBackend({ threads: 1, relaxed });
  console.log(`${be.details.variant}: peak ${be.peakGflops(2).toFixed(2)} GFLOP/s (one thread)`);
  await be.dispose();
}
if (!hasRelaxedSimd())
  console.log('relaxed SIMD: not validated by this engine (Node 20: --experimental-wasm-relaxed-simd)');
