/**
 * Direct checks against core's float64 references for paths the conformance suite may reach only
 * partly: split-KV decode, backward with GQA and every score modifier, the chunked (binding-limited)
 * path, 16-bit storage, device tensors, device loss.
 */
import {
  type AttentionOptions,
  fromFloat32,
  type HostTensor,
  referenceBackward64,
  referenceForward64,
  toFloat32,
} from '@flashattn/core';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { createWebGPUBackend, type WebGPUBackend } from '../src/index.js';

function rand(n: number, seed: number, scale = 1): Float32Array {
  let s = seed >>> 0;
  const a = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    s = (Math.imul(s ^ (s >>> 15), 2246822519) + 3266489917 + i) >>> 0;
    a[i] = (s / 2 ** 32 - 0.5) * 2 * scale;
  }
  return a;
}

function tensor(shape: number[], seed: number, dtype: HostTensor['dtype'] = 'float32'): HostTensor {
  return fromFloat32(
    rand(
      shape.reduce((a, b) => a * b, 1),
      seed,
    ),
    dtype,
    shape,
  );
}

function maxErr(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let e = 0;
  for (let i = 0; i < a.length; i++) {
    const x = a[i];
    const y = b[i];
    if (Number.isNaN(x) !== Number.isNaN(y)) return Number.POSITIVE_INFINITY;
    if (x === y) continue;
    e = Math.max(e, Math.abs(x - y));
  }
  return e;
}

let be: WebGPUBackend;
beforeAll(async () => {
  be = await createWebGPUBackend({ headDimBuckets: [64, 256] });
});
afterAll(async () => {
  await be?.dispose();
});

interface Case {
  name: string;
  b: number;
  sq: number;
  sk: number;
  hq: number;
  hk: number;
  d: number;
  opts?: AttentionOptions;
  backward?: boolean;
  dtype?: HostTensor['dtype'];
}

const cases: Case[] = [
  { name: 'decode gqa sq=1', b: 2, sq: 1, sk: 700, hq: 8, hk: 2, d: 64 },
  {
    name: 'decode causal sq=5 softcap alibi',
    b: 1,
    sq: 5,
    sk: 300,
    hq: 4,
    hk: 4,
    d: 40,
    opts: { causal: true, softcap: 2, alibiSlopes: Float32Array.from([0.5, 0.25, 0.125, 0.0625]) },
  },
  {
    name: 'decode dropout + bias',
    b: 2,
    sq: 3,
    sk: 200,
    hq: 4,
    hk: 2,
    d: 20,
    opts: { dropout: { p: 0.25, seed: 5 } },
  },
  {
    name: 'fwd window + bias + dropout',
    b: 1,
    sq: 80,
    sk: 90,
    hq: 2,
    hk: 1,
    d: 24,
    opts: { window: [20, 5], dropout: { p: 0.2, seed: 7 } },
  },
  { name: 'bwd plain', b: 1, sq: 70, sk: 70, hq: 2, hk: 2, d: 32, backward: true },
  {
    name: 'bwd causal gqa',
    b: 2,
    sq: 65,
    sk: 100,
    hq: 4,
    hk: 2,
    d: 72,
    opts: { causal: true },
    backward: true,
  },
  {
    name: 'bwd softcap alibi window dropout',
    b: 1,
    sq: 50,
    sk: 66,
    hq: 2,
    hk: 1,
    d: 16,
    opts: {
      softcap: 1.5,
      window: [10, 10],
      alibiSlopes: Float32Array.from([0.3, 0.1]),
      dropout: { p: 0.3, seed: 99, offset: 3 },
    },
    backward: true,
  },
  { name: 'fwd f16', b: 1, sq: 40, sk: 40, hq: 2, hk: 2, d: 31, dtype: 'float16' },
  { name: 'bwd bf16', b: 1, sq: 40, sk: 40, hq: 2, hk: 1, d: 8, dtype: 'bfloat16', backward: true },
];

describe('webgpu against float64 references', () => {
  for (const c of cases) {
    test(c.name, async () => {
      const dtype = c.dtype ?? 'float32';
      const q = tensor([c.b, c.sq, c.hq, c.d], 1, dtype);
      const k = tensor([c.b, c.sk, c.hk, c.d], 2, dtype);
      const v = tensor([c.b, c.sk, c.hk, c.d], 3, dtype);
      const opts: AttentionOptions = { ...c.opts };
      if (c.name.includes('bias')) opts.bias = tensor([1, c.hq, c.sq, c.sk], 4);
      const tol = dtype === 'float32' ? 2e-5 : dtype === 'float16' ? 3e-3 : 3e-2;
      const r = await be.forward(q, k, v, { ...opts, returnLse: true });
      const ref = referenceForward64(q, k, v, opts);
      expect(maxErr(toFloat32(r.out), ref.out)).toBeLessThan(tol);
      expect(maxErr(r.lse as Float32Array, ref.lse)).toBeLessThan(tol);
      if (c.backward) {
        const dout = tensor([c.b, c.sq, c.hq, c.d], 5, dtype);
        const g = await be.backward(dout, q, k, v, r.out, r.lse as Float32Array, opts);
        const rg = referenceBackward64(dout, q, k, v, opts);
        const bt = tol * 5;
        expect(maxErr(toFloat32(g.dq), rg.dq)).toBeLessThan(bt);
        expect(maxErr(toFloat32(g.dk), rg.dk)).toBeLessThan(bt);
        expect(maxErr(toFloat32(g.dv), rg.dv)).toBeLessThan(bt);
        const g2 = await be.backward(dout, q, k, v, r.out, r.lse as Float32Array, opts);
        expect(Array.from(g2.dk.data)).toEqual(Array.from(g.dk.data));
      }
    });
  }

  test('device tensors stay on the GPU; chunked path equals whole path', async () => {
    const q = tensor([3, 30, 4, 20], 11);
    const k = tensor([3, 50, 2, 20], 12);
    const v = tensor([3, 50, 2, 20], 13);
    const [dq, dk, dv] = await Promise.all([be.upload(q), be.upload(k), be.upload(v)]);
    const r = await be.forward(dq, dk, dv, { causal: true, returnLse: true });
    const host = await be.download(r.out);
    const ref = referenceForward64(q, k, v, { causal: true });
    expect(maxErr(host.data, ref.out)).toBeLessThan(2e-5);
    const small = await createWebGPUBackend({ maxBindingBytes: 16384, headDimBuckets: [64, 256] });
    try {
      const r2 = await small.forward(q, k, v, { causal: true, returnLse: true });
      expect(maxErr(r2.out.data, ref.out)).toBeLessThan(2e-5);
      const dout = tensor([3, 30, 4, 20], 14);
      const g = await small.backward(dout, q, k, v, r2.out, r2.lse as Float32Array, { causal: true });
      const rg = referenceBackward64(dout, q, k, v, { causal: true });
      expect(maxErr(g.dk.data, rg.dk)).toBeLessThan(1e-4);
      const q1 = tensor([3, 2, 4, 20], 15);
      const r3 = await small.forward(q1, k, v, {});
      expect(maxErr(r3.out.data, referenceForward64(q1, k, v, {}).out)).toBeLessThan(2e-5);
    } finally {
      await small.dispose();
    }
    // bhsd: one batch is split over key heads when a binding holds only two heads.
    const tiny = await createWebGPUBackend({ maxBindingBytes: 6000, headDimBuckets: [64, 256] });
    try {
      const qh = tensor([2, 4, 30, 20], 16);
      const kh = tensor([2, 2, 50, 20], 17);
      const vh = tensor([2, 2, 50, 20], 18);
      const o = { layout: 'bhsd', causal: true } as const;
      const r4 = await tiny.forward(qh, kh, vh, { ...o, returnLse: true });
      expect(maxErr(r4.out.data, referenceForward64(qh, kh, vh, o).out)).toBeLessThan(2e-5);
      const dout = tensor([2, 4, 30, 20], 19);
      const g = await tiny.backward(dout, qh, kh, vh, r4.out, r4.lse as Float32Array, o);
      const rg = referenceBackward64(dout, qh, kh, vh, o);
      expect(maxErr(g.dq.data, rg.dq)).toBeLessThan(1e-4);
      expect(maxErr(g.dv.data, rg.dv)).toBeLessThan(1e-4);
    } finally {
      await tiny.dispose();
    }
    for (const t of [dq, dk, dv, r.out]) be.free(t);
  });

  test('a lost device gives DEVICE_LOST for its tensors and a new device for the next call', async () => {
    const q = tensor([1, 10, 1, 8], 21);
    const dq = await be.upload(q);
    await be.loseDeviceForTest();
    await expect(be.forward(dq, dq, dq)).rejects.toMatchObject({ code: 'DEVICE_LOST' });
    const r = await be.forward(q, q, q);
    expect(maxErr(r.out.data, referenceForward64(q, q, q).out)).toBeLessThan(2e-5);
  });
});
