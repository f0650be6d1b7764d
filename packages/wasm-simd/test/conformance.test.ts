import { defineConformance } from '@flashattn/conformance';
import { createWasmSimdBackend } from '../src/index.js';

// The default backend (threads = available cores, workers over shared memory).
defineConformance('wasm-simd', async () => createWasmSimdBackend());
