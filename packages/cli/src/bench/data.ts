/** Seeded benchmark inputs: N(0, 1) entries, the same for every backend and anchor of a shape. */
import { type DType, fromFloat32, type HostTensor } from '@flashattn/core';
import type { BenchShape } from './shapes.js';

/** mulberry32 uniform in [0, 1). */
function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** n standard-normal float32 values (Box-Muller), a pure function of the seed. */
export function randomNormal(n: number, seed: number): Float32Array {
  const u = mulberry32(seed);
  const out = new Float32Array(n);
  for (let i = 0; i < n; i += 2) {
    let a = u();
    while (a === 0) a = u();
    const r = Math.sqrt(-2 * Math.log(a));
    const t = 2 * Math.PI * u();
    out[i] = r * Math.cos(t);
    if (i + 1 < n) out[i + 1] = r * Math.sin(t);
  }
  return out;
}

// The GPU shapes all have the same number of elements: keep the last few draws instead of redrawing.
const pool = new Map<string, Float32Array>();
function cachedNormal(n: number, seed: number): Float32Array {
  const key = `${n}/${seed}`;
  let a = pool.get(key);
  if (!a) {
    a = randomNormal(n, seed);
    pool.set(key, a);
    while (pool.size > 4) pool.delete(pool.keys().next().value as string);
  }
  return a;
}

export interface BenchInputs {
  q: HostTensor;
  k: HostTensor;
  v: HostTensor;
}

/** q [b, sq, hq, d], k and v [b, sk, hk, d] (bshd), rounded to `dtype`. */
export function makeInputs(shape: BenchShape, dtype: DType): BenchInputs {
  const { batch, sq, sk, hq, hk, d } = shape;
  const qShape = [batch, sq, hq, d];
  const kvShape = [batch, sk, hk, d];
  const nq = batch * sq * hq * d;
  const nkv = batch * sk * hk * d;
  return {
    q: fromFloat32(cachedNormal(nq, 1), dtype, qShape),
    k: fromFloat32(cachedNormal(nkv, 2), dtype, kvShape),
    v: fromFloat32(cachedNormal(nkv, 3), dtype, kvShape),
  };
}

/** The upstream gradient of a backward run, shaped like the output. */
export function makeDout(shape: BenchShape, dtype: DType): HostTensor {
  const n = shape.batch * shape.sq * shape.hq * shape.d;
  return fromFloat32(cachedNormal(n, 4), dtype, [shape.batch, shape.sq, shape.hq, shape.d]);
}

/** Forget the cached draws (between shape families, to give the memory back). */
export function clearInputCache(): void {
  pool.clear();
}
