import {
  type DType,
  forwardFlops,
  fromFloat32,
  type HostTensor,
  qOffset,
  referenceBackward64,
  referenceBackwardLow,
  referenceForward64,
  referenceForwardLow,
} from '@flashattn/core';
import { describe, expect, it } from 'vitest';
import { RowReference, sampleRows } from '../src/bench/check.js';
import { randomNormal } from '../src/bench/data.js';
import { cpuShapes, gpuShapes, shapeFlops } from '../src/bench/shapes.js';

function tensor(shape: number[], seed: number, dtype: DType): HostTensor {
  return fromFloat32(
    randomNormal(
      shape.reduce((a, b) => a * b, 1),
      seed,
    ),
    dtype,
    shape,
  );
}

/** Problems whose alignment matters: sq < sk and sq > sk under a causal mask, GQA, 16-bit dtypes. */
const CASES: {
  name: string;
  b: number;
  sq: number;
  sk: number;
  hq: number;
  hk: number;
  d: number;
  causal: boolean;
  dtype: DType;
}[] = [
  { name: 'square', b: 2, sq: 13, sk: 13, hq: 2, hk: 2, d: 8, causal: false, dtype: 'float32' },
  { name: 'causal sq<sk gqa', b: 2, sq: 5, sk: 17, hq: 4, hk: 2, d: 7, causal: true, dtype: 'float32' },
  {
    name: 'causal sq>sk (masked rows)',
    b: 1,
    sq: 19,
    sk: 6,
    hq: 2,
    hk: 1,
    d: 5,
    causal: true,
    dtype: 'float16',
  },
  { name: 'decode bf16', b: 2, sq: 1, sk: 33, hq: 4, hk: 1, d: 16, causal: true, dtype: 'bfloat16' },
];

describe('row-sampled references', () => {
  for (const c of CASES) {
    it(`match core's references on every row: ${c.name}`, () => {
      const q = tensor([c.b, c.sq, c.hq, c.d], 1, c.dtype);
      const k = tensor([c.b, c.sk, c.hk, c.d], 2, c.dtype);
      const v = tensor([c.b, c.sk, c.hk, c.d], 3, c.dtype);
      const dout = tensor([c.b, c.sq, c.hq, c.d], 4, c.dtype);
      const options = { causal: c.causal };
      const rows = sampleRows({ batch: c.b, sq: c.sq, hq: c.hq }, 10_000);
      expect(rows).toHaveLength(c.b * c.sq * c.hq);
      const ref = new RowReference(q, k, v, options, rows);
      const f64 = referenceForward64(q, k, v, options);
      const low = referenceForwardLow(q, k, v, options);
      const g64 = referenceBackward64(dout, q, k, v, options);
      const gLow = referenceBackwardLow(dout, q, k, v, options);
      const p = ref.problem;
      rows.forEach((r, n) => {
        const o = qOffset(p, r.b, r.i, r.h);
        for (let x = 0; x < c.d; x++) {
          expect(ref.forward64().out[n * c.d + x]).toBeCloseTo(f64.out[o + x], 12);
          // The low-precision rows follow core's operation order exactly: bit-identical.
          expect(ref.forwardLow().out[n * c.d + x]).toBe(low.out[o + x]);
          expect(ref.dq64(dout)[n * c.d + x]).toBeCloseTo(g64.dq[o + x], 12);
          expect(ref.dqLow(dout)[n * c.d + x]).toBe(gLow.dq[o + x]);
        }
      });
      // And checking core's own float64 output passes, with error ~0.
      const out = fromFloat32(Float32Array.from(f64.out), c.dtype, q.shape);
      expect(ref.checkForward(out).pass).toBe(true);
    });
  }

  it('fails a wrong output and a NaN', () => {
    const shape = { batch: 1, sq: 16, hq: 2 };
    const q = tensor([1, 16, 2, 8], 1, 'float32');
    const k = tensor([1, 16, 2, 8], 2, 'float32');
    const v = tensor([1, 16, 2, 8], 3, 'float32');
    const ref = new RowReference(q, k, v, { causal: true }, sampleRows(shape, 4));
    const good = referenceForward64(q, k, v, { causal: true });
    const out = fromFloat32(Float32Array.from(good.out), 'float32', q.shape);
    expect(ref.checkForward(out).pass).toBe(true);
    // A non-causal output is wrong on every row but the last.
    const wrong = referenceForward64(q, k, v, { causal: false });
    expect(ref.checkForward(fromFloat32(Float32Array.from(wrong.out), 'float32', q.shape)).pass).toBe(false);
    const nan = fromFloat32(Float32Array.from(good.out), 'float32', q.shape);
    (nan.data as Float32Array).fill(Number.NaN);
    const r = ref.checkForward(nan);
    expect(r.pass).toBe(false);
    expect(r.maxError).toBeNaN();
  });

  it('samples distinct rows in range, the last row first', () => {
    const rows = sampleRows({ batch: 3, sq: 50, hq: 4 }, 8);
    expect(rows).toHaveLength(8);
    expect(rows[0]).toEqual({ b: 2, h: 3, i: 49 });
    expect(new Set(rows.map((r) => `${r.b}/${r.h}/${r.i}`)).size).toBe(8);
    for (const r of rows) {
      expect(r.b).toBeLessThan(3);
      expect(r.h).toBeLessThan(4);
      expect(r.i).toBeLessThan(50);
    }
  });
});

describe('shapes and FLOPs (SPEC §9)', () => {
  it('CPU standard: b=1, hq=8, d=64, s 512..4096, causal and not', () => {
    const s = cpuShapes('standard');
    expect(s.map((x) => x.sq)).toEqual([512, 512, 1024, 1024, 2048, 2048, 4096, 4096]);
    expect(s.every((x) => x.batch === 1 && x.hq === 8 && x.hk === 8 && x.d === 64)).toBe(true);
  });

  it('GPU standard: 16k tokens, hidden 2048, d 64 and 128, and decode', () => {
    const s = gpuShapes('standard');
    const prefill = s.filter((x) => x.kind === 'prefill');
    expect(prefill).toHaveLength(2 * 6 * 2);
    for (const x of prefill) {
      expect(x.batch * x.sq).toBe(16384);
      expect(x.hq * x.d).toBe(2048);
    }
    const decode = s.filter((x) => x.kind === 'decode');
    expect(decode.map((x) => x.sk)).toEqual([4096, 32768, 131072]);
    expect(decode.every((x) => x.sq === 1 && x.hq === 32 && x.hk === 8 && x.d === 128)).toBe(true);
  });

  it('FLOPs are 4·d·allowed pairs (core forwardFlops), backward 2.5×', () => {
    for (const x of [...cpuShapes('standard'), ...gpuShapes('standard')]) {
      const f = forwardFlops({
        batch: x.batch,
        headsQ: x.hq,
        seqQ: x.sq,
        seqK: x.sk,
        headDim: x.d,
        causal: x.causal,
      });
      expect(shapeFlops(x, false)).toBe(f);
      expect(shapeFlops(x, true)).toBe(2.5 * f);
    }
    // Causal with sq = sk is about half of the dense count.
    const [dense, causal] = cpuShapes('standard', [512]);
    expect(shapeFlops(causal, false) / shapeFlops(dense, false)).toBeCloseTo(0.5, 2);
  });
});
