import { describe, expect, it } from 'vitest';
import {
  type AttentionOptions,
  alibiSlopesFor,
  FlashAttentionError,
  fromFloat32,
  type HostTensor,
  referenceBackward64,
  referenceBackwardLow,
  referenceBackwardTwoPass,
  referenceForward64,
  referenceForwardLow,
  referenceForwardOnline,
  referenceForwardTwoPass,
  toFloat32,
} from '../src/index.js';
import { maxAbsDiff, randomTensor, rng } from './helpers.js';

interface Case {
  name: string;
  q: number[];
  kv: number[];
  options?: AttentionOptions;
}

const B = 2;
const cases: Case[] = [
  { name: 'plain', q: [B, 9, 2, 5], kv: [B, 13, 2, 5] },
  { name: 'causal sq<sk', q: [B, 5, 2, 4], kv: [B, 11, 2, 4], options: { causal: true } },
  { name: 'causal sq>sk', q: [B, 11, 2, 4], kv: [B, 5, 2, 4], options: { causal: true } },
  { name: 'window', q: [B, 12, 1, 3], kv: [B, 12, 1, 3], options: { window: [3, 1] } },
  { name: 'gqa softcap', q: [B, 6, 4, 4], kv: [B, 6, 2, 4], options: { softcap: 0.5 } },
  {
    name: 'alibi per batch',
    q: [B, 6, 2, 4],
    kv: [B, 8, 2, 4],
    options: { alibiSlopes: Float32Array.of(0.5, 0.25, 0.1, 1) },
  },
  { name: 'bias', q: [B, 6, 2, 4], kv: [B, 8, 1, 4], options: { bias: randomTensor([1, 2, 6, 8], 77) } },
  {
    name: 'key padding',
    q: [B, 6, 2, 4],
    kv: [B, 8, 2, 4],
    options: { seqlensK: Int32Array.of(3, 0), causal: true },
  },
  {
    name: 'dropout',
    q: [B, 6, 2, 4],
    kv: [B, 8, 2, 4],
    options: { dropout: { p: 0.3, seed: 2 ** 40 + 7, offset: 3 } },
  },
  { name: 'bhsd', q: [B, 2, 6, 4], kv: [B, 1, 9, 4], options: { layout: 'bhsd', causal: true } },
  {
    name: 'varlen',
    q: [10, 2, 4],
    kv: [12, 1, 4],
    options: { cuSeqlensQ: Int32Array.of(0, 3, 3, 10), cuSeqlensK: Int32Array.of(0, 5, 9, 12), causal: true },
  },
  {
    name: 'paged',
    q: [B, 3, 2, 4],
    kv: [4, 3, 2, 4],
    options: { blockTable: Int32Array.of(3, 1, 0, 2), pageSize: 3, seqlensK: Int32Array.of(5, 6) },
  },
];

function inputs(c: Case, dtype: HostTensor['dtype'] = 'float32', seed = 1) {
  return {
    q: randomTensor(c.q, seed, dtype, 2),
    k: randomTensor(c.kv, seed + 1, dtype, 2),
    v: randomTensor(c.kv, seed + 2, dtype),
    dout: randomTensor(c.q, seed + 3, dtype),
  };
}

describe('the float64 references agree with each other', () => {
  for (const c of cases) {
    it(c.name, () => {
      const { q, k, v, dout } = inputs(c);
      const std = referenceForward64(q, k, v, { ...c.options, returnLse: true });
      const two = referenceForwardTwoPass(q, k, v, c.options);
      const onl = referenceForwardOnline(q, k, v, c.options);
      expect(maxAbsDiff(std.out, two.out)).toBeLessThan(1e-12);
      expect(maxAbsDiff(std.out, onl.out)).toBeLessThan(1e-12);
      expect(maxAbsDiff(std.lse, two.lse)).toBeLessThan(1e-12);
      expect(maxAbsDiff(std.lse, onl.lse)).toBeLessThan(1e-12);
      for (const x of std.out) expect(Number.isNaN(x)).toBe(false);
      const g = referenceBackward64(dout, q, k, v, c.options);
      const g2 = referenceBackwardTwoPass(dout, q, k, v, c.options);
      expect(maxAbsDiff(g.dq, g2.dq)).toBeLessThan(1e-11);
      expect(maxAbsDiff(g.dk, g2.dk)).toBeLessThan(1e-11);
      expect(maxAbsDiff(g.dv, g2.dv)).toBeLessThan(1e-11);
      // refLow is close but not equal: it is the yardstick of the tolerance rule.
      const low = referenceForwardLow(q, k, v, c.options);
      const err = maxAbsDiff(low.out, std.out);
      expect(err).toBeLessThan(1e-5);
      const glow = referenceBackwardLow(dout, q, k, v, c.options);
      expect(maxAbsDiff(glow.dq, g.dq)).toBeLessThan(1e-4);
    });
  }
});

describe('known answers', () => {
  it('one query, two keys by hand', () => {
    // s = [1, 0] after scale 1: P = [e/(e+1), 1/(e+1)]
    const q = fromFloat32(Float32Array.of(1, 0), 'float32', [1, 1, 1, 2]);
    const k = fromFloat32(Float32Array.of(1, 0, 0, 1), 'float32', [1, 2, 1, 2]);
    const v = fromFloat32(Float32Array.of(10, 0, 0, 20), 'float32', [1, 2, 1, 2]);
    const r = referenceForward64(q, k, v, { scale: 1, returnLse: true });
    const p0 = Math.E / (Math.E + 1);
    expect(r.out[0]).toBeCloseTo(10 * p0, 12);
    expect(r.out[1]).toBeCloseTo(20 * (1 - p0), 12);
    expect(r.lse[0]).toBeCloseTo(Math.log(Math.E + 1), 12);
  });

  it('causal bottom-right alignment: with sq < sk the last query sees every key', () => {
    const q = randomTensor([1, 2, 1, 3], 1);
    const k = randomTensor([1, 5, 1, 3], 2);
    const v = randomTensor([1, 5, 1, 3], 3);
    const causal = referenceForward64(q, k, v, { causal: true });
    const full = referenceForward64(q, k, v);
    expect(maxAbsDiff(causal.out.subarray(3, 6), full.out.subarray(3, 6))).toBeLessThan(1e-15);
    expect(maxAbsDiff(causal.out.subarray(0, 3), full.out.subarray(0, 3))).toBeGreaterThan(1e-6);
  });

  it('fully masked rows give out 0 and lse -Infinity, never NaN', () => {
    // sq > sk with causal: the first sq - sk queries see no key.
    const q = randomTensor([1, 6, 1, 4], 1);
    const k = randomTensor([1, 2, 1, 4], 2);
    for (const f of [
      referenceForward64,
      referenceForwardTwoPass,
      referenceForwardOnline,
      referenceForwardLow,
    ]) {
      const r = f(q, k, k, { causal: true });
      for (let i = 0; i < 4; i++) {
        expect(r.lse[i]).toBe(Number.NEGATIVE_INFINITY);
        for (let c = 0; c < 4; c++) expect(r.out[i * 4 + c]).toBe(0);
      }
      expect(Number.isFinite(r.lse[5])).toBe(true);
    }
  });

  it('large-magnitude scores do not overflow', () => {
    const q = randomTensor([1, 4, 1, 8], 1, 'float32', 40);
    const k = randomTensor([1, 4, 1, 8], 2, 'float32', 40);
    const r = referenceForward64(q, k, k, { scale: 1 });
    for (const x of r.out) expect(Number.isFinite(x)).toBe(true);
    for (const x of r.lse) expect(Math.abs(x)).toBeGreaterThan(100);
  });

  it('NaN in a key spreads to the rows that see it only', () => {
    const q = randomTensor([1, 3, 1, 2], 1);
    const kf = toFloat32(randomTensor([1, 3, 1, 2], 2));
    kf[2 * 2] = Number.NaN; // key 2
    const k = fromFloat32(kf, 'float32', [1, 3, 1, 2]);
    const r = referenceForward64(q, k, k, { causal: true });
    expect(Number.isNaN(r.out[0])).toBe(false);
    expect(Number.isNaN(r.out[2])).toBe(false);
    expect(Number.isNaN(r.out[4])).toBe(true);
  });

  it('ALiBi slopes follow the paper for powers of two and others', () => {
    expect(Array.from(alibiSlopesFor(8))).toEqual(
      Array.from({ length: 8 }, (_, h) => Math.fround(2 ** -(h + 1))),
    );
    expect(alibiSlopesFor(12).length).toBe(12);
  });

  it('the materialising reference refuses huge heads with OUT_OF_MEMORY', () => {
    const q = randomTensor([1, 4096, 1, 1], 1);
    const k = randomTensor([1, 4096, 1, 1], 2);
    expect(() => referenceForward64(q, k, k)).toThrow(FlashAttentionError);
    expect(() => referenceForward64(q, k, k)).toThrow(/OUT_OF_MEMORY/);
  });
});

describe('backward against finite differences of the forward', () => {
  for (const c of cases.filter((c) => !c.options?.dropout)) {
    it(c.name, () => {
      const { q, k, v, dout } = inputs(c, 'float32', 11);
      const g = referenceBackward64(dout, q, k, v, c.options);
      const dO = toFloat32(dout);
      // L = sum(dout * out): check a few random coordinates of each input.
      const loss = (qq: HostTensor, kk: HostTensor, vv: HostTensor) => {
        const o = referenceForward64(qq, kk, vv, c.options).out;
        let s = 0;
        for (let t = 0; t < o.length; t++) s += o[t] * dO[t];
        return s;
      };
      const r = rng(5);
      for (const which of ['q', 'k', 'v'] as const) {
        const base = { q, k, v };
        const data = toFloat32(base[which]);
        const grad = which === 'q' ? g.dq : which === 'k' ? g.dk : g.dv;
        for (let trial = 0; trial < 4; trial++) {
          const t = Math.floor(r() * data.length);
          const eps = 1e-3;
          const plus = Float32Array.from(data);
          plus[t] += eps;
          const minus = Float32Array.from(data);
          minus[t] -= eps;
          const mk = (a: Float32Array) => ({
            ...base,
            [which]: { dtype: 'float32', shape: base[which].shape, data: a },
          });
          const p = mk(plus);
          const m = mk(minus);
          // float32 storage of the perturbed inputs: use the actual perturbation.
          const h = plus[t] - minus[t];
          const fd = (loss(p.q, p.k, p.v) - loss(m.q, m.k, m.v)) / h;
          expect(Math.abs(fd - grad[t])).toBeLessThan(2e-4 * Math.max(1, Math.abs(fd)));
        }
      }
    });
  }
});

describe('16-bit references', () => {
  it('refLow rounds outputs to the dtype', () => {
    const c = cases[0];
    for (const dtype of ['float16', 'bfloat16'] as const) {
      const { q, k, v } = inputs(c, dtype);
      const low = referenceForwardLow(q, k, v);
      const rounded = toFloat32(fromFloat32(Float32Array.from(low.out), dtype, [low.out.length]));
      expect(maxAbsDiff(rounded, low.out)).toBe(0);
      const ref = referenceForward64(q, k, v);
      expect(maxAbsDiff(low.out, ref.out)).toBeLessThan(dtype === 'float16' ? 5e-3 : 4e-2);
    }
  });
});
