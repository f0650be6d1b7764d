/**
 * The split-KV decode kernel's variants against core's float64 reference: subgroup shuffles and the
 * workgroup-memory path, vec4 and scalar (unaligned) loads, several key splits, GQA row blocks.
 */
import { type AttentionOptions, referenceForward64 } from '@flashattn/core';
import { afterAll, describe, expect, test } from 'vitest';
import { createWebGPUBackend, type WebGPUBackend } from '../src/index.js';
import { maxErr, seededTensor } from './helpers.js';

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
        const q = seededTensor([c.b, c.sq, c.hq, c.d], 1);
        const k = seededTensor([c.b, c.sk, c.hk, c.d], 2);
        const v = seededTensor([c.b, c.sk, c.hk, c.d], 3);
        const r = await be.forward(q, k, v, { ...c.opts, returnLse: true });
        const ref = referenceForward64(q, k, v, c.opts);
        expect(maxErr(r.out.data as Float32Array, ref.out), c.name).toBeLessThan(2e-5);
        expect(maxErr(r.lse as Float32Array, ref.lse), c.name).toBeLessThan(2e-5);
      }
    });
  }
});
