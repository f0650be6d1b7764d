/**
 * Checking a benchmark result on a few sampled query rows, against references computed for those rows
 * only (a full float64 reference of a 16k-token problem would take far longer than the kernel).
 *
 * The rows use core's own indexing and mask (resolveProblem, allowedKeyRange with its bottom-right
 * alignment, modifyScore), so they are exactly rows of SPEC §3. The tolerance is SPEC §8's, per row set:
 * |x - ref64| <= 2·max|refLow - ref64| + floor for outputs (3·… + 10·floor for gradients), where refLow
 * is the plain float32 reference with P and the output rounded to the dtype, computed row by row in
 * the same order as core's referenceForwardLow / referenceBackwardLow.
 */
import {
  type AttentionOptions,
  alibiSlope,
  allowedKeyRange,
  bf16BitsToF32,
  type DType,
  f16BitsToF32,
  f32ToBf16Bits,
  f32ToF16Bits,
  type HostTensor,
  kvHead,
  kvOffset,
  modifyScore,
  type Problem,
  qOffset,
  resolveProblem,
  seqLenK,
  seqLenQ,
} from '@flashattn/core';

/** SPEC §8 floors. */
export const TOLERANCE_FLOOR: Readonly<Record<DType, number>> = {
  float32: 1e-6,
  float16: 1e-4,
  bfloat16: 1e-3,
};

export interface SampledRow {
  b: number;
  h: number;
  i: number;
}

function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/**
 * `count` distinct (b, h, i) query rows: the very last row (it sees every key), the first row of the
 * first sequence (under a causal mask it sees one key) and seeded random ones in between.
 */
export function sampleRows(
  shape: { batch: number; sq: number; hq: number },
  count = 8,
  seed = 0x5eed,
): SampledRow[] {
  const total = shape.batch * shape.hq * shape.sq;
  const n = Math.min(count, total);
  const picked = new Set<number>();
  const rows: SampledRow[] = [];
  const add = (flat: number) => {
    if (picked.has(flat)) return;
    picked.add(flat);
    const i = flat % shape.sq;
    const bh = Math.floor(flat / shape.sq);
    rows.push({ b: Math.floor(bh / shape.hq), h: bh % shape.hq, i });
  };
  add(total - 1);
  if (n > 1) add(0);
  const u = mulberry32(seed);
  while (rows.length < n) add(Math.floor(u() * total));
  return rows;
}

/** Reads element `idx` of a host tensor as a number (16-bit formats decoded). */
function reader(t: HostTensor): (idx: number) => number {
  const data = t.data;
  if (t.dtype === 'float32') return (idx) => data[idx];
  if (t.dtype === 'float16') return (idx) => f16BitsToF32(data[idx]);
  return (idx) => bf16BitsToF32(data[idx]);
}

/** x rounded to float32 and then to the dtype (what storing it in a tensor of that dtype does). */
function dtypeRounder(dtype: DType): (x: number) => number {
  if (dtype === 'float32') return Math.fround;
  if (dtype === 'float16') return (x) => f16BitsToF32(f32ToF16Bits(x));
  return (x) => bf16BitsToF32(f32ToBf16Bits(x));
}

export interface RowValues {
  /** [rows, d]. */
  out: Float64Array;
  /** [rows]. */
  lse: Float64Array;
}

export interface CheckResult {
  /** max |x - ref64| over the sampled rows (NaN when x has a NaN where the reference has none). */
  maxError: number;
  /** The SPEC §8 bound for these rows. */
  bound: number;
  pass: boolean;
  rows: number;
}

/**
 * Float64 and low-precision references of the sampled rows of one problem (the same inputs for every
 * backend of a shape, so each is computed once).
 */
export class RowReference {
  readonly problem: Problem;
  readonly rows: SampledRow[];
  private readonly q: (idx: number) => number;
  private readonly k: (idx: number) => number;
  private readonly v: (idx: number) => number;
  private readonly toDType: (x: number) => number;
  private f64?: RowValues;
  private low?: RowValues;
  private dq64Rows?: Float64Array;
  private dqLowRows?: Float64Array;

  constructor(q: HostTensor, k: HostTensor, v: HostTensor, options: AttentionOptions, rows: SampledRow[]) {
    this.problem = resolveProblem(q, k, v, options);
    this.rows = rows;
    this.q = reader(q);
    this.k = reader(k);
    this.v = reader(v);
    this.toDType = dtypeRounder(this.problem.dtype);
  }

  private geometry(r: SampledRow) {
    const p = this.problem;
    const sq = seqLenQ(p, r.b);
    const sk = seqLenK(p, r.b);
    const [lo, hi] = allowedKeyRange(p, r.i, sq, sk);
    return { off: sk - sq, lo, hi, qo: qOffset(p, r.b, r.i, r.h), hk: kvHead(p, r.h) };
  }

  /** The scores of row r over its allowed keys [lo, hi), in float64 or with float32 rounding. */
  private scores(r: SampledRow, low: boolean): { s: Float64Array; lo: number; hi: number } {
    const p = this.problem;
    const d = p.headDim;
    const { off, lo, hi, qo, hk } = this.geometry(r);
    const op = low ? Math.fround : (x: number) => x;
    const qRow = new Float64Array(d);
    for (let c = 0; c < d; c++) qRow[c] = this.q(qo + c);
    const slope = alibiSlope(p, r.b, r.h);
    const s = new Float64Array(Math.max(0, hi - lo));
    for (let j = lo; j < hi; j++) {
      const ko = kvOffset(p, r.b, j, hk);
      let dot = 0;
      if (low) for (let c = 0; c < d; c++) dot = Math.fround(dot + Math.fround(qRow[c] * this.k(ko + c)));
      else for (let c = 0; c < d; c++) dot += qRow[c] * this.k(ko + c);
      s[j - lo] = op(modifyScore(op(p.scale * dot), p.softcap, slope, r.i, j, off));
    }
    return { s, lo, hi };
  }

  /** d s / d(scale·q·k) at (r, j): the softcap's tanh', 1 without softcap. */
  private scoreSlope(r: SampledRow, j: number): number {
    const p = this.problem;
    if (p.softcap <= 0) return 1;
    const { qo, hk } = this.geometry(r);
    const ko = kvOffset(p, r.b, j, hk);
    let dot = 0;
    for (let c = 0; c < p.headDim; c++) dot += this.q(qo + c) * this.k(ko + c);
    const t = Math.tanh((p.scale * dot) / p.softcap);
    return 1 - t * t;
  }

  /** Softmax weights of a row: float64 exp(s - lse), or refLow's fround(exp(s - m)) / sum. */
  private probabilities(r: SampledRow, low: boolean): { P: Float64Array; lo: number; lse: number } {
    const { s, lo } = this.scores(r, low);
    let m = Number.NEGATIVE_INFINITY;
    for (const x of s) if (x > m || Number.isNaN(x)) m = x;
    const P = new Float64Array(s.length);
    if (m === Number.NEGATIVE_INFINITY) return { P, lo, lse: Number.NEGATIVE_INFINITY };
    if (!low) {
      let l = 0;
      for (const x of s) l += Math.exp(x - m);
      const lse = m + Math.log(l);
      for (let t = 0; t < s.length; t++) P[t] = Math.exp(s[t] - lse);
      return { P, lo, lse };
    }
    const f = Math.fround;
    let sum = 0;
    for (const x of s) sum = f(sum + f(Math.exp(f(x - m))));
    for (let t = 0; t < s.length; t++) P[t] = f(f(Math.exp(f(s[t] - m))) / sum);
    return { P, lo, lse: f(m + f(Math.log(sum))) };
  }

  private forwardRows(low: boolean): RowValues {
    const p = this.problem;
    const d = p.headDim;
    const out = new Float64Array(this.rows.length * d);
    const lse = new Float64Array(this.rows.length);
    const f = low ? Math.fround : (x: number) => x;
    this.rows.forEach((r, n) => {
      const { P, lo, lse: l } = this.probabilities(r, low);
      lse[n] = l;
      const hk = kvHead(p, r.h);
      const o = out.subarray(n * d, (n + 1) * d);
      for (let t = 0; t < P.length; t++) {
        const w = low ? this.toDType(P[t]) : P[t];
        if (w === 0) continue;
        const vo = kvOffset(p, r.b, lo + t, hk);
        for (let c = 0; c < d; c++) o[c] = f(o[c] + f(w * this.v(vo + c)));
      }
      if (low) for (let c = 0; c < d; c++) o[c] = this.toDType(o[c]);
    });
    return { out, lse };
  }

  /** ref64 of the sampled rows. */
  forward64(): RowValues {
    this.f64 ??= this.forwardRows(false);
    return this.f64;
  }

  /** refLow of the sampled rows. */
  forwardLow(): RowValues {
    this.low ??= this.forwardRows(true);
    return this.low;
  }

  /** dq of the sampled rows for upstream gradient `dout` (a row's dq needs only that row's P). */
  private dqRows(dout: HostTensor, low: boolean): Float64Array {
    const p = this.problem;
    const d = p.headDim;
    const dO = reader(dout);
    const f = low ? Math.fround : (x: number) => x;
    const dq = new Float64Array(this.rows.length * d);
    this.rows.forEach((r, n) => {
      const { P, lo, lse } = this.probabilities(r, low);
      if (lse === Number.NEGATIVE_INFINITY) return;
      const { qo, hk } = this.geometry(r);
      const g = dq.subarray(n * d, (n + 1) * d);
      // D = dO_i · O_i, with O_i recomputed as the backward reference does.
      const o = new Float64Array(d);
      for (let t = 0; t < P.length; t++) {
        const w = low ? this.toDType(P[t]) : P[t];
        if (w === 0) continue;
        const vo = kvOffset(p, r.b, lo + t, hk);
        for (let c = 0; c < d; c++) o[c] = f(o[c] + f(w * this.v(vo + c)));
      }
      let D = 0;
      for (let c = 0; c < d; c++) D = f(D + f(dO(qo + c) * (low ? this.toDType(o[c]) : o[c])));
      for (let t = 0; t < P.length; t++) {
        const pij = P[t];
        if (pij === 0) continue;
        const j = lo + t;
        const ko = kvOffset(p, r.b, j, hk);
        let dp = 0;
        for (let c = 0; c < d; c++) dp = f(dp + f(dO(qo + c) * this.v(ko + c)));
        let coef: number;
        if (low) {
          const ds = this.toDType(f(f(pij * f(dp - D)) * this.scoreSlope(r, j)));
          if (ds === 0) continue;
          coef = f(ds * p.scale);
        } else {
          coef = pij * (dp - D) * this.scoreSlope(r, j) * p.scale;
        }
        for (let c = 0; c < d; c++) g[c] = f(g[c] + f(coef * this.k(ko + c)));
      }
      if (low) for (let c = 0; c < d; c++) g[c] = this.toDType(g[c]);
    });
    return dq;
  }

  dq64(dout: HostTensor): Float64Array {
    this.dq64Rows ??= this.dqRows(dout, false);
    return this.dq64Rows;
  }

  dqLow(dout: HostTensor): Float64Array {
    this.dqLowRows ??= this.dqRows(dout, true);
    return this.dqLowRows;
  }

  /** Compares `actual` (laid out like q) on the sampled rows with `ref64`, under SPEC §8's bound. */
  compare(
    actual: HostTensor,
    ref64: Float64Array,
    refLow: Float64Array,
    kind: 'output' | 'grad',
  ): CheckResult {
    const p = this.problem;
    const d = p.headDim;
    const x = reader(actual);
    let maxError = 0;
    let lowError = 0;
    this.rows.forEach((r, n) => {
      const qo = qOffset(p, r.b, r.i, r.h);
      for (let c = 0; c < d; c++) {
        const ref = ref64[n * d + c];
        const e = Math.abs(x(qo + c) - ref);
        if (Number.isNaN(e)) maxError = Number.NaN;
        else if (e > maxError) maxError = e;
        const el = Math.abs(refLow[n * d + c] - ref);
        if (el > lowError) lowError = el;
      }
    });
    const floor = TOLERANCE_FLOOR[p.dtype];
    const bound = kind === 'output' ? 2 * lowError + floor : 3 * lowError + 10 * floor;
    return { maxError, bound, pass: maxError <= bound, rows: this.rows.length };
  }

  checkForward(out: HostTensor): CheckResult {
    return this.compare(out, this.forward64().out, this.forwardLow().out, 'output');
  }

  checkDq(dq: HostTensor, dout: HostTensor): CheckResult {
    return this.compare(dq, this.dq64(dout), this.dqLow(dout), 'grad');
  }
}
