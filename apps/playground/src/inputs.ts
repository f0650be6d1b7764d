/** Seeded random inputs, so that a run can be repeated and the reference sees the same tensors. */
import {
  type AttentionOptions,
  alibiSlopesFor,
  type DType,
  type HostTensor,
  tensorFromArray,
} from '@flashattn/core';

/** mulberry32: a small, fast 32-bit PRNG; good enough for test data. */
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

/** n standard normal values (Box–Muller) times `std`. */
export function normals(n: number, seed: number, std = 1): Float32Array {
  const r = rng(seed);
  const out = new Float32Array(n);
  for (let i = 0; i < n; i += 2) {
    const u = Math.max(r(), 1e-12);
    const v = r();
    const rad = Math.sqrt(-2 * Math.log(u)) * std;
    out[i] = rad * Math.cos(2 * Math.PI * v);
    if (i + 1 < n) out[i + 1] = rad * Math.sin(2 * Math.PI * v);
  }
  return out;
}

export interface Shape {
  batch: number;
  seqQ: number;
  seqK: number;
  headsQ: number;
  headsK: number;
  headDim: number;
}

export interface Inputs {
  q: HostTensor;
  k: HostTensor;
  v: HostTensor;
}

/** q [b, sq, hq, d], k and v [b, sk, hk, d] ('bshd'), standard normal, rounded to the dtype. */
export function makeInputs(s: Shape, dtype: DType, seed: number): Inputs {
  const qShape = [s.batch, s.seqQ, s.headsQ, s.headDim];
  const kShape = [s.batch, s.seqK, s.headsK, s.headDim];
  const nq = s.batch * s.seqQ * s.headsQ * s.headDim;
  const nk = s.batch * s.seqK * s.headsK * s.headDim;
  return {
    q: tensorFromArray(normals(nq, seed * 3 + 1), qShape, dtype),
    k: tensorFromArray(normals(nk, seed * 3 + 2), kShape, dtype),
    v: tensorFromArray(normals(nk, seed * 3 + 3), kShape, dtype),
  };
}

/** The options the Run and Compare forms can set (everything structured-cloneable, for the worker). */
export interface FormOptions {
  causal: boolean;
  windowLeft: number;
  windowRight: number;
  softcap: number;
  alibi: boolean;
  dropoutP: number;
  dropoutSeed: number;
  returnLse: boolean;
}

export function toAttentionOptions(o: FormOptions, headsQ: number): AttentionOptions {
  const opts: AttentionOptions = {};
  if (o.causal) opts.causal = true;
  if (o.windowLeft >= 0 || o.windowRight >= 0) opts.window = [o.windowLeft, o.windowRight];
  if (o.softcap > 0) opts.softcap = o.softcap;
  if (o.alibi) opts.alibiSlopes = alibiSlopesFor(headsQ);
  if (o.dropoutP > 0) opts.dropout = { p: o.dropoutP, seed: o.dropoutSeed };
  if (o.returnLse) opts.returnLse = true;
  return opts;
}
