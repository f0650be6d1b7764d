import {
  type AttentionOptions,
  type DType,
  type HostTensor,
  referenceBackward64,
  referenceBackwardLow,
  referenceForward64,
  referenceForwardLow,
  tensorFromArray,
  toFloat32,
} from '@flashattn/core';
import { expect } from 'vitest';

/** mulberry32: small, seeded, good enough for test data. */
export function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export function randomTensor(shape: number[], dtype: DType, seed: number, scale = 1): HostTensor {
  const r = rng(seed);
  const n = shape.reduce((a, b) => a * b, 1);
  const values = new Float64Array(n);
  for (let i = 0; i < n; i++) values[i] = (r() * 2 - 1) * scale;
  return tensorFromArray(values, shape, dtype);
}

export const FLOOR: Record<DType, number> = { float32: 1e-6, float16: 1e-4, bfloat16: 1e-3 };

function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let m = 0;
  for (let i = 0; i < b.length; i++) {
    const x = a[i];
    const y = b[i];
    if (Number.isNaN(x) || Number.isNaN(y)) {
      if (Number.isNaN(x) !== Number.isNaN(y)) return Number.POSITIVE_INFINITY;
      continue;
    }
    if (x === y) continue; // equal infinities
    m = Math.max(m, Math.abs(x - y));
  }
  return m;
}

/** SPEC §8: max|x - ref64| <= factor·max|refLow - ref64| + floorFactor·floor, NaN exactly where the reference has NaN. */
export function expectClose(
  what: string,
  got: ArrayLike<number>,
  ref64: ArrayLike<number>,
  refLow: ArrayLike<number>,
  dtype: DType,
  factor: number,
  floorFactor: number,
): void {
  expect(got.length, `${what} length`).toBe(ref64.length);
  const err = maxAbsDiff(got, ref64);
  const bound = factor * maxAbsDiff(refLow, ref64) + floorFactor * FLOOR[dtype];
  if (!(err <= bound)) expect.fail(`${what}: max error ${err} exceeds ${bound}`);
}

export interface Case {
  name: string;
  b: number;
  sq: number;
  sk: number;
  hq: number;
  hk: number;
  d: number;
  dtype?: DType;
  options?: AttentionOptions;
  /** Builds q, k, v (default: [b, s, h, d] random tensors). */
  inputs?: (c: Case, dtype: DType) => { q: HostTensor; k: HostTensor; v: HostTensor };
}

export function inputsOf(c: Case, dtype: DType, seed = 1): { q: HostTensor; k: HostTensor; v: HostTensor } {
  if (c.inputs) return c.inputs(c, dtype);
  const bhsd = c.options?.layout === 'bhsd';
  const qs = bhsd ? [c.b, c.hq, c.sq, c.d] : [c.b, c.sq, c.hq, c.d];
  const ks = bhsd ? [c.b, c.hk, c.sk, c.d] : [c.b, c.sk, c.hk, c.d];
  return {
    q: randomTensor(qs, dtype, seed * 3 + 1),
    k: randomTensor(ks, dtype, seed * 3 + 2),
    v: randomTensor(ks, dtype, seed * 3 + 3),
  };
}

export function checkForward(
  c: Case,
  dtype: DType,
  q: HostTensor,
  k: HostTensor,
  v: HostTensor,
  got: { out: HostTensor; lse?: Float32Array },
): void {
  const opts = c.options ?? {};
  const r64 = referenceForward64(q, k, v, opts);
  const low = referenceForwardLow(q, k, v, opts);
  expect(got.out.dtype).toBe(dtype);
  expect([...got.out.shape]).toEqual([...q.shape]);
  expectClose(`${c.name} out`, toFloat32(got.out), r64.out, low.out, dtype, 2, 1);
  if (got.lse) expectClose(`${c.name} lse`, got.lse, r64.lse, low.lse, dtype, 2, 1);
}

export function checkBackward(
  c: Case,
  dtype: DType,
  dout: HostTensor,
  q: HostTensor,
  k: HostTensor,
  v: HostTensor,
  got: { dq: HostTensor; dk: HostTensor; dv: HostTensor },
): void {
  const opts = c.options ?? {};
  const r64 = referenceBackward64(dout, q, k, v, opts);
  const low = referenceBackwardLow(dout, q, k, v, opts);
  expectClose(`${c.name} dq`, toFloat32(got.dq), r64.dq, low.dq, dtype, 3, 10);
  expectClose(`${c.name} dk`, toFloat32(got.dk), r64.dk, low.dk, dtype, 3, 10);
  expectClose(`${c.name} dv`, toFloat32(got.dv), r64.dv, low.dv, dtype, 3, 10);
}

export function bitsOf(t: HostTensor | Float32Array): Uint8Array {
  const data = t instanceof Float32Array ? t : t.data;
  return new Uint8Array(data.buffer, data.byteOffset, data.byteLength).slice();
}
