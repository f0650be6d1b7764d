import { defineConformance } from '@flashattn/conformance';
import { createWasmSimdBackend } from '../src/index.js';

// Every call through the worker pool, however small.
defineConformance(
  'wasm-simd 2 workers',
  async () => createWasmSimdBackend({ threads: 2, minParallelFlops: 0 }),
  {
    quick: true,
  },
);

// The calling thread, with tiles that leave remainders everywhere (odd panel counts, short key blocks).
defineConformance(
  'wasm-simd 1 thread, 12x8 tiles',
  async () => createWasmSimdBackend({ threads: 1, blockRows: 12, blockCols: 8 }),
  { quick: true },
);
