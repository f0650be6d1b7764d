import { createReferenceBackend } from '@flashattn/core';
import { describe, expect, it } from 'vitest';
import {
  checkClose,
  conformanceCases,
  defineConformance,
  formatIndex,
  makeInputs,
  TOLERANCE_FLOOR,
} from '../src/index.js';

describe('checkClose', () => {
  const r64 = Float64Array.from([1, 2, 3, 4]);
  const low = Float64Array.from([1, 2 + 1e-5, 3, 4]);

  it('passes within 2·refErr + floor and fails just past it', () => {
    const bound = 2 * 1e-5 + TOLERANCE_FLOOR.float32;
    expect(checkClose([1, 2, 3, 4 + bound * 0.99], r64, low, 'float32', 'output', 'x').ok).toBe(true);
    const bad = checkClose(
      [1, 2, 3, 4 + bound * 1.01],
      r64,
      low,
      'float32',
      'output',
      'x',
      [2, 2],
      ['i', 'c'],
    );
    expect(bad.ok).toBe(false);
    expect(bad.message).toContain('[i=1, c=1]');
    expect(bad.message).toContain('expected 4');
    expect(bad.bound).toBeCloseTo(bound, 12);
  });

  it('uses 3·refErr + 10·floor for gradients', () => {
    const g = checkClose([1, 2, 3, 4], r64, low, 'bfloat16', 'grad', 'g');
    expect(g.bound).toBeCloseTo(3e-5 + 1e-2, 12);
  });

  it('requires NaN exactly where ref64 has NaN, and infinities exactly', () => {
    const ref = Float64Array.from([Number.NaN, Number.NEGATIVE_INFINITY, 0.5]);
    expect(checkClose([Number.NaN, Number.NEGATIVE_INFINITY, 0.5], ref, ref, 'float32', 'lse', 'l').ok).toBe(
      true,
    );
    expect(checkClose([0, Number.NEGATIVE_INFINITY, 0.5], ref, ref, 'float32', 'lse', 'l').ok).toBe(false);
    expect(checkClose([Number.NaN, -1e30, 0.5], ref, ref, 'float32', 'lse', 'l').ok).toBe(false);
    const extraNaN = checkClose(
      [Number.NaN, Number.NEGATIVE_INFINITY, Number.NaN],
      ref,
      ref,
      'float32',
      'lse',
      'l',
    );
    expect(extraNaN.ok).toBe(false);
    expect(extraNaN.message).toContain('NaN where the reference is finite');
  });

  it('decodes flat indices', () => {
    expect(formatIndex(23, [2, 3, 4], ['b', 's', 'c'])).toBe('[b=1, s=2, c=3]');
    expect(formatIndex(5)).toBe('[5]');
  });
});

describe('the case list', () => {
  const full = conformanceCases();
  const quick = conformanceCases({ quick: true });

  it('has unique names; quick is a subset of full', () => {
    expect(new Set(full.map((c) => c.name)).size).toBe(full.length);
    const names = new Set(full.map((c) => c.name));
    for (const c of quick) expect(names.has(c.name)).toBe(true);
    expect(quick.length).toBeLessThan(full.length);
  });

  it('covers every error code input can trigger and the head dims of SPEC §8', () => {
    const codes = new Set(full.filter((c) => c.tags.includes('error')).map((c) => c.name.split(' ')[1]));
    for (const code of [
      'INVALID_SHAPE',
      'SHAPE_MISMATCH',
      'INVALID_DTYPE',
      'DTYPE_MISMATCH',
      'HEADS_NOT_DIVISIBLE',
      'HEAD_DIM_UNSUPPORTED',
      'INVALID_OPTION',
      'UNSUPPORTED_FEATURE',
      'DISPOSED',
    ]) {
      expect(codes.has(code), code).toBe(true);
    }
    for (const d of [1, 8, 31, 64, 80, 128, 256]) expect(full.some((c) => c.spec?.d === d)).toBe(true);
  });

  it('makes the same inputs every time, rounded to the dtype', () => {
    const c = full.find((x) => x.spec?.dtype === 'bfloat16' && x.kind === 'forward');
    if (!c) throw new Error('no bfloat16 case');
    const a = makeInputs(c);
    const b = makeInputs(c);
    expect(a.q.data).toEqual(b.q.data);
    expect(a.q.data).toBeInstanceOf(Uint16Array);
  });
});

// A backend that cannot run here is skipped with its reason in the title.
defineConformance('example-gpu', async () => createReferenceBackend(), {
  skipReason: 'example of a skipped backend (no GPU)',
});
