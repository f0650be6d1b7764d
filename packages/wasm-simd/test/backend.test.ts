import {
  FlashAttentionError,
  getBackend,
  listBackends,
  referenceBackward64,
  referenceForward64,
  tensorFromArray,
} from '@flashattn/core';
import { afterAll, describe, expect, it, vi } from 'vitest';
import { createWasmSimdBackend, WASM_SIMD_PRIORITY, wasmSimdBackendFactory } from '../src/index.js';

function random(n: number, seed: number): Float32Array {
  let s = seed >>> 0;
  const a = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    a[i] = (s / 2 ** 32) * 2 - 1;
  }
  return a;
}

function maxDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
}

const made: { dispose(): Promise<void> }[] = [];
afterAll(async () => {
  await Promise.all(made.map((b) => b.dispose()));
});

describe('wasm-simd backend', () => {
  it('registers itself as wasm-simd at priority 20 on import', async () => {
    expect(WASM_SIMD_PRIORITY).toBe(20);
    const list = await listBackends();
    const entry = list.find((e) => e.name === 'wasm-simd');
    expect(entry).toMatchObject({ name: 'wasm-simd', priority: 20, available: true });
    const b = await getBackend('wasm-simd');
    expect(b.name).toBe('wasm-simd');
    const f = await wasmSimdBackendFactory({ threads: 1 });
    made.push(f);
    expect(f.capabilities.features).toContain('backward');
  });

  it('matches the float64 reference on a threaded causal GQA problem, bit-identical across thread counts', async () => {
    const [b, s, hq, hk, d] = [2, 160, 4, 2, 64];
    const q = tensorFromArray(random(b * s * hq * d, 1), [b, s, hq, d]);
    const k = tensorFromArray(random(b * s * hk * d, 2), [b, s, hk, d]);
    const v = tensorFromArray(random(b * s * hk * d, 3), [b, s, hk, d]);
    const dout = tensorFromArray(random(b * s * hq * d, 4), [b, s, hq, d]);
    const opts = { causal: true, returnLse: true };
    const one = await createWasmSimdBackend({ threads: 1 });
    const two = await createWasmSimdBackend({ threads: 2, minParallelFlops: 0 });
    made.push(one, two);
    const r1 = await one.forward(q, k, v, opts);
    const r2 = await two.forward(q, k, v, opts);
    expect(Buffer.from(r2.out.data.buffer).equals(Buffer.from(r1.out.data.buffer))).toBe(true);
    const ref = referenceForward64(q, k, v, opts);
    expect(maxDiff(r1.out.data, ref.out)).toBeLessThan(1e-5);
    expect(maxDiff(r1.lse!, ref.lse)).toBeLessThan(1e-5);
    const g1 = await one.backward(dout, q, k, v, r1.out, r1.lse!, { causal: true });
    const g2 = await two.backward(dout, q, k, v, r1.out, r1.lse!, { causal: true });
    for (const key of ['dq', 'dk', 'dv'] as const) {
      expect(Buffer.from(g2[key].data.buffer).equals(Buffer.from(g1[key].data.buffer))).toBe(true);
    }
    const rg = referenceBackward64(dout, q, k, v, { causal: true });
    expect(maxDiff(g1.dq.data, rg.dq)).toBeLessThan(1e-4);
    expect(maxDiff(g1.dk.data, rg.dk)).toBeLessThan(1e-4);
    expect(maxDiff(g1.dv.data, rg.dv)).toBeLessThan(1e-4);
  });

  it('refuses a call larger than its memory limit with OUT_OF_MEMORY, and keeps working', async () => {
    const be = await createWasmSimdBackend({ threads: 1, maxMemoryBytes: 4 * 2 ** 20 });
    made.push(be);
    const n = 1 * 4096 * 4 * 64;
    const big = tensorFromArray(new Float32Array(n), [1, 4096, 4, 64]);
    const err = await be.forward(big, big, big).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(FlashAttentionError);
    expect((err as FlashAttentionError).code).toBe('OUT_OF_MEMORY');
    expect((err as Error).message).toMatch(/MiB/);
    const small = tensorFromArray(random(2 * 8 * 16, 5), [1, 2, 8, 16]);
    const r = await be.forward(small, small, small);
    expect(r.out.data.length).toBe(2 * 8 * 16);
  });

  it('answers DISPOSED after dispose() and terminates its workers', async () => {
    const be = await createWasmSimdBackend({ threads: 2, minParallelFlops: 0 });
    const x = tensorFromArray(random(64 * 2 * 32, 6), [1, 64, 2, 32]);
    await be.forward(x, x, x);
    await be.dispose();
    const err = await be.forward(x, x, x).catch((e: unknown) => e);
    expect((err as FlashAttentionError).code).toBe('DISPOSED');
  });

  it('rejects bad backend options and per-call threads', async () => {
    await expect(createWasmSimdBackend({ threads: 0 })).rejects.toMatchObject({ code: 'INVALID_OPTION' });
    await expect(createWasmSimdBackend({ blockRows: 6 })).rejects.toMatchObject({ code: 'INVALID_OPTION' });
    await expect(createWasmSimdBackend({ nope: 1 } as never)).rejects.toMatchObject({
      code: 'INVALID_OPTION',
    });
    const be = await createWasmSimdBackend({ threads: 1 });
    made.push(be);
    const x = tensorFromArray(random(8 * 16, 7), [1, 8, 1, 16]);
    await expect(be.forward(x, x, x, { threads: -1 } as never)).rejects.toMatchObject({
      code: 'INVALID_OPTION',
    });
    const ok = await be.forward(x, x, x, { threads: 1 } as never);
    expect(ok.out.data.length).toBe(128);
  });

  it('is BACKEND_UNAVAILABLE with a reason where the engine lacks SIMD', async () => {
    const spy = vi.spyOn(WebAssembly, 'validate').mockReturnValue(false);
    try {
      await expect(createWasmSimdBackend()).rejects.toMatchObject({
        code: 'BACKEND_UNAVAILABLE',
        message: expect.stringMatching(/SIMD/),
      });
    } finally {
      spy.mockRestore();
    }
  });

  it('runs the multiply-add peak microbenchmark', async () => {
    const be = await createWasmSimdBackend({ threads: 1 });
    made.push(be);
    expect(be.peakGflops(0.05)).toBeGreaterThan(0.1);
  });
});
