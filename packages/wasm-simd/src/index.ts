/**
 * @flashattn/wasm-simd: FlashAttention-2 forward and backward in AssemblyScript on 128-bit
 * WebAssembly SIMD, threaded over workers that share one WebAssembly memory.
 *
 * Importing this module registers the backend as 'wasm-simd' at priority 20.
 */
import { type Backend, registerBackend } from '@flashattn/core';
import { createWasmSimdBackend, type WasmSimdOptions } from './backend.js';

export {
  BACKEND_NAME,
  createWasmSimdBackend,
  type Variant,
  type WasmSimdBackend,
  type WasmSimdInfo,
  type WasmSimdOptions,
} from './backend.js';
export { hasRelaxedSimd, hasWasmSimd, sharedMemoryUnavailableReason } from './wasm.js';

/** The registry factory: a backend with default options. */
export function wasmSimdBackendFactory(options?: WasmSimdOptions): Promise<Backend> {
  return createWasmSimdBackend(options);
}

export const WASM_SIMD_PRIORITY = 20;

registerBackend('wasm-simd', () => createWasmSimdBackend(), WASM_SIMD_PRIORITY);
