import { defineConformance } from '@flashattn/conformance';
import { createWasmSimdBackend, hasRelaxedSimd } from '../src/index.js';

// Run by the 'relaxed-simd' vitest project, whose Node gets --experimental-wasm-relaxed-simd.
defineConformance('wasm-simd relaxed-simd FMA', async () => createWasmSimdBackend({ relaxed: true }), {
  quick: true,
  skipReason: hasRelaxedSimd() ? undefined : 'this engine does not validate relaxed SIMD',
});
