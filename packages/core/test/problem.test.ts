import { describe, expect, it } from 'vitest';
import {
  type AttentionOptions,
  type ErrorCode,
  FlashAttentionError,
  type HostTensor,
  kvOffset,
  lseIndex,
  qOffset,
  resolveBackwardProblem,
  resolveProblem,
  seqLenK,
  seqLenQ,
} from '../src/index.js';
import { randomTensor } from './helpers.js';

function expectCode(fn: () => unknown, code: ErrorCode, fragment?: string): void {
  try {
    fn();
  } catch (e) {
    expect(e).toBeInstanceOf(FlashAttentionError);
    expect((e as FlashAttentionError).code).toBe(code);
    if (fragment) expect((e as Error).message).toContain(fragment);
    return;
  }
  throw new Error(`expected ${code}`);
}

const q = randomTensor([2, 5, 4, 8], 1);
const k = randomTensor([2, 7, 2, 8], 2);
const v = randomTensor([2, 7, 2, 8], 3);

describe('resolveProblem', () => {
  it('reads sizes, strides and the group size (bshd)', () => {
    const p = resolveProblem(q, k, v);
    expect([p.batch, p.seqQ, p.seqK, p.headsQ, p.headsK, p.headDim, p.groupSize]).toEqual([
      2, 5, 7, 4, 2, 8, 2,
    ]);
    expect(p.scale).toBeCloseTo(1 / Math.sqrt(8));
    expect(qOffset(p, 1, 3, 2)).toBe(((1 * 5 + 3) * 4 + 2) * 8);
    expect(kvOffset(p, 1, 6, 1)).toBe(((1 * 7 + 6) * 2 + 1) * 8);
    expect(p.lseShape).toEqual([2, 4, 5]);
    expect(lseIndex(p, 1, 2, 3)).toBe((1 * 4 + 2) * 5 + 3);
    expect(p.features).toEqual(['gqa']);
  });

  it('reads bhsd', () => {
    const p = resolveProblem(
      randomTensor([2, 4, 5, 8], 1),
      randomTensor([2, 2, 7, 8], 2),
      randomTensor([2, 2, 7, 8], 3),
      {
        layout: 'bhsd',
      },
    );
    expect([p.seqQ, p.headsQ, p.seqK, p.headsK]).toEqual([5, 4, 7, 2]);
    expect(qOffset(p, 1, 3, 2)).toBe(((1 * 4 + 2) * 5 + 3) * 8);
    expect(kvOffset(p, 1, 6, 1)).toBe(((1 * 2 + 1) * 7 + 6) * 8);
  });

  it('reads varlen and paged layouts', () => {
    const vq = randomTensor([9, 2, 4], 1);
    const vk = randomTensor([12, 1, 4], 2);
    const p = resolveProblem(vq, vk, vk, {
      cuSeqlensQ: Int32Array.of(0, 4, 4, 9),
      cuSeqlensK: Int32Array.of(0, 5, 7, 12),
    });
    expect([p.batch, p.seqQ, p.seqK, p.totalQ]).toEqual([3, 5, 5, 9]);
    expect(seqLenQ(p, 1)).toBe(0);
    expect(seqLenK(p, 1)).toBe(2);
    expect(qOffset(p, 2, 1, 1)).toBe((5 * 2 + 1) * 4);
    expect(kvOffset(p, 2, 3, 0)).toBe(10 * 4);
    expect(lseIndex(p, 2, 1, 1)).toBe(1 * 9 + 5);
    expect(p.lseShape).toEqual([2, 9]);

    const pages = randomTensor([5, 4, 1, 4], 3);
    const pq = randomTensor([2, 3, 2, 4], 4);
    const pp = resolveProblem(pq, pages, pages, {
      blockTable: Int32Array.of(4, 0, 2, 3),
      pageSize: 4,
      seqlensK: Int32Array.of(7, 5),
    });
    expect([pp.seqK, pp.maxPages]).toEqual([8, 2]);
    expect(seqLenK(pp, 0)).toBe(7);
    expect(kvOffset(pp, 0, 5, 0)).toBe((0 * 4 + 1) * 4);
    expect(kvOffset(pp, 1, 2, 0)).toBe((2 * 4 + 2) * 4);
  });

  it('computes broadcast bias strides', () => {
    const bias = randomTensor([1, 4, 1, 7], 9);
    const p = resolveProblem(q, k, v, { bias });
    expect(p.bias?.strides).toEqual([0, 7, 0, 1]);
    expect(resolveProblem(q, k, v, { bias: randomTensor([7], 9) }).bias?.strides).toEqual([0, 0, 0, 1]);
  });

  const bad: [string, () => unknown, ErrorCode, string?][] = [
    [
      'q rank',
      () => resolveProblem(randomTensor([5, 4, 8], 1), k, v),
      'INVALID_SHAPE',
      'q must be [b, sq, hq, d]',
    ],
    [
      'data length',
      () => resolveProblem({ ...q, data: new Float32Array(3) }, k, v),
      'INVALID_SHAPE',
      'needs 320',
    ],
    ['k vs v', () => resolveProblem(q, k, randomTensor([2, 6, 2, 8], 3)), 'SHAPE_MISMATCH'],
    [
      'head dims',
      () => resolveProblem(q, randomTensor([2, 7, 2, 4], 2), randomTensor([2, 7, 2, 4], 3)),
      'SHAPE_MISMATCH',
    ],
    [
      'batch',
      () => resolveProblem(q, randomTensor([1, 7, 2, 8], 2), randomTensor([1, 7, 2, 8], 3)),
      'SHAPE_MISMATCH',
    ],
    [
      'dtype name',
      () => resolveProblem({ ...q, dtype: 'float64' } as unknown as HostTensor, k, v),
      'INVALID_DTYPE',
    ],
    ['data type', () => resolveProblem({ ...q, dtype: 'float16' }, k, v), 'INVALID_DTYPE', 'Uint16Array'],
    ['mixed dtypes', () => resolveProblem(randomTensor([2, 5, 4, 8], 1, 'float16'), k, v), 'DTYPE_MISMATCH'],
    ['heads', () => resolveProblem(randomTensor([2, 5, 3, 8], 1), k, v), 'HEADS_NOT_DIVISIBLE'],
    [
      'd = 257',
      () =>
        resolveProblem(
          randomTensor([1, 1, 1, 257], 1),
          randomTensor([1, 1, 1, 257], 1),
          randomTensor([1, 1, 1, 257], 1),
        ),
      'HEAD_DIM_UNSUPPORTED',
    ],
    [
      'd = 0',
      () =>
        resolveProblem(
          randomTensor([1, 1, 1, 0], 1),
          randomTensor([1, 1, 1, 0], 1),
          randomTensor([1, 1, 1, 0], 1),
        ),
      'HEAD_DIM_UNSUPPORTED',
    ],
    [
      'unknown option',
      () => resolveProblem(q, k, v, { casual: true } as AttentionOptions),
      'INVALID_OPTION',
      'casual',
    ],
    ['window', () => resolveProblem(q, k, v, { window: [-2, 0] }), 'INVALID_OPTION'],
    ['p = 1', () => resolveProblem(q, k, v, { dropout: { p: 1, seed: 0 } }), 'INVALID_OPTION'],
    ['scale NaN', () => resolveProblem(q, k, v, { scale: Number.NaN }), 'INVALID_OPTION'],
    ['softcap < 0', () => resolveProblem(q, k, v, { softcap: -1 }), 'INVALID_OPTION'],
    ['alibi length', () => resolveProblem(q, k, v, { alibiSlopes: new Float32Array(3) }), 'INVALID_OPTION'],
    ['seqlensK range', () => resolveProblem(q, k, v, { seqlensK: Int32Array.of(8, 1) }), 'INVALID_OPTION'],
    ['bias broadcast', () => resolveProblem(q, k, v, { bias: randomTensor([3, 7], 1) }), 'SHAPE_MISMATCH'],
    [
      'cuSeqlens decreasing',
      () =>
        resolveProblem(randomTensor([4, 1, 2], 1), randomTensor([4, 1, 2], 1), randomTensor([4, 1, 2], 1), {
          cuSeqlensQ: Int32Array.of(0, 3, 2, 4),
          cuSeqlensK: Int32Array.of(0, 1, 2, 4),
        }),
      'INVALID_OPTION',
    ],
    [
      'page out of range',
      () =>
        resolveProblem(
          randomTensor([1, 1, 1, 2], 1),
          randomTensor([2, 2, 1, 2], 1),
          randomTensor([2, 2, 1, 2], 1),
          {
            blockTable: Int32Array.of(0, 2),
            pageSize: 2,
          },
        ),
      'INVALID_OPTION',
      'blockTable[0][1]',
    ],
    [
      'capabilities',
      () =>
        resolveProblem(
          q,
          k,
          v,
          { causal: true },
          { capabilities: { dtypes: ['float32'], maxHeadDim: 256, features: [] } },
        ),
      'UNSUPPORTED_FEATURE',
      "'causal'",
    ],
  ];
  for (const [name, fn, code, fragment] of bad)
    it(`rejects ${name} with ${code}`, () => expectCode(fn, code, fragment));

  it('validates backward extras', () => {
    const out = randomTensor([2, 5, 4, 8], 5);
    const lse = new Float32Array(2 * 4 * 5);
    expect(resolveBackwardProblem(out, q, k, v, out, lse).features).toContain('backward');
    expectCode(() => resolveBackwardProblem(out, q, k, v, out, new Float32Array(3)), 'SHAPE_MISMATCH');
    expectCode(
      () => resolveBackwardProblem(randomTensor([2, 5, 4, 7], 5), q, k, v, out, lse),
      'SHAPE_MISMATCH',
    );
  });
});
