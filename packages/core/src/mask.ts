/**
 * The mask predicate and score modifiers of SPEC §3, once, for every backend and reference.
 *
 * Rows and keys are bottom-right aligned: off = sk_b - sq_b, so that the last query sees the last key
 * (flash-attention >= 2.1, and what a KV cache needs).
 */
import type { Problem } from './problem.js';

/** Bottom-right alignment offset of sequence b: sk_b - sq_b. */
export function alignOffset(sqB: number, skB: number): number {
  return skB - sqB;
}

/**
 * Is key j visible to query i? (j < sk_b is the caller's loop bound.)
 * Kept free of the Problem object so kernels can inline the same four comparisons.
 */
export function isAllowed(
  i: number,
  j: number,
  off: number,
  causal: boolean,
  windowLeft: number,
  windowRight: number,
): boolean {
  const diag = i + off;
  if (causal && j > diag) return false;
  if (windowLeft >= 0 && j < diag - windowLeft) return false;
  if (windowRight >= 0 && j > diag + windowRight) return false;
  return true;
}

/**
 * The half-open range [lo, hi) of keys query i may see. Every mask of SPEC §3 is an interval, which
 * is what lets tiled kernels skip whole blocks: a K block outside [lo, hi) of every row of a Q block
 * is never loaded.
 */
export function allowedKeyRange(p: Problem, i: number, sqB: number, skB: number): [number, number] {
  const diag = i + skB - sqB;
  let lo = 0;
  let hi = skB;
  if (p.causal) hi = Math.min(hi, diag + 1);
  if (p.windowRight >= 0) hi = Math.min(hi, diag + p.windowRight + 1);
  if (p.windowLeft >= 0) lo = Math.max(lo, diag - p.windowLeft);
  if (hi < lo) hi = lo;
  return [lo, hi];
}

/** Number of allowed (i, j) pairs over the whole problem: the FLOP count of SPEC §9 is 4·d times this. */
export function countAllowedPairs(
  p: Problem,
  seqLenQ: (b: number) => number,
  seqLenK: (b: number) => number,
): number {
  let total = 0;
  for (let b = 0; b < p.batch; b++) {
    const sq = seqLenQ(b);
    const sk = seqLenK(b);
    for (let i = 0; i < sq; i++) {
      const [lo, hi] = allowedKeyRange(p, i, sq, sk);
      total += hi - lo;
    }
  }
  return total * p.headsQ;
}

/**
 * Softcap then ALiBi: s = softcap·tanh(s/softcap); s -= slope·|i + off - j|. The bias, which needs the
 * tensor, is added by the caller.
 */
export function modifyScore(
  s: number,
  softcap: number,
  slope: number,
  i: number,
  j: number,
  off: number,
): number {
  if (softcap > 0) s = softcap * Math.tanh(s / softcap);
  if (slope !== 0) s -= slope * Math.abs(i + off - j);
  return s;
}

/** ALiBi slopes of the ALiBi paper for n heads (geometric, 2^(-8/n) ratio, with the non-power-of-two rule). */
export function alibiSlopesFor(n: number): Float32Array {
  const pow2 = 2 ** Math.floor(Math.log2(n));
  const base = (m: number) => Array.from({ length: m }, (_, h) => 2 ** ((-8 * (h + 1)) / m));
  const slopes = base(pow2);
  if (pow2 < n) {
    const extra = base(2 * pow2).filter((_, h) => h % 2 === 0);
    slopes.push(...extra.slice(0, n - pow2));
  }
  return Float32Array.from(slopes);
}
