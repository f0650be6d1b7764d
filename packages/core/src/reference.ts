/**
 * References for SPEC §3/§4, written for clarity, not speed.
 *
 * - standard (materialising): S = scale·QKᵀ (+ modifiers), P = softmax(S), O = P·V, per (batch, head),
 *   in float64 (`ref64`) or in float32 with 16-bit rounding where a real kernel rounds (`refLow`,
 *   the yardstick of SPEC §8's tolerance rule). It holds an sq×sk matrix, so it refuses large heads.
 * - two-pass (memory-efficient, float64): pass 1 finds each row's max and normaliser, pass 2
 *   recomputes the scores and accumulates; backward recomputes P from lse. O(N) memory.
 * - online (float64): key blocks folded with the online-softmax primitives, as a tiled kernel does.
 *
 * All return raw Float64Arrays (not rounded to the dtype unless the precision asks for it).
 */
import { roundToDType, toFloat32 } from './dtype.js';
import { FlashAttentionError } from './errors.js';
import { allowedKeyRange, modifyScore } from './mask.js';
import { finalizeRow, newRowState, resetRowState, updateRow } from './online-softmax.js';
import { dropoutKeep } from './philox.js';
import {
  alibiSlope,
  biasOffset,
  kvHead,
  kvOffset,
  lseIndex,
  numel,
  type Problem,
  qOffset,
  resolveProblem,
  seqLenK,
  seqLenQ,
} from './problem.js';
import type { AttentionOptions, DType, HostTensor } from './types.js';

/** Largest sq_b·sk_b the materialising reference accepts (a float64 matrix of 64 MiB). */
export const STANDARD_REFERENCE_MAX_ELEMENTS = 2 ** 23;

export interface ReferenceForward {
  problem: Problem;
  out: Float64Array;
  lse: Float64Array;
}

export interface ReferenceBackward {
  problem: Problem;
  dq: Float64Array;
  dk: Float64Array;
  dv: Float64Array;
}

interface Inputs {
  q: Float64Array;
  k: Float64Array;
  v: Float64Array;
  bias: Float64Array | null;
}

/** How the standard reference rounds: float64 rounds nothing; low rounds every op to float32 and P/dS to the dtype. */
interface Precision {
  op: (x: number) => number;
  toDType: (x: number) => number;
}

const identity = (x: number) => x;

function dtypeRounder(dtype: DType): (x: number) => number {
  if (dtype === 'float32') return Math.fround;
  const one = new Float32Array(1);
  return (x: number) => {
    one[0] = x;
    return roundToDType(one, dtype)[0];
  };
}

function precisionOf(kind: 'float64' | 'low', dtype: DType): Precision {
  return kind === 'float64'
    ? { op: identity, toDType: identity }
    : { op: Math.fround, toDType: dtypeRounder(dtype) };
}

function decode(t: HostTensor): Float64Array {
  return Float64Array.from(toFloat32(t));
}

function decodeInputs(p: Problem, q: HostTensor, k: HostTensor, v: HostTensor): Inputs {
  const bias = p.bias ? decode(p.bias.tensor as HostTensor) : null;
  return { q: decode(q), k: decode(k), v: decode(v), bias };
}

/** The score of (i, j) of sequence b, head h, in the given precision (mask not applied). */
function score(
  p: Problem,
  x: Inputs,
  r: Precision,
  b: number,
  h: number,
  i: number,
  j: number,
  off: number,
): number {
  const qo = qOffset(p, b, i, h);
  const ko = kvOffset(p, b, j, kvHead(p, h));
  let dot = 0;
  for (let c = 0; c < p.headDim; c++) dot = r.op(dot + r.op(x.q[qo + c] * x.k[ko + c]));
  let s = r.op(p.scale * dot);
  s = r.op(modifyScore(s, p.softcap, alibiSlope(p, b, h), i, j, off));
  if (x.bias) s = r.op(s + x.bias[biasOffset(p, b, h, i, j)]);
  return s;
}

/** d s / d (scale·q·k): the softcap's tanh' (ALiBi and bias are additive constants). */
function scoreSlope(p: Problem, x: Inputs, b: number, h: number, i: number, j: number): number {
  if (p.softcap <= 0) return 1;
  const qo = qOffset(p, b, i, h);
  const ko = kvOffset(p, b, j, kvHead(p, h));
  let dot = 0;
  for (let c = 0; c < p.headDim; c++) dot += x.q[qo + c] * x.k[ko + c];
  const t = Math.tanh((p.scale * dot) / p.softcap);
  return 1 - t * t;
}

/** keep_ij / (1 - p), or 1 without dropout. */
function dropWeight(p: Problem, b: number, h: number, i: number, j: number): number {
  const d = p.dropout;
  if (!d) return 1;
  return dropoutKeep(d.key0, d.key1, j, i, b * p.headsQ + h, d.offset, d.p) ? d.keepScale : 0;
}

function checkMaterialisable(p: Problem): void {
  for (let b = 0; b < p.batch; b++) {
    const n = seqLenQ(p, b) * seqLenK(p, b);
    if (n > STANDARD_REFERENCE_MAX_ELEMENTS) {
      throw new FlashAttentionError(
        'OUT_OF_MEMORY',
        `the standard reference materialises S and P: sq·sk = ${n} for batch ${b} exceeds its limit of ${STANDARD_REFERENCE_MAX_ELEMENTS}; use referenceForwardTwoPass for long sequences`,
      );
    }
  }
}

/** Fills S (row-major [sq_b, sk_b], -Infinity where masked) and turns it into P in place; returns each row's lse. */
function softmaxMatrix(
  p: Problem,
  x: Inputs,
  r: Precision,
  b: number,
  h: number,
  S: Float64Array,
  lse: Float64Array,
): void {
  const sq = seqLenQ(p, b);
  const sk = seqLenK(p, b);
  const off = sk - sq;
  for (let i = 0; i < sq; i++) {
    const [lo, hi] = allowedKeyRange(p, i, sq, sk);
    const row = i * sk;
    let m = Number.NEGATIVE_INFINITY;
    for (let j = 0; j < sk; j++) {
      const s = j >= lo && j < hi ? score(p, x, r, b, h, i, j, off) : Number.NEGATIVE_INFINITY;
      S[row + j] = s;
      if (s > m || Number.isNaN(s)) m = s;
    }
    if (m === Number.NEGATIVE_INFINITY) {
      for (let j = 0; j < sk; j++) S[row + j] = 0;
      lse[i] = Number.NEGATIVE_INFINITY;
      continue;
    }
    let sum = 0;
    for (let j = 0; j < sk; j++) sum = r.op(sum + r.op(Math.exp(r.op(S[row + j] - m))));
    const l = r.op(m + r.op(Math.log(sum)));
    lse[i] = l;
    for (let j = 0; j < sk; j++) S[row + j] = r.op(r.op(Math.exp(r.op(S[row + j] - m))) / sum);
  }
}

function standardForward(
  q: HostTensor,
  k: HostTensor,
  v: HostTensor,
  options: AttentionOptions,
  kind: 'float64' | 'low',
): ReferenceForward {
  const p = resolveProblem(q, k, v, options);
  checkMaterialisable(p);
  const r = precisionOf(kind, p.dtype);
  const x = decodeInputs(p, q, k, v);
  const out = new Float64Array(numel(p.outShape));
  const lse = new Float64Array(p.lseLength);
  const d = p.headDim;
  for (let b = 0; b < p.batch; b++) {
    const sq = seqLenQ(p, b);
    const sk = seqLenK(p, b);
    const P = new Float64Array(sq * sk);
    const rowLse = new Float64Array(sq);
    for (let h = 0; h < p.headsQ; h++) {
      softmaxMatrix(p, x, r, b, h, P, rowLse);
      const hk = kvHead(p, h);
      for (let i = 0; i < sq; i++) {
        lse[lseIndex(p, b, h, i)] = rowLse[i];
        const oo = qOffset(p, b, i, h);
        for (let j = 0; j < sk; j++) {
          const pij = P[i * sk + j];
          if (pij === 0) continue;
          const w = r.toDType(r.op(pij * dropWeight(p, b, h, i, j)));
          if (w === 0) continue;
          const vo = kvOffset(p, b, j, hk);
          for (let c = 0; c < d; c++) out[oo + c] = r.op(out[oo + c] + r.op(w * x.v[vo + c]));
        }
        for (let c = 0; c < d; c++) out[oo + c] = r.toDType(out[oo + c]);
      }
    }
  }
  return { problem: p, out, lse };
}

/** ref64 of SPEC §8: the standard algorithm in float64. Refuses heads past STANDARD_REFERENCE_MAX_ELEMENTS. */
export function referenceForward64(
  q: HostTensor,
  k: HostTensor,
  v: HostTensor,
  options: AttentionOptions = {},
): ReferenceForward {
  return standardForward(q, k, v, options, 'float64');
}

/** refLow of SPEC §8: the standard algorithm in float32, P and out rounded to the dtype. */
export function referenceForwardLow(
  q: HostTensor,
  k: HostTensor,
  v: HostTensor,
  options: AttentionOptions = {},
): ReferenceForward {
  return standardForward(q, k, v, options, 'low');
}

/** Per-row max and normaliser without keeping the row: pass 1 of the memory-efficient reference. */
function rowLse(p: Problem, x: Inputs, b: number, h: number, i: number, sq: number, sk: number): number {
  const r = precisionOf('float64', p.dtype);
  const [lo, hi] = allowedKeyRange(p, i, sq, sk);
  const off = sk - sq;
  let m = Number.NEGATIVE_INFINITY;
  let l = 0;
  for (let j = lo; j < hi; j++) {
    const s = score(p, x, r, b, h, i, j, off);
    if (s > m || Number.isNaN(s)) {
      l = m === Number.NEGATIVE_INFINITY ? 0 : l * Math.exp(m - s);
      m = s;
    }
    if (s !== Number.NEGATIVE_INFINITY) l += Math.exp(s - m);
  }
  return l === 0 ? Number.NEGATIVE_INFINITY : m + Math.log(l);
}

/** Pass 2: out_i = Σ_j exp(s_ij - lse_i)·w_ij·v_j. */
function rowOutput(
  p: Problem,
  x: Inputs,
  b: number,
  h: number,
  i: number,
  sq: number,
  sk: number,
  lse: number,
  out: Float64Array,
  oo: number,
): void {
  const r = precisionOf('float64', p.dtype);
  const d = p.headDim;
  for (let c = 0; c < d; c++) out[oo + c] = 0;
  if (lse === Number.NEGATIVE_INFINITY) return;
  const [lo, hi] = allowedKeyRange(p, i, sq, sk);
  const off = sk - sq;
  const hk = kvHead(p, h);
  for (let j = lo; j < hi; j++) {
    const w = Math.exp(score(p, x, r, b, h, i, j, off) - lse) * dropWeight(p, b, h, i, j);
    if (w === 0) continue;
    const vo = kvOffset(p, b, j, hk);
    for (let c = 0; c < d; c++) out[oo + c] += w * x.v[vo + c];
  }
}

/** The memory-efficient float64 reference: O(sk) work memory per row, any length. */
export function referenceForwardTwoPass(
  q: HostTensor,
  k: HostTensor,
  v: HostTensor,
  options: AttentionOptions = {},
): ReferenceForward {
  const p = resolveProblem(q, k, v, options);
  const x = decodeInputs(p, q, k, v);
  const out = new Float64Array(numel(p.outShape));
  const lse = new Float64Array(p.lseLength);
  for (let b = 0; b < p.batch; b++) {
    const sq = seqLenQ(p, b);
    const sk = seqLenK(p, b);
    for (let h = 0; h < p.headsQ; h++) {
      for (let i = 0; i < sq; i++) {
        const l = rowLse(p, x, b, h, i, sq, sk);
        lse[lseIndex(p, b, h, i)] = l;
        rowOutput(p, x, b, h, i, sq, sk, l, out, qOffset(p, b, i, h));
      }
    }
  }
  return { problem: p, out, lse };
}

/** Key blocks of this many keys are folded per online-softmax update in referenceForwardOnline. */
const ONLINE_BLOCK = 64;

/** float64, one pass over key blocks with the online-softmax primitives, as a tiled kernel computes it. */
export function referenceForwardOnline(
  q: HostTensor,
  k: HostTensor,
  v: HostTensor,
  options: AttentionOptions = {},
): ReferenceForward {
  const p = resolveProblem(q, k, v, options);
  const x = decodeInputs(p, q, k, v);
  const r = precisionOf('float64', p.dtype);
  const out = new Float64Array(numel(p.outShape));
  const lse = new Float64Array(p.lseLength);
  const state = newRowState(p.headDim);
  const scores = new Float64Array(ONLINE_BLOCK);
  const weights = new Float64Array(ONLINE_BLOCK);
  for (let b = 0; b < p.batch; b++) {
    const sq = seqLenQ(p, b);
    const sk = seqLenK(p, b);
    const off = sk - sq;
    for (let h = 0; h < p.headsQ; h++) {
      const hk = kvHead(p, h);
      for (let i = 0; i < sq; i++) {
        resetRowState(state);
        const [lo, hi] = allowedKeyRange(p, i, sq, sk);
        for (let j0 = lo; j0 < hi; j0 += ONLINE_BLOCK) {
          const count = Math.min(ONLINE_BLOCK, hi - j0);
          for (let t = 0; t < count; t++) {
            scores[t] = score(p, x, r, b, h, i, j0 + t, off);
            weights[t] = dropWeight(p, b, h, i, j0 + t);
          }
          updateRow(
            state,
            scores,
            count,
            x.v,
            (t) => kvOffset(p, b, j0 + t, hk),
            p.dropout ? weights : undefined,
          );
        }
        lse[lseIndex(p, b, h, i)] = finalizeRow(state, out, qOffset(p, b, i, h));
      }
    }
  }
  return { problem: p, out, lse };
}

function standardBackward(
  dout: HostTensor,
  q: HostTensor,
  k: HostTensor,
  v: HostTensor,
  options: AttentionOptions,
  kind: 'float64' | 'low',
): ReferenceBackward {
  const p = resolveProblem(q, k, v, options);
  checkMaterialisable(p);
  const r = precisionOf(kind, p.dtype);
  const x = decodeInputs(p, q, k, v);
  const dO = decode(dout);
  const dq = new Float64Array(x.q.length);
  const dk = new Float64Array(x.k.length);
  const dv = new Float64Array(x.v.length);
  const d = p.headDim;
  const o = new Float64Array(d);
  for (let b = 0; b < p.batch; b++) {
    const sq = seqLenQ(p, b);
    const sk = seqLenK(p, b);
    const P = new Float64Array(sq * sk);
    const rowLseArr = new Float64Array(sq);
    for (let h = 0; h < p.headsQ; h++) {
      softmaxMatrix(p, x, r, b, h, P, rowLseArr);
      const hk = kvHead(p, h);
      for (let i = 0; i < sq; i++) {
        const qo = qOffset(p, b, i, h);
        // O_i again (the stored output, rounded as a kernel would get it), then D_i = dO_i·O_i.
        o.fill(0);
        for (let j = 0; j < sk; j++) {
          const w = r.toDType(r.op(P[i * sk + j] * dropWeight(p, b, h, i, j)));
          if (w === 0) continue;
          const vo = kvOffset(p, b, j, hk);
          for (let c = 0; c < d; c++) o[c] = r.op(o[c] + r.op(w * x.v[vo + c]));
        }
        let D = 0;
        for (let c = 0; c < d; c++) D = r.op(D + r.op(dO[qo + c] * r.toDType(o[c])));
        for (let j = 0; j < sk; j++) {
          const pij = P[i * sk + j];
          if (pij === 0) continue;
          const ko = kvOffset(p, b, j, hk);
          const wDrop = dropWeight(p, b, h, i, j);
          // dV_j += P~_ij dO_i
          const pTilde = r.toDType(r.op(pij * wDrop));
          if (pTilde !== 0)
            for (let c = 0; c < d; c++) dv[ko + c] = r.op(dv[ko + c] + r.op(pTilde * dO[qo + c]));
          // dP_ij = w_ij (dO_i·v_j); dS_ij = P_ij (dP_ij - D_i); through softcap; times scale.
          let dp = 0;
          for (let c = 0; c < d; c++) dp = r.op(dp + r.op(dO[qo + c] * x.v[ko + c]));
          dp = r.op(dp * wDrop);
          const ds = r.toDType(r.op(r.op(pij * r.op(dp - D)) * scoreSlope(p, x, b, h, i, j)));
          if (ds === 0) continue;
          const g = r.op(ds * p.scale);
          for (let c = 0; c < d; c++) {
            dq[qo + c] = r.op(dq[qo + c] + r.op(g * x.k[ko + c]));
            dk[ko + c] = r.op(dk[ko + c] + r.op(g * x.q[qo + c]));
          }
        }
      }
    }
  }
  if (kind === 'low') {
    for (const a of [dq, dk, dv]) for (let t = 0; t < a.length; t++) a[t] = r.toDType(a[t]);
  }
  return { problem: p, dq, dk, dv };
}

/** ref64 gradients (SPEC §4): the standard backward in float64, P recomputed and materialised per head. */
export function referenceBackward64(
  dout: HostTensor,
  q: HostTensor,
  k: HostTensor,
  v: HostTensor,
  options: AttentionOptions = {},
): ReferenceBackward {
  return standardBackward(dout, q, k, v, options, 'float64');
}

/** refLow gradients: float32 arithmetic, P~ and dS rounded to the dtype before their products, results rounded. */
export function referenceBackwardLow(
  dout: HostTensor,
  q: HostTensor,
  k: HostTensor,
  v: HostTensor,
  options: AttentionOptions = {},
): ReferenceBackward {
  return standardBackward(dout, q, k, v, options, 'low');
}

/**
 * Memory-efficient float64 backward: P_ij = exp(s_ij - lse_i) recomputed per pair from the row's lse,
 * D_i = dO_i·O_i; nothing sq×sk is kept.
 */
export function referenceBackwardTwoPass(
  dout: HostTensor,
  q: HostTensor,
  k: HostTensor,
  v: HostTensor,
  options: AttentionOptions = {},
): ReferenceBackward {
  const p = resolveProblem(q, k, v, options);
  const r = precisionOf('float64', p.dtype);
  const x = decodeInputs(p, q, k, v);
  const dO = decode(dout);
  const dq = new Float64Array(x.q.length);
  const dk = new Float64Array(x.k.length);
  const dv = new Float64Array(x.v.length);
  const d = p.headDim;
  const o = new Float64Array(d);
  for (let b = 0; b < p.batch; b++) {
    const sq = seqLenQ(p, b);
    const sk = seqLenK(p, b);
    const off = sk - sq;
    for (let h = 0; h < p.headsQ; h++) {
      const hk = kvHead(p, h);
      for (let i = 0; i < sq; i++) {
        const qo = qOffset(p, b, i, h);
        const lse = rowLse(p, x, b, h, i, sq, sk);
        if (lse === Number.NEGATIVE_INFINITY) continue;
        rowOutput(p, x, b, h, i, sq, sk, lse, o, 0);
        let D = 0;
        for (let c = 0; c < d; c++) D += dO[qo + c] * o[c];
        const [lo, hi] = allowedKeyRange(p, i, sq, sk);
        for (let j = lo; j < hi; j++) {
          const pij = Math.exp(score(p, x, r, b, h, i, j, off) - lse);
          if (pij === 0) continue;
          const ko = kvOffset(p, b, j, hk);
          const wDrop = dropWeight(p, b, h, i, j);
          if (wDrop !== 0) for (let c = 0; c < d; c++) dv[ko + c] += pij * wDrop * dO[qo + c];
          let dp = 0;
          for (let c = 0; c < d; c++) dp += dO[qo + c] * x.v[ko + c];
          const g = pij * (dp * wDrop - D) * scoreSlope(p, x, b, h, i, j) * p.scale;
          if (g === 0) continue;
          for (let c = 0; c < d; c++) {
            dq[qo + c] += g * x.k[ko + c];
            dk[ko + c] += g * x.q[qo + c];
          }
        }
      }
    }
  }
  return { problem: p, dq, dk, dv };
}
