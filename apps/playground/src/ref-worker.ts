/// <reference lib="webworker" />
/**
 * The float64 references run here, off the page's thread: the materialising standard algorithm
 * (referenceForward64, which refuses past 2^23 elements per head: the O(N²) wall), the two-pass
 * reference for long sequences, refLow for SPEC §8's tolerance, and the softmax matrix for heatmaps.
 */
import {
  allowedKeyRange,
  type DType,
  type HostTensor,
  isFlashAttentionError,
  kvHead,
  kvOffset,
  modifyScore,
  qOffset,
  referenceForward64,
  referenceForwardLow,
  referenceForwardTwoPass,
  resolveProblem,
  STANDARD_REFERENCE_MAX_ELEMENTS,
  seqLenK,
  seqLenQ,
  toFloat32,
} from '@flashattn/core';
import type { RefEnvelope, RefRequest, RefResponse } from './ref-protocol.js';

const FLOOR: Record<DType, number> = { float32: 1e-6, float16: 1e-4, bfloat16: 1e-3 };

function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) {
    const x = a[i];
    const y = b[i];
    if (x === y) continue;
    const d = Math.abs(x - y);
    if (Number.isNaN(d)) return Number.NaN;
    if (d > m) m = d;
  }
  return m;
}

/**
 * Rows [rowStart, sq) of every sequence of a 'bshd' tensor. With the keys unchanged, row t of the slice
 * has the diagonal t + (sk - (sq - rowStart)) = i + (sk - sq) of row i = rowStart + t: the same mask,
 * ALiBi distance and softcap, so its reference output is that of row i.
 */
function lastRows(t: HostTensor, rowStart: number): HostTensor {
  if (rowStart === 0) return t;
  const [b, sq, h, d] = t.shape;
  const row = h * d;
  const data =
    t.data instanceof Float32Array
      ? new Float32Array(b * (sq - rowStart) * row)
      : new Uint16Array(b * (sq - rowStart) * row);
  for (let x = 0; x < b; x++) {
    data.set(t.data.subarray((x * sq + rowStart) * row, (x + 1) * sq * row), x * (sq - rowStart) * row);
  }
  return { dtype: t.dtype, shape: [b, sq - rowStart, h, d], data };
}

function handle(req: RefRequest): { res: RefResponse; transfer: Transferable[] } {
  if (req.kind === 'check') {
    const t0 = performance.now();
    const p = resolveProblem(req.q, req.k, req.v, req.options);
    const fits = p.seqQ * p.seqK <= STANDARD_REFERENCE_MAX_ELEMENTS;
    const sample = req.sampleRows ?? 0;
    const rowStart =
      !fits && sample > 0 && !req.options.dropout && p.layout === 'bshd' && !p.cuSeqlensQ && p.seqQ > sample
        ? p.seqQ - sample
        : 0;
    const ref = fits
      ? referenceForward64(req.q, req.k, req.v, req.options)
      : referenceForwardTwoPass(lastRows(req.q, rowStart), req.k, req.v, req.options);
    let bound: number | null = null;
    const floor = FLOOR[p.dtype];
    if (fits) {
      const low = referenceForwardLow(req.q, req.k, req.v, req.options);
      bound = 2 * maxAbsDiff(low.out, ref.out) + floor;
    }
    const ms = performance.now() - t0;
    return {
      res: {
        kind: 'check',
        method: fits ? 'standard' : 'two-pass',
        rowStart,
        out: ref.out,
        lse: ref.lse,
        bound,
        floor,
        dtype: p.dtype,
        ms,
      },
      transfer: [ref.out.buffer, ref.lse.buffer],
    };
  }
  if (req.kind === 'standard') {
    const t0 = performance.now();
    const r = referenceForward64(req.q, req.k, req.v, req.options);
    const ms = performance.now() - t0;
    return {
      res: { kind: 'standard', ms, matrixBytes: 8 * r.problem.seqQ * r.problem.seqK },
      transfer: [],
    };
  }
  // probs: P_ij = softmax_j(s_ij) for one (batch, head), pooled by max into at most maxCells × maxCells.
  const p = resolveProblem(req.q, req.k, req.v, req.options);
  const q = toFloat32(req.q);
  const k = toFloat32(req.k);
  const b = Math.min(req.batch, p.batch - 1);
  const h = Math.min(req.head, p.headsQ - 1);
  const sq = seqLenQ(p, b);
  const sk = seqLenK(p, b);
  const off = sk - sq;
  const rows = Math.min(sq, req.maxCells);
  const cols = Math.min(sk, req.maxCells);
  const data = new Float32Array(rows * cols);
  const s = new Float64Array(sk);
  const slope = p.alibiSlopes ? p.alibiSlopes[p.alibiPerBatch ? b * p.headsQ + h : h] : 0;
  const hk = kvHead(p, h);
  for (let i = 0; i < sq; i++) {
    const [lo, hi] = allowedKeyRange(p, i, sq, sk);
    const qo = qOffset(p, b, i, h);
    let m = Number.NEGATIVE_INFINITY;
    for (let j = lo; j < hi; j++) {
      const ko = kvOffset(p, b, j, hk);
      let dot = 0;
      for (let c = 0; c < p.headDim; c++) dot += q[qo + c] * k[ko + c];
      const x = modifyScore(p.scale * dot, p.softcap, slope, i, j, off);
      s[j] = x;
      if (x > m) m = x;
    }
    if (m === Number.NEGATIVE_INFINITY) continue;
    let sum = 0;
    for (let j = lo; j < hi; j++) sum += Math.exp(s[j] - m);
    const r = Math.floor((i * rows) / sq);
    for (let j = lo; j < hi; j++) {
      const c = Math.floor((j * cols) / sk);
      const prob = Math.exp(s[j] - m) / sum;
      if (prob > data[r * cols + c]) data[r * cols + c] = prob;
    }
  }
  return { res: { kind: 'probs', rows, cols, sq, sk, data }, transfer: [data.buffer] };
}

self.onmessage = (ev: MessageEvent<RefEnvelope<RefRequest>>) => {
  const { id, ...req } = ev.data;
  try {
    const { res, transfer } = handle(req as RefRequest);
    (self as unknown as Worker).postMessage({ id, ...res }, transfer);
  } catch (e) {
    const res: RefResponse = {
      kind: 'error',
      code: isFlashAttentionError(e) ? e.code : null,
      message: e instanceof Error ? e.message : String(e),
    };
    (self as unknown as Worker).postMessage({ id, ...res });
  }
};
