import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { finalizeRow, mergeLse, newRowState, updateRow } from '../src/index.js';

/** softmax(s)·V and logsumexp(s) computed plainly in float64. */
function plain(scores: number[], values: number[][]): { out: number[]; lse: number } {
  const m = Math.max(...scores);
  if (m === Number.NEGATIVE_INFINITY) return { out: values[0]?.map(() => 0) ?? [], lse: m };
  const e = scores.map((s) => Math.exp(s - m));
  const sum = e.reduce((a, b) => a + b, 0);
  const d = values[0].length;
  const out = new Array(d).fill(0);
  for (let j = 0; j < scores.length; j++) for (let c = 0; c < d; c++) out[c] += (e[j] / sum) * values[j][c];
  return { out, lse: m + Math.log(sum) };
}

const scoreArb = fc.oneof(
  fc.double({ min: -50, max: 50, noNaN: true }),
  fc.constant(Number.NEGATIVE_INFINITY),
  fc.double({ min: -1e4, max: 1e4, noNaN: true }),
);

describe('online softmax', () => {
  it('equals the plain softmax for any split into blocks (scores rising, falling, masked)', () => {
    fc.assert(
      fc.property(
        fc.array(scoreArb, { minLength: 1, maxLength: 40 }),
        fc.integer({ min: 1, max: 9 }),
        fc.integer({ min: 1, max: 5 }),
        (scores, block, d) => {
          const values = scores.map((_, j) => Array.from({ length: d }, (_, c) => Math.sin(j * 7 + c)));
          const flat = values.flat();
          const st = newRowState(d);
          for (let j0 = 0; j0 < scores.length; j0 += block) {
            const n = Math.min(block, scores.length - j0);
            updateRow(st, scores.slice(j0, j0 + n), n, flat, (t) => (j0 + t) * d);
          }
          const out = new Float64Array(d);
          const lse = finalizeRow(st, out, 0);
          const ref = plain(scores, values);
          if (ref.lse === Number.NEGATIVE_INFINITY) {
            expect(lse).toBe(Number.NEGATIVE_INFINITY);
            expect(Array.from(out)).toEqual(new Array(d).fill(0));
          } else {
            expect(Math.abs(lse - ref.lse)).toBeLessThan(1e-9 * Math.max(1, Math.abs(ref.lse)));
            for (let c = 0; c < d; c++) expect(Math.abs(out[c] - ref.out[c])).toBeLessThan(1e-9);
          }
        },
      ),
      { seed: 42, numRuns: 300 },
    );
  });

  it('rescales when the max grows (a later block with a larger max)', () => {
    const st = newRowState(1);
    updateRow(st, [0], 1, [1], () => 0);
    updateRow(st, [10], 1, [2], () => 0);
    const out = new Float64Array(1);
    finalizeRow(st, out, 0);
    const w = Math.exp(-10);
    expect(out[0]).toBeCloseTo((w * 1 + 2) / (w + 1), 12);
  });

  it('dropout weights scale the output but not the normaliser', () => {
    const st = newRowState(1);
    updateRow(st, [0, 0], 2, [4, 8], (t) => t, [2, 0]);
    const out = new Float64Array(1);
    const lse = finalizeRow(st, out, 0);
    expect(lse).toBeCloseTo(Math.log(2), 12);
    expect(out[0]).toBeCloseTo((2 * 4) / 2, 12);
  });
});

describe('mergeLse', () => {
  it('merging two halves equals the whole, in either order and with an empty side', () => {
    fc.assert(
      fc.property(fc.array(scoreArb, { minLength: 2, maxLength: 30 }), fc.nat(), (scores, cutSeed) => {
        const cut = cutSeed % (scores.length + 1);
        const values = scores.map((_, j) => [Math.cos(j), j / 10]);
        const a = plain(scores.slice(0, cut), values.slice(0, cut).length ? values.slice(0, cut) : [[0, 0]]);
        const b = plain(scores.slice(cut), values.slice(cut).length ? values.slice(cut) : [[0, 0]]);
        const lseA = cut === 0 ? Number.NEGATIVE_INFINITY : a.lse;
        const lseB = cut === scores.length ? Number.NEGATIVE_INFINITY : b.lse;
        const outA = Float64Array.from(cut === 0 ? [0, 0] : a.out);
        const lse = mergeLse(outA, 0, lseA, cut === scores.length ? [0, 0] : b.out, 0, lseB, 2);
        const whole = plain(scores, values);
        if (whole.lse === Number.NEGATIVE_INFINITY) {
          expect(lse).toBe(Number.NEGATIVE_INFINITY);
          expect(Array.from(outA)).toEqual([0, 0]);
        } else {
          expect(Math.abs(lse - whole.lse)).toBeLessThan(1e-9 * Math.max(1, Math.abs(whole.lse)));
          expect(Math.abs(outA[0] - whole.out[0])).toBeLessThan(1e-9);
          expect(Math.abs(outA[1] - whole.out[1])).toBeLessThan(1e-9);
        }
      }),
      { seed: 7, numRuns: 300 },
    );
  });
});
