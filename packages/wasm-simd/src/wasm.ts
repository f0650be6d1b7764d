/**
 * Engine feature detection and the kernel modules. The four builds are embedded as base64 (see
 * scripts/build-wasm.mjs), so loading needs no file system, fetch or bundler plugin.
 */
import { FlashAttentionError } from '@flashattn/core';
import { relaxed, relaxedThreads, simd, simdThreads } from './generated/wasm-binaries.js';

const binaries = { simd, relaxed, simdThreads, relaxedThreads };

// (module (func (result v128) (v128.const i32x4 0 0 0 0)))
const SIMD_PROBE = new Uint8Array([
  0, 97, 115, 109, 1, 0, 0, 0, 1, 5, 1, 96, 0, 1, 123, 3, 2, 1, 0, 10, 22, 1, 20, 0, 253, 12, 0, 0, 0, 0, 0,
  0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 11,
]);

// (module (func (result v128) (f32x4.relaxed_madd (v128.const 0) (v128.const 0) (v128.const 0))))
const RELAXED_PROBE = new Uint8Array([
  0, 97, 115, 109, 1, 0, 0, 0, 1, 5, 1, 96, 0, 1, 123, 3, 2, 1, 0, 10, 61, 1, 59, 0, 253, 12, 0, 0, 0, 0, 0,
  0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 253, 12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 253, 12, 0, 0, 0,
  0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 253, 133, 2, 11,
]);

function validate(bytes: Uint8Array): boolean {
  try {
    return typeof WebAssembly === 'object' && WebAssembly.validate(bytes as BufferSource);
  } catch {
    return false;
  }
}

export function hasWasmSimd(): boolean {
  return validate(SIMD_PROBE);
}

export function hasRelaxedSimd(): boolean {
  return validate(RELAXED_PROBE);
}

/** Why shared memory (and so threads) is not available here, or null when it is. */
export function sharedMemoryUnavailableReason(): string | null {
  if (typeof SharedArrayBuffer !== 'function') {
    return 'SharedArrayBuffer is not available (in a browser the page must be cross-origin isolated: COOP/COEP headers)';
  }
  const g = globalThis as { crossOriginIsolated?: boolean };
  if (g.crossOriginIsolated === false) {
    return 'the page is not cross-origin isolated (COOP/COEP headers), so shared memory is disabled';
  }
  try {
    new WebAssembly.Memory({ initial: 1, maximum: 1, shared: true } as WebAssembly.MemoryDescriptor);
  } catch (e) {
    return `shared WebAssembly.Memory cannot be created: ${(e as Error).message}`;
  }
  return null;
}

export type Variant = 'simd' | 'relaxed' | 'simdThreads' | 'relaxedThreads';

function decodeBase64(b64: string): Uint8Array {
  const B = (globalThis as { Buffer?: { from(s: string, enc: string): Uint8Array } }).Buffer;
  if (B) return new Uint8Array(B.from(b64, 'base64'));
  const bin = atob(b64);
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out;
}

const compiled = new Map<Variant, Promise<WebAssembly.Module>>();

export function compileVariant(v: Variant): Promise<WebAssembly.Module> {
  let m = compiled.get(v);
  if (!m) {
    const bytes = decodeBase64(binaries[v]);
    m = WebAssembly.compile(bytes as BufferSource).catch((e: unknown) => {
      compiled.delete(v);
      throw new FlashAttentionError(
        'BACKEND_UNAVAILABLE',
        `the ${v} kernel module does not compile on this engine: ${(e as Error).message}`,
        { cause: e },
      );
    });
    compiled.set(v, m);
  }
  return m;
}

export interface KernelExports {
  memory: WebAssembly.Memory;
  scratch_floats(br: number, bc: number, dp: number): number;
  fwd_run(worker: number): void;
  pack_run(worker: number): void;
  bwd_prep(): void;
  bwd_run(worker: number): void;
  finish_rows(
    dst: number,
    src: number,
    nrows: number,
    chunks: number,
    chunkFloats: number,
    mul: number,
  ): void;
  peak(iters: number): number;
  peak_loads(ptr: number, iters: number): number;
  peak_flops_per_iter(): number;
  is_relaxed(): number;
}

export async function instantiate(
  module: WebAssembly.Module,
  memory: WebAssembly.Memory,
): Promise<KernelExports> {
  const instance = await WebAssembly.instantiate(module, { env: { memory } });
  return instance.exports as unknown as KernelExports;
}
