/**
 * The forward kernel, FlashAttention-2 style (Dao 2023, Algorithm 1), for one work item of sequence
 * b and kv head hk: a few "units", each one Q block (Br rows) of one query head of the group. All
 * units of an item share every decoded K/V block: the query heads of a GQA group, or consecutive
 * Q blocks of one head, so that K and V are read and converted once per Br·units rows, not per Br.
 *
 *   for each K/V block of Bc keys inside the item's key range:
 *     decode K (transposed) and V once
 *     per unit whose rows see the block (others skip it wholesale: causal, windows):
 *       S = (scale·Q)·Kᵀ                Br×Bc tile, gemmTN (row maxima from its epilogue)
 *       modifiers, mask, online softmax per row (acc and l rescaled only when the max grows)
 *       acc += P~·V                     gemmNNAdd, P~ row-major in place of S
 *   out = acc / l (deferred normalisation), lse = m + ln l, rounded to the dtype unit by unit.
 */
import { alibiSlope, allowedKeyRange, kvOffset, lseIndex, qOffset, seqLenK, seqLenQ } from '@flashattn/core';
import { gemmNNAdd, gemmNNAddSkipZero, gemmTN, gemmTNRowMax } from './gemm.js';
import { FORWARD_ITEM, type ForwardJob } from './job.js';
import { paddedLd, roundUp4, type Scratch, type Tile } from './scratch.js';
import {
  type Dropout,
  dropWeight,
  expFast,
  loadR,
  loadT,
  type Modifiers,
  modifiersFor,
  modifyRow,
  writeRow,
} from './tile.js';

interface Unit {
  h: number;
  i0: number;
  rows: number;
  /** Key range of the unit's rows: [jLo, jHi). */
  jLo: number;
  jHi: number;
  lo: Int32Array;
  hi: Int32Array;
  Qt: Tile;
  acc: Tile;
  mod: Modifiers;
  /** Offset of the unit's rows in the m and l tiles. */
  mb: number;
}

export function forwardItem(job: ForwardJob, n: number, s: Scratch): void {
  const it = job.items;
  const o = n * FORWARD_ITEM;
  const b = it[o];
  const hk = it[o + 1];
  const g0 = it[o + 2];
  const ng = it[o + 3];
  const qb0 = it[o + 4];
  const nq = it[o + 5];
  const p = job.p;
  const d = p.headDim;
  const dtype = p.dtype;
  const Br = job.blockQ;
  const Bc = job.blockK;
  const BR = roundUp4(Br);
  const BC = roundUp4(Bc);
  const DP = roundUp4(d);
  // Leading dimensions of the tiles the products walk down (see paddedLd).
  const QL = paddedLd(Br);
  const KL = paddedLd(Bc);
  const VL = paddedLd(d);
  const sq = seqLenQ(p, b);
  const sk = seqLenK(p, b);
  const off = sk - sq;
  const dr: Dropout | null = p.dropout;

  const Kt = s.get('Kt', d * KL);
  const V = s.get('V', BC * VL);
  const S = s.get('S', BR * BC);
  const rowMax = s.get('rowMax', BR);
  const row = s.get('row', DP);
  const M = s.get('m', ng * nq * BR);
  const L = s.get('l', ng * nq * BR);

  const units: Unit[] = [];
  let jLo = sk;
  let jHi = 0;
  for (let g = g0; g < g0 + ng; g++) {
    const h = hk * p.groupSize + g;
    const mod = modifiersFor(p, b, h, alibiSlope(p, b, h));
    for (let qb = qb0; qb < qb0 + nq && qb * Br < sq; qb++) {
      const u = units.length;
      const i0 = qb * Br;
      const rows = Math.min(Br, sq - i0);
      const lo = s.ints(`lo${u}`, BR);
      const hi = s.ints(`hi${u}`, BR);
      for (let r = 0; r < rows; r++) {
        const [a, e] = allowedKeyRange(p, i0 + r, sq, sk);
        lo[r] = a;
        hi[r] = e;
      }
      const uLo = lo[0];
      const uHi = Math.max(uLo, hi[rows - 1]);
      if (uHi > uLo) {
        jLo = Math.min(jLo, uLo);
        jHi = Math.max(jHi, uHi);
      }
      const Qt = s.get(`Qt${u}`, d * QL);
      for (let r = 0; r < rows; r++) loadT(job.q, dtype, qOffset(p, b, i0 + r, h), d, p.scale, Qt, QL, r, s);
      const acc = s.get(`acc${u}`, BR * DP);
      acc.fill(0, 0, BR * DP);
      const mb = u * BR;
      for (let r = 0; r < rows; r++) {
        M[mb + r] = Number.NEGATIVE_INFINITY;
        L[mb + r] = 0;
      }
      units.push({ h, i0, rows, jLo: uLo, jHi: uHi, lo, hi, Qt, acc, mod, mb });
    }
  }

  for (let j0 = jLo; j0 < jHi; j0 += Bc) {
    const keys = Math.min(Bc, jHi - j0);
    let vFin = 0;
    for (let t = 0; t < keys; t++) {
      const ko = kvOffset(p, b, j0 + t, hk);
      loadT(job.k, dtype, ko, d, 1, Kt, KL, t, s);
      vFin += loadR(job.v, dtype, ko, d, 1, V, VL, t, s);
    }
    for (const u of units) {
      // Causal and window blocks outside the unit's rows are skipped wholesale.
      if (u.jHi <= j0 || u.jLo >= j0 + keys) continue;
      const { rows, lo, hi, mod, acc, mb, i0 } = u;
      const bh = b * p.headsQ + u.h;
      // Every row of the unit allows every key of the block: no per-row clipping.
      const full = j0 >= lo[rows - 1] && j0 + keys <= hi[0];
      // Such blocks, unmodified, get their row maxima from the product's epilogue.
      const fast = full && !mod.any;
      if (fast) gemmTNRowMax(u.Qt, QL, Kt, KL, S, BC, rows, keys, d, rowMax);
      else gemmTN(u.Qt, QL, Kt, KL, S, BC, rows, keys, d);
      for (let r = 0; r < rows; r++) {
        const i = i0 + r;
        let a = 0;
        let e = keys;
        if (!full) {
          a = Math.max(lo[r], j0) - j0;
          e = Math.min(hi[r], j0 + keys) - j0;
        }
        const so = r * BC;
        if (e <= a) {
          S.fill(0, so, so + keys);
          continue;
        }
        let mx = Number.NEGATIVE_INFINITY;
        if (fast) mx = rowMax[r];
        else {
          if (mod.any) modifyRow(S, so, a, e, mod, i, j0, off, null);
          for (let t = a; t < e; t++) {
            const x = S[so + t];
            // NaN must win so that it spreads, as in the reference.
            if (x > mx || Number.isNaN(x)) mx = x;
          }
        }
        if (mx === Number.NEGATIVE_INFINITY) {
          // Every score -Infinity (a -Infinity bias): nothing to add.
          S.fill(0, so, so + keys);
          continue;
        }
        const mOld = M[mb + r];
        if (mx > mOld || Number.isNaN(mx)) {
          // The max grew: rescale what this row has accumulated (nothing yet when mOld is -Infinity).
          if (mOld !== Number.NEGATIVE_INFINITY) {
            const alpha = expFast(mOld - mx);
            L[mb + r] *= alpha;
            const ao = r * DP;
            for (let c = 0; c < d; c++) acc[ao + c] *= alpha;
          }
          M[mb + r] = mx;
        }
        const m = M[mb + r];
        let sum = 0;
        for (let t = 0; t < a; t++) S[so + t] = 0;
        if (dr === null) {
          for (let t = a; t < e; t++) {
            const x = expFast(S[so + t] - m);
            sum += x;
            S[so + t] = x;
          }
        } else {
          for (let t = a; t < e; t++) {
            const x = expFast(S[so + t] - m);
            sum += x;
            S[so + t] = x * dropWeight(dr, j0 + t, i, bh);
          }
        }
        for (let t = e; t < keys; t++) S[so + t] = 0;
        L[mb + r] += sum;
      }
      // acc += P~·V, P~ row-major in S.
      if (vFin === 0) gemmNNAdd(S, BC, V, VL, acc, DP, rows, d, keys);
      else gemmNNAddSkipZero(S, BC, V, VL, acc, DP, rows, d, keys);
    }
  }

  for (const u of units) {
    for (let r = 0; r < u.rows; r++) {
      const i = u.i0 + r;
      const l = L[u.mb + r];
      const oo = qOffset(p, b, i, u.h);
      let lse: number;
      if (l === 0) {
        // No key: out = 0 and lse = -Infinity, never NaN.
        row.fill(0, 0, d);
        writeRow(row, 0, 1, job.out, dtype, oo, d, s);
        lse = Number.NEGATIVE_INFINITY;
      } else {
        writeRow(u.acc, r * DP, 1 / l, job.out, dtype, oo, d, s);
        lse = M[u.mb + r] + Math.log(l);
      }
      if (job.lse) job.lse[lseIndex(p, b, u.h, i)] = lse;
    }
  }
}
