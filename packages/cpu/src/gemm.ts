import type { Tile } from './scratch.js';

/**
 * The one matrix-product micro-kernel every tile product of the forward and backward goes through:
 *
 *   C[m·ldc + n]  =  (C[m·ldc + n] +)  Σ_k A[k·lda + m] · B[k·ldb + n]        (C = Aᵀ·B)
 *
 * Both operands are read along k with unit stride inside a 2×4 register block (8 independent
 * accumulators, 6 loads per 8 multiply-adds), which is what keeps scalar JS near its multiply-add
 * throughput: a plain dot product is bound by the latency of its one accumulator (see PERF.md).
 *
 * M is walked in steps of 2 and N in steps of 4, so the caller's buffers must be padded: A needs a
 * readable column m+1, B columns up to n+3, C rows up to m+1 and columns up to n+3. Those padding
 * outputs are garbage and never read. K is exact: padding along the summed dimension would mix stale
 * (possibly non-finite) values into real outputs.
 *
 * All operands are Tiles (plain arrays of doubles): JS arithmetic is double anyway, float32 storage
 * costs a conversion per load and store, and typed arrays cost V8 extra loads per access (PERF.md).
 */

export function gemmTN(
  A: Tile,
  lda: number,
  B: Tile,
  ldb: number,
  C: Tile,
  ldc: number,
  M: number,
  N: number,
  K: number,
): void {
  for (let m = 0; m < M; m += 2) {
    const r0 = m * ldc;
    const r1 = r0 + ldc;
    for (let n = 0; n < N; n += 4) {
      let c00 = 0;
      let c01 = 0;
      let c02 = 0;
      let c03 = 0;
      let c10 = 0;
      let c11 = 0;
      let c12 = 0;
      let c13 = 0;
      let ai = m;
      let bi = n;
      for (let k = 0; k < K; k++) {
        const a0 = A[ai];
        const a1 = A[ai + 1];
        const b0 = B[bi];
        const b1 = B[bi + 1];
        const b2 = B[bi + 2];
        const b3 = B[bi + 3];
        c00 += a0 * b0;
        c01 += a0 * b1;
        c02 += a0 * b2;
        c03 += a0 * b3;
        c10 += a1 * b0;
        c11 += a1 * b1;
        c12 += a1 * b2;
        c13 += a1 * b3;
        ai += lda;
        bi += ldb;
      }
      const o0 = r0 + n;
      const o1 = r1 + n;
      C[o0] = c00;
      C[o0 + 1] = c01;
      C[o0 + 2] = c02;
      C[o0 + 3] = c03;
      C[o1] = c10;
      C[o1 + 1] = c11;
      C[o1 + 2] = c12;
      C[o1 + 3] = c13;
    }
  }
}

/**
 * gemmTN that also leaves in rowMax[m] the largest of C[m·ldc + n] over the N real columns (NaN if
 * any is NaN): the forward's row maximum for blocks without masking or modifiers, for free in the
 * epilogue instead of a second pass over the tile.
 */
export function gemmTNRowMax(
  A: Tile,
  lda: number,
  B: Tile,
  ldb: number,
  C: Tile,
  ldc: number,
  M: number,
  N: number,
  K: number,
  rowMax: Tile,
): void {
  for (let m = 0; m < M; m += 2) {
    const r0 = m * ldc;
    const r1 = r0 + ldc;
    let mx0 = Number.NEGATIVE_INFINITY;
    let mx1 = Number.NEGATIVE_INFINITY;
    for (let n = 0; n < N; n += 4) {
      let c00 = 0;
      let c01 = 0;
      let c02 = 0;
      let c03 = 0;
      let c10 = 0;
      let c11 = 0;
      let c12 = 0;
      let c13 = 0;
      let ai = m;
      let bi = n;
      for (let k = 0; k < K; k++) {
        const a0 = A[ai];
        const a1 = A[ai + 1];
        const b0 = B[bi];
        const b1 = B[bi + 1];
        const b2 = B[bi + 2];
        const b3 = B[bi + 3];
        c00 += a0 * b0;
        c01 += a0 * b1;
        c02 += a0 * b2;
        c03 += a0 * b3;
        c10 += a1 * b0;
        c11 += a1 * b1;
        c12 += a1 * b2;
        c13 += a1 * b3;
        ai += lda;
        bi += ldb;
      }
      const o0 = r0 + n;
      const o1 = r1 + n;
      C[o0] = c00;
      C[o0 + 1] = c01;
      C[o0 + 2] = c02;
      C[o0 + 3] = c03;
      C[o1] = c10;
      C[o1 + 1] = c11;
      C[o1 + 2] = c12;
      C[o1 + 3] = c13;
      // Math.max is NaN-sticky, as the softmax needs.
      if (n + 4 <= N) {
        mx0 = Math.max(mx0, c00, c01, c02, c03);
        mx1 = Math.max(mx1, c10, c11, c12, c13);
      } else {
        mx0 = Math.max(mx0, c00);
        mx1 = Math.max(mx1, c10);
        if (n + 1 < N) {
          mx0 = Math.max(mx0, c01);
          mx1 = Math.max(mx1, c11);
        }
        if (n + 2 < N) {
          mx0 = Math.max(mx0, c02);
          mx1 = Math.max(mx1, c12);
        }
      }
    }
    rowMax[m] = mx0;
    rowMax[m + 1] = mx1;
  }
}

/** As gemmTN, but adds into C. */
export function gemmTNAdd(
  A: Tile,
  lda: number,
  B: Tile,
  ldb: number,
  C: Tile,
  ldc: number,
  M: number,
  N: number,
  K: number,
): void {
  for (let m = 0; m < M; m += 2) {
    const r0 = m * ldc;
    const r1 = r0 + ldc;
    for (let n = 0; n < N; n += 4) {
      const o0 = r0 + n;
      const o1 = r1 + n;
      let c00 = C[o0];
      let c01 = C[o0 + 1];
      let c02 = C[o0 + 2];
      let c03 = C[o0 + 3];
      let c10 = C[o1];
      let c11 = C[o1 + 1];
      let c12 = C[o1 + 2];
      let c13 = C[o1 + 3];
      let ai = m;
      let bi = n;
      for (let k = 0; k < K; k++) {
        const a0 = A[ai];
        const a1 = A[ai + 1];
        const b0 = B[bi];
        const b1 = B[bi + 1];
        const b2 = B[bi + 2];
        const b3 = B[bi + 3];
        c00 += a0 * b0;
        c01 += a0 * b1;
        c02 += a0 * b2;
        c03 += a0 * b3;
        c10 += a1 * b0;
        c11 += a1 * b1;
        c12 += a1 * b2;
        c13 += a1 * b3;
        ai += lda;
        bi += ldb;
      }
      C[o0] = c00;
      C[o0 + 1] = c01;
      C[o0 + 2] = c02;
      C[o0 + 3] = c03;
      C[o1] = c10;
      C[o1 + 1] = c11;
      C[o1 + 2] = c12;
      C[o1 + 3] = c13;
    }
  }
}

/**
 * C[m·ldc + n] += Σ_k A[m·lda + k] · B[k·ldb + n]   (C += A·B, A row-major): the same 2×4 register
 * block, for the products whose left operand is a tile of probabilities or score gradients kept
 * row-major (P·V, dS·K), so that the softmax writes them with unit stride.
 */
export function gemmNNAdd(
  A: Tile,
  lda: number,
  B: Tile,
  ldb: number,
  C: Tile,
  ldc: number,
  M: number,
  N: number,
  K: number,
): void {
  for (let m = 0; m < M; m += 2) {
    const r0 = m * ldc;
    const r1 = r0 + ldc;
    const a0o = m * lda;
    const a1o = a0o + lda;
    for (let n = 0; n < N; n += 4) {
      const o0 = r0 + n;
      const o1 = r1 + n;
      let c00 = C[o0];
      let c01 = C[o0 + 1];
      let c02 = C[o0 + 2];
      let c03 = C[o0 + 3];
      let c10 = C[o1];
      let c11 = C[o1 + 1];
      let c12 = C[o1 + 2];
      let c13 = C[o1 + 3];
      let bi = n;
      for (let k = 0; k < K; k++) {
        const a0 = A[a0o + k];
        const a1 = A[a1o + k];
        const b0 = B[bi];
        const b1 = B[bi + 1];
        const b2 = B[bi + 2];
        const b3 = B[bi + 3];
        c00 += a0 * b0;
        c01 += a0 * b1;
        c02 += a0 * b2;
        c03 += a0 * b3;
        c10 += a1 * b0;
        c11 += a1 * b1;
        c12 += a1 * b2;
        c13 += a1 * b3;
        bi += ldb;
      }
      C[o0] = c00;
      C[o0 + 1] = c01;
      C[o0 + 2] = c02;
      C[o0 + 3] = c03;
      C[o1] = c10;
      C[o1 + 1] = c11;
      C[o1 + 2] = c12;
      C[o1 + 3] = c13;
    }
  }
}

/** gemmNNAdd skipping A elements that are exactly 0 (see gemmTNAddSkipZero). */
export function gemmNNAddSkipZero(
  A: Tile,
  lda: number,
  B: Tile,
  ldb: number,
  C: Tile,
  ldc: number,
  M: number,
  N: number,
  K: number,
): void {
  for (let m = 0; m < M; m++) {
    const am = m * lda;
    const cm = m * ldc;
    for (let k = 0; k < K; k++) {
      const a = A[am + k];
      if (a === 0) continue;
      const bk = k * ldb;
      for (let n = 0; n < N; n++) C[cm + n] += a * B[bk + n];
    }
  }
}

/**
 * C += Aᵀ·B, skipping every A element that is exactly 0: the slow path for a B block holding a NaN or
 * an infinity, where 0·NaN would otherwise put NaN into rows that never see that key (the reference
 * skips zero weights, SPEC §3: NaN spreads only to the rows it touches). Only the M×N real outputs
 * are written.
 */
export function gemmTNAddSkipZero(
  A: Tile,
  lda: number,
  B: Tile,
  ldb: number,
  C: Tile,
  ldc: number,
  M: number,
  N: number,
  K: number,
): void {
  for (let k = 0; k < K; k++) {
    const ak = k * lda;
    const bk = k * ldb;
    for (let m = 0; m < M; m++) {
      const a = A[ak + m];
      if (a === 0) continue;
      const cm = m * ldc;
      for (let n = 0; n < N; n++) C[cm + n] += a * B[bk + n];
    }
  }
}
