/**
 * The split-KV decode kernel's variants against core's float64 reference: subgroup shuffles and the
 * workgroup-memory path, vec4 and scalar (unaligned) loads, several key splits, GQA row blocks.
 */
import { type AttentionOptions, fromFloat32, type HostTensor, referenceForward64 } from '@flashattn/core';
import { afterAll, describe, expect, test } from 'vitest';
import { createWebGPUBackend, type WebGPUBackend } from '../src/index.js';

function tensor(shape: number[], seed: number): HostTensor {
  const n = shape.reduce((a, b) => a * b, 1);
  const a = new Float32Array(n);
  let s = seed >>> 0;
  for (let i = 0; i < n; i++) {
    s = (Math.imul(s ^ (s >>> 15), 2246822519) + 3266489917 + i) >>> 0;
    a[i] = (s / 2 ** 32 - 0.5) * 2;
  }
  return fromFloat32(a, 'float32', shape);
}

function maxErr(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let e = 0;
  for (let i = 0; i < a.length; i++) {
    if (Number.isNaN(a[i]) !== Number.isNaN(b[i])) return Number.POSITIVE_INFINITY;
    if (a[i] !== b[i]) e = Math.max(e, Math.abs(a[i] - b[i]));
  }
  return e;
}

const backends: WebGPUBackend[] = [];
afterAll(async () => {
  for (const be of backends) await be.dispose();
});

const shapes: {
  name: string;
  b: number;
  sq: number;
  sk: number;
  hq: number;
  hk: number;
  d: number;
  opts?: AttentionOptions;
}[] = [
  { name: 'gqa 4, d=64', b: 1, sq: 1, sk: 1000, hq: 8, hk: 2, d: 64 },
  {
    name: 'gqa 3 sq=2 causal, d=30 (scalar loads)',
    b: 2,
    sq: 2,
    sk: 333,
    hq: 6,
    hk: 2,
    d: 30,
    opts: { causal: true },
  },
  { name: 'mha sq=3 softcap, d=52', b: 1, sq: 3, sk: 517, hq: 2, hk: 2, d: 52, opts: { softcap: 3 } },
];

describe('decode variants', () => {
  for (const subgroups of [true, false]) {
    test(`subgroups ${subgroups}`, async () => {
      const be = await createWebGPUBackend({ subgroups, headDimBuckets: [64], decode: { workgroups: 64 } });
      backends.push(be);
      for (const c of shapes) {
        const q = tensor([c.b, c.sq, c.hq, c.d], 1);
        const k = tensor([c.b, c.sk, c.hk, c.d], 2);
        const v = tensor([c.b, c.sk, c.hk, c.d], 3);
        const r = await be.forward(q, k, v, { ...c.opts, returnLse: true });
        const ref = referenceForward64(q, k, v, c.opts);
        expect(maxErr(r.out.data as Float32Array, ref.out), c.name).toBeLessThan(2e-5);
        expect(maxErr(r.lse as Float32Array, ref.lse), c.name).toBeLessThan(2e-5);
      }
    });
  }
});
