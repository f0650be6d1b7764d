/**
 * The tolerance rule of SPEC §8.
 *
 * With ref64 the float64 reference and refLow the plain reference in float32 with 16-bit rounding
 * where a real kernel rounds, a result x passes iff
 *   max|x - ref64| <= 2·max|refLow - ref64| + floor        (outputs, lse)
 *   max|x - ref64| <= 3·max|refLow - ref64| + 10·floor     (gradients)
 * with floor = 1e-6 (float32), 1e-4 (float16), 1e-3 (bfloat16). NaN must sit exactly where ref64 has
 * NaN, and ±Infinity (the lse of a fully masked row) must match exactly.
 */
import { type DType, type HostTensor, toFloat32 } from '@flashattn/core';

export type CheckKind = 'output' | 'lse' | 'grad';

export const TOLERANCE_FLOOR: Readonly<Record<DType, number>> = {
  float32: 1e-6,
  float16: 1e-4,
  bfloat16: 1e-3,
};

export interface CloseResult {
  ok: boolean;
  label: string;
  /** max |x - ref64| over the finite entries (Infinity where x is infinite and ref64 is not). */
  maxError: number;
  bound: number;
  /** max |refLow - ref64|: the yardstick. */
  refError: number;
  /** Flat index of the worst entry (or of the first NaN/Inf mismatch), -1 if none. */
  worstIndex: number;
  /** Entries over the bound plus NaN/Inf mismatches. */
  badCount: number;
  message: string;
}

/** "[b=0, s=3, h=1, c=5]" from a flat index, or "[17]" when no shape is known. */
export function formatIndex(flat: number, shape?: readonly number[], axes?: readonly string[]): string {
  if (!shape || shape.length === 0) return `[${flat}]`;
  const idx: number[] = new Array(shape.length);
  let rest = flat;
  for (let a = shape.length - 1; a >= 0; a--) {
    const n = shape[a] || 1;
    idx[a] = rest % n;
    rest = Math.floor(rest / n);
  }
  const names = axes && axes.length === shape.length ? axes : null;
  return `[${idx.map((x, a) => (names ? `${names[a]}=${x}` : `${x}`)).join(', ')}]`;
}

function fmt(x: number): string {
  if (!Number.isFinite(x)) return String(x);
  if (x === 0) return '0';
  const a = Math.abs(x);
  return a >= 1e-3 && a < 1e5 ? x.toPrecision(9).replace(/\.?0+$/, '') : x.toExponential(4);
}

function valuesOf(actual: ArrayLike<number> | HostTensor): ArrayLike<number> {
  if (typeof actual === 'object' && actual !== null && 'dtype' in actual && 'data' in actual) {
    return toFloat32(actual as HostTensor);
  }
  return actual as ArrayLike<number>;
}

/**
 * Compares `actual` with the references under the rule above. `shape`/`axes` only decode the worst
 * index for the message. Never throws on a mismatch: read `ok` and `message`.
 */
export function checkClose(
  actual: ArrayLike<number> | HostTensor,
  ref64: ArrayLike<number>,
  refLow: ArrayLike<number>,
  dtype: DType,
  kind: CheckKind,
  label: string,
  shape?: readonly number[],
  axes?: readonly string[],
): CloseResult {
  const x = valuesOf(actual);
  const floor = TOLERANCE_FLOOR[dtype];
  const where = (t: number) => formatIndex(t, shape, axes);
  if (x.length !== ref64.length || refLow.length !== ref64.length) {
    const message = `${label}: has ${x.length} elements, the reference ${ref64.length}${
      refLow.length !== ref64.length ? ` (refLow ${refLow.length})` : ''
    }`;
    return {
      ok: false,
      label,
      maxError: Number.POSITIVE_INFINITY,
      bound: 0,
      refError: 0,
      worstIndex: -1,
      badCount: 1,
      message,
    };
  }

  let refError = 0;
  for (let t = 0; t < ref64.length; t++) {
    const r = ref64[t];
    const l = refLow[t];
    // Entries where either reference is not finite (masked lse, NaN rows, a 16-bit overflow) say
    // nothing about rounding error.
    if (Number.isFinite(r) && Number.isFinite(l)) {
      const e = Math.abs(l - r);
      if (e > refError) refError = e;
    }
  }
  const bound = kind === 'grad' ? 3 * refError + 10 * floor : 2 * refError + floor;
  const rule = kind === 'grad' ? `3·${fmt(refError)} + 10·${floor}` : `2·${fmt(refError)} + ${floor}`;

  let maxError = 0;
  let worst = -1;
  let badCount = 0;
  let firstSpecial = -1;
  let specialWhy = '';
  for (let t = 0; t < ref64.length; t++) {
    const r = ref64[t];
    const a = x[t];
    if (Number.isNaN(r) || Number.isNaN(a) || !Number.isFinite(r)) {
      // NaN ⇔ NaN, and ±Infinity exactly.
      const same = Number.isNaN(r) ? Number.isNaN(a) : a === r;
      if (!same) {
        badCount++;
        if (firstSpecial < 0) {
          firstSpecial = t;
          specialWhy = Number.isNaN(r)
            ? 'expected NaN (the reference has NaN here)'
            : Number.isNaN(a)
              ? 'NaN where the reference is finite'
              : `expected exactly ${r}`;
        }
      }
      continue;
    }
    const e = Math.abs(a - r);
    if (e > bound) badCount++;
    if (e > maxError) {
      maxError = e;
      worst = t;
    }
  }

  if (firstSpecial >= 0) {
    const t = firstSpecial;
    const message =
      `${label}: ${specialWhy} at ${where(t)}: expected ${fmt(ref64[t])}, got ${fmt(x[t])} ` +
      `(${badCount} of ${ref64.length} entries wrong; finite max error ${fmt(maxError)}, bound ${fmt(bound)})`;
    return {
      ok: false,
      label,
      maxError: Number.POSITIVE_INFINITY,
      bound,
      refError,
      worstIndex: t,
      badCount,
      message,
    };
  }
  const ok = maxError <= bound;
  const message = ok
    ? `${label}: max error ${fmt(maxError)} <= bound ${fmt(bound)}`
    : `${label}: max |x - ref64| = ${fmt(maxError)} at ${where(worst)} (expected ${fmt(ref64[worst])}, got ${fmt(
        x[worst],
      )}, refLow ${fmt(refLow[worst])}) exceeds the bound ${fmt(bound)} = ${rule}; ${badCount} of ${ref64.length} entries over it`;
  return { ok, label, maxError, bound, refError, worstIndex: worst, badCount, message };
}
