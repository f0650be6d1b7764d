/**
 * The backward kernels, FlashAttention-2 style (Dao 2023, Algorithm 2), split so that every output
 * element has exactly one writer and a fixed summation order (deterministic for any thread count):
 *
 *   D_i = dO_i·O_i                                          computeD, before the items
 *   dK/dV item (b, kv head, K block j):  for each query head of the group, each Q block i
 *       S = (scale·Q_i)·K_jᵀ,  P = exp(S - lse_i) (0 where masked),  P~ = P ∘ dropout weight
 *       dV_j += P~ᵀ dO_i
 *       dP = (dO_i V_jᵀ) ∘ dropout weight,  dS = P ∘ (dP - D_i) ∘ tanh'(softcap)
 *       dK_j += dSᵀ (scale·Q_i)
 *   dQ item (b, head, Q block i): for each K block j, the same S, P, dS, then dQ_i += scale·dS K_j
 *
 * dQ is recomputed in its own pass instead of being accumulated by the dK/dV items (atomics in the
 * GPU kernels): it costs a third more arithmetic but keeps one writer per element.
 */
import {
  alibiSlope,
  allowedKeyRange,
  kvOffset,
  lseIndex,
  type Problem,
  qOffset,
  seqLenK,
  seqLenQ,
} from '@flashattn/core';
import { gemmNNAdd, gemmNNAddSkipZero, gemmTN, gemmTNAdd, gemmTNAddSkipZero } from './gemm.js';
import { BACKWARD_ITEM, type BackwardJob, type Data, ITEM_KV, ITEM_Q, rowsKeyRange } from './job.js';
import { roundUp4, type Scratch, type Tile } from './scratch.js';
import {
  type Dropout,
  dropWeight,
  expFast,
  loadRT,
  loadT,
  type Modifiers,
  modifiersFor,
  modifyRow,
  readRow,
  writeRow,
} from './tile.js';

/** D_i = Σ_c dO[i, c]·O[i, c] for every row, indexed like lse. */
export function computeD(p: Problem, dout: Data, out: Data, D: Float64Array, s: Scratch): void {
  const d = p.headDim;
  const a = s.get('Da', d);
  const c2 = s.get('Db', d);
  for (let b = 0; b < p.batch; b++) {
    const sq = seqLenQ(p, b);
    for (let h = 0; h < p.headsQ; h++) {
      for (let i = 0; i < sq; i++) {
        const o = qOffset(p, b, i, h);
        readRow(dout, p.dtype, o, d, a, s);
        readRow(out, p.dtype, o, d, c2, s);
        let sum = 0;
        for (let c = 0; c < d; c++) sum += a[c] * c2[c];
        D[lseIndex(p, b, h, i)] = sum;
      }
    }
  }
}

/** One (Q block, K block) tile of one head: where it is and what applies to it. */
interface TileCtx {
  p: Problem;
  b: number;
  h: number;
  i0: number;
  rows: number;
  j0: number;
  keys: number;
  off: number;
  BC: number;
  mod: Modifiers;
  dr: Dropout | null;
  lo: Int32Array;
  hi: Int32Array;
  lseRow: Tile;
}

/**
 * Turns the scores S (rows × keys, row-major, ld BC) into P = exp(S - lse) with 0 where masked or
 * where the row saw no key; W gets the dropout weights and SL the softcap's tanh' where used.
 */
function probabilities(tl: TileCtx, S: Tile, P: Tile, W: Tile | null, SL: Tile | null): void {
  const { rows, keys, j0, BC, lo, hi, lseRow, mod, dr, i0, off } = tl;
  const bh = tl.b * tl.p.headsQ + tl.h;
  for (let r = 0; r < rows; r++) {
    const so = r * BC;
    const a = Math.max(lo[r], j0) - j0;
    const e = Math.min(hi[r], j0 + keys) - j0;
    const lse = lseRow[r];
    if (e <= a || lse === Number.NEGATIVE_INFINITY) {
      for (let t = 0; t < keys; t++) P[so + t] = 0;
      continue;
    }
    const i = i0 + r;
    if (mod.any) modifyRow(S, so, a, e, mod, i, j0, off, SL);
    for (let t = 0; t < a; t++) P[so + t] = 0;
    for (let t = a; t < e; t++) P[so + t] = expFast(S[so + t] - lse);
    for (let t = e; t < keys; t++) P[so + t] = 0;
    if (W && dr) for (let t = a; t < e; t++) W[so + t] = dropWeight(dr, j0 + t, i, bh);
  }
}

/**
 * dS = P ∘ (dP∘W - D) ∘ SL, exactly 0 where P is 0 (so that a NaN in dP of a masked key does not
 * spread), written row-major over dP itself.
 */
function scoreGrads(tl: TileCtx, P: Tile, dP: Tile, W: Tile | null, SL: Tile | null, Drow: Tile): void {
  const { rows, keys, BC } = tl;
  for (let r = 0; r < rows; r++) {
    const so = r * BC;
    const D = Drow[r];
    for (let t = 0; t < keys; t++) {
      const pv = P[so + t];
      let ds = 0;
      if (pv !== 0) {
        let dp = dP[so + t];
        if (W) dp *= W[so + t];
        ds = pv * (dp - D);
        if (SL) ds *= SL[so + t];
      }
      dP[so + t] = ds;
    }
  }
}

function rowRanges(
  p: Problem,
  i0: number,
  rows: number,
  sq: number,
  sk: number,
  lo: Int32Array,
  hi: Int32Array,
): void {
  for (let r = 0; r < rows; r++) {
    const [a, e] = allowedKeyRange(p, i0 + r, sq, sk);
    lo[r] = a;
    hi[r] = e;
  }
}

/**
 * Accumulates dK and dV of keys [kb·Bc, kb·Bc + keys) of kv head hk, sequence b, into dKacc and dVacc
 * (row-major, ld DP; zeroed here). Returns the number of keys.
 */
function kvBlock(
  job: BackwardJob,
  s: Scratch,
  b: number,
  hk: number,
  kb: number,
  dKacc: Tile,
  dVacc: Tile,
): number {
  const p = job.p;
  const d = p.headDim;
  const dtype = p.dtype;
  const Br = job.blockQ;
  const Bc = job.blockK;
  const BR = roundUp4(Br);
  const BC = roundUp4(Bc);
  const DP = roundUp4(d);
  const sq = seqLenQ(p, b);
  const sk = seqLenK(p, b);
  const j0 = kb * Bc;
  const keys = Math.min(Bc, sk - j0);
  const dr = p.dropout;

  const Kt = s.get('Kt', d * BC);
  const Vt = s.get('Vt', d * BC);
  const Qt = s.get('Qt', d * BR);
  const Qr = s.get('Qr', BR * DP);
  const dOt = s.get('dOt', d * BR);
  const dOr = s.get('dOr', BR * DP);
  const S = s.get('S', BR * BC);
  const P = s.get('P', BR * BC);
  const PW = dr ? s.get('PW', BR * BC) : P;
  const W = dr ? s.get('W', BR * BC) : null;
  const SL = p.softcap > 0 ? s.get('SL', BR * BC) : null;
  const dP = s.get('dP', BR * BC);
  const lseRow = s.get('lseRow', BR);
  const Drow = s.get('Drow', BR);
  const lo = s.ints('lo', BR);
  const hi = s.ints('hi', BR);
  dKacc.fill(0, 0, BC * DP);
  dVacc.fill(0, 0, BC * DP);

  for (let t = 0; t < keys; t++) {
    const ko = kvOffset(p, b, j0 + t, hk);
    loadT(job.k, dtype, ko, d, 1, Kt, BC, t, s);
    loadT(job.v, dtype, ko, d, 1, Vt, BC, t, s);
  }

  for (let h = hk * p.groupSize; h < (hk + 1) * p.groupSize; h++) {
    const mod = modifiersFor(p, b, h, alibiSlope(p, b, h));
    for (let i0 = 0; i0 < sq; i0 += Br) {
      const rows = Math.min(Br, sq - i0);
      const [jLo, jHi] = rowsKeyRange(p, i0, rows, sq, sk);
      if (jHi <= j0 || jLo >= j0 + keys) continue;
      rowRanges(p, i0, rows, sq, sk, lo, hi);
      let qFin = 0;
      let oFin = 0;
      for (let r = 0; r < rows; r++) {
        const qo = qOffset(p, b, i0 + r, h);
        qFin += loadRT(job.q, dtype, qo, d, p.scale, Qr, DP, Qt, BR, r, s);
        oFin += loadRT(job.dout, dtype, qo, d, 1, dOr, DP, dOt, BR, r, s);
        const li = lseIndex(p, b, h, i0 + r);
        lseRow[r] = job.lse[li];
        Drow[r] = job.D[li];
      }
      const tl: TileCtx = { p, b, h, i0, rows, j0, keys, off: sk - sq, BC, mod, dr, lo, hi, lseRow };
      gemmTN(Qt, BR, Kt, BC, S, BC, rows, keys, d);
      probabilities(tl, S, P, W, SL);
      if (W) for (let n = 0, end = rows * BC; n < end; n++) PW[n] = P[n] * W[n];
      // dV += P~ᵀ dO   (A = P~ [i][j], k = i)
      if (oFin === 0) gemmTNAdd(PW, BC, dOr, DP, dVacc, DP, keys, d, rows);
      else gemmTNAddSkipZero(PW, BC, dOr, DP, dVacc, DP, keys, d, rows);
      // dP = dO Vᵀ, then dS in place
      gemmTN(dOt, BR, Vt, BC, dP, BC, rows, keys, d);
      scoreGrads(tl, P, dP, W, SL, Drow);
      // dK += dSᵀ (scale·Q)
      if (qFin === 0) gemmTNAdd(dP, BC, Qr, DP, dKacc, DP, keys, d, rows);
      else gemmTNAddSkipZero(dP, BC, Qr, DP, dKacc, DP, keys, d, rows);
    }
  }
  return keys;
}

function kvItem(job: BackwardJob, s: Scratch, b: number, hk: number, kb: number): void {
  const p = job.p;
  const d = p.headDim;
  const DP = roundUp4(d);
  const BC = roundUp4(job.blockK);
  const dKacc = s.get('dKacc', BC * DP);
  const dVacc = s.get('dVacc', BC * DP);
  const keys = kvBlock(job, s, b, hk, kb, dKacc, dVacc);
  const j0 = kb * job.blockK;
  for (let t = 0; t < keys; t++) {
    const ko = kvOffset(p, b, j0 + t, hk);
    writeRow(dKacc, t * DP, 1, job.dk, p.dtype, ko, d, s);
    writeRow(dVacc, t * DP, 1, job.dv, p.dtype, ko, d, s);
  }
}

/** dK/dV of kv head hk over every batch in order, through the float64 accumulators (shared pages). */
function kvHeadItem(job: BackwardJob, s: Scratch, hk: number): void {
  const p = job.p;
  const d = p.headDim;
  const DP = roundUp4(d);
  const BC = roundUp4(job.blockK);
  const dKacc = s.get('dKacc', BC * DP);
  const dVacc = s.get('dVacc', BC * DP);
  const dkAll = job.dkAcc as Float64Array;
  const dvAll = job.dvAcc as Float64Array;
  for (let b = 0; b < p.batch; b++) {
    const sk = seqLenK(p, b);
    for (let kb = 0; kb * job.blockK < sk; kb++) {
      const keys = kvBlock(job, s, b, hk, kb, dKacc, dVacc);
      for (let t = 0; t < keys; t++) {
        const ko = kvOffset(p, b, kb * job.blockK + t, hk);
        const ao = t * DP;
        for (let c = 0; c < d; c++) {
          dkAll[ko + c] += dKacc[ao + c];
          dvAll[ko + c] += dVacc[ao + c];
        }
      }
    }
  }
  for (let row = 0; row < p.totalK; row++) {
    const ko = row * p.kvStrides.seq + hk * p.kvStrides.head;
    writeRow(dkAll, ko, 1, job.dk, p.dtype, ko, d, s);
    writeRow(dvAll, ko, 1, job.dv, p.dtype, ko, d, s);
  }
}

function qItem(job: BackwardJob, s: Scratch, b: number, h: number, qb: number): void {
  const p = job.p;
  const d = p.headDim;
  const dtype = p.dtype;
  const Br = job.blockQ;
  const Bc = job.blockK;
  const BR = roundUp4(Br);
  const BC = roundUp4(Bc);
  const DP = roundUp4(d);
  const sq = seqLenQ(p, b);
  const sk = seqLenK(p, b);
  const i0 = qb * Br;
  const rows = Math.min(Br, sq - i0);
  const hk = Math.floor(h / p.groupSize);
  const dr = p.dropout;

  const Qt = s.get('Qt', d * BR);
  const dOt = s.get('dOt', d * BR);
  const Kt = s.get('Kt', d * BC);
  const Kr = s.get('Kr', BC * DP);
  const Vt = s.get('Vt', d * BC);
  const S = s.get('S', BR * BC);
  const P = s.get('P', BR * BC);
  const W = dr ? s.get('W', BR * BC) : null;
  const SL = p.softcap > 0 ? s.get('SL', BR * BC) : null;
  const dP = s.get('dP', BR * BC);
  const dQacc = s.get('dQacc', BR * DP);
  const lseRow = s.get('lseRow', BR);
  const Drow = s.get('Drow', BR);
  const lo = s.ints('lo', BR);
  const hi = s.ints('hi', BR);
  dQacc.fill(0, 0, BR * DP);

  rowRanges(p, i0, rows, sq, sk, lo, hi);
  for (let r = 0; r < rows; r++) {
    const qo = qOffset(p, b, i0 + r, h);
    loadT(job.q, dtype, qo, d, p.scale, Qt, BR, r, s);
    loadT(job.dout, dtype, qo, d, 1, dOt, BR, r, s);
    const li = lseIndex(p, b, h, i0 + r);
    lseRow[r] = job.lse[li];
    Drow[r] = job.D[li];
  }
  const mod = modifiersFor(p, b, h, alibiSlope(p, b, h));
  const [jLo, jHi] = rowsKeyRange(p, i0, rows, sq, sk);
  for (let j0 = jLo; j0 < jHi; j0 += Bc) {
    const keys = Math.min(Bc, jHi - j0);
    let kFin = 0;
    for (let t = 0; t < keys; t++) {
      const ko = kvOffset(p, b, j0 + t, hk);
      kFin += loadRT(job.k, dtype, ko, d, 1, Kr, DP, Kt, BC, t, s);
      loadT(job.v, dtype, ko, d, 1, Vt, BC, t, s);
    }
    const tl: TileCtx = { p, b, h, i0, rows, j0, keys, off: sk - sq, BC, mod, dr, lo, hi, lseRow };
    gemmTN(Qt, BR, Kt, BC, S, BC, rows, keys, d);
    probabilities(tl, S, P, W, SL);
    gemmTN(dOt, BR, Vt, BC, dP, BC, rows, keys, d);
    scoreGrads(tl, P, dP, W, SL, Drow);
    // dQ += dS K   (dS row-major in dP)
    if (kFin === 0) gemmNNAdd(dP, BC, Kr, DP, dQacc, DP, rows, d, keys);
    else gemmNNAddSkipZero(dP, BC, Kr, DP, dQacc, DP, rows, d, keys);
  }
  for (let r = 0; r < rows; r++) {
    writeRow(dQacc, r * DP, p.scale, job.dq, dtype, qOffset(p, b, i0 + r, h), d, s);
  }
}

export function backwardItem(job: BackwardJob, n: number, s: Scratch): void {
  const it = job.items;
  const o = n * BACKWARD_ITEM;
  const kind = it[o];
  if (kind === ITEM_KV) kvItem(job, s, it[o + 1], it[o + 2], it[o + 3]);
  else if (kind === ITEM_Q) qItem(job, s, it[o + 1], it[o + 2], it[o + 3]);
  else kvHeadItem(job, s, it[o + 2]);
}
