function mk(n) {
  const a = new Float64Array(n);
  for (let i = 0; i < n; i++) a[i] = Math.random() - 0.5;
  return a;
}
// TN specialised: A[k*lda+m], B[k*ldb+n]
function gTN(A, lda, B, ldb, C, ldc, M, N, K) {
  for (let m = 0; m < M; m += 2) {
    const r0 = m * ldc,
      r1 = r0 + ldc;
    for (let n = 0; n < N; n += 4) {
      let c00 = 0,
        c01 = 0,
        c02 = 0,
        c03 = 0,
        c10 = 0,
        c11 = 0,
        c12 = 0,
        c13 = 0;
      let ai = m,
        bi = n;
      for (let k = 0; k < K; k++) {
        const a0 = A[ai],
          a1 = A[ai + 1],
          b0 = B[bi],
          b1 = B[bi + 1],
          b2 = B[bi + 2],
          b3 = B[bi + 3];
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
      const o0 = r0 + n,
        o1 = r1 + n;
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
// generic strides: A[m*am + k*ak], B[k*bk + n*bn]
function gS(A, am, ak, B, bk, bn, C, ldc, M, N, K) {
  for (let m = 0; m < M; m += 2) {
    const r0 = m * ldc,
      r1 = r0 + ldc;
    for (let n = 0; n < N; n += 4) {
      let c00 = 0,
        c01 = 0,
        c02 = 0,
        c03 = 0,
        c10 = 0,
        c11 = 0,
        c12 = 0,
        c13 = 0;
      let a0i = m * am,
        a1i = a0i + am,
        b0i = n * bn,
        b1i = b0i + bn,
        b2i = b1i + bn,
        b3i = b2i + bn;
      for (let k = 0; k < K; k++) {
        const a0 = A[a0i],
          a1 = A[a1i],
          b0 = B[b0i],
          b1 = B[b1i],
          b2 = B[b2i],
          b3 = B[b3i];
        c00 += a0 * b0;
        c01 += a0 * b1;
        c02 += a0 * b2;
        c03 += a0 * b3;
        c10 += a1 * b0;
        c11 += a1 * b1;
        c12 += a1 * b2;
        c13 += a1 * b3;
        a0i += ak;
        a1i += ak;
        b0i += bk;
        b1i += bk;
        b2i += bk;
        b3i += bk;
      }
      const o0 = r0 + n,
        o1 = r1 + n;
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
// NT specialised: A[m*lda + k], B[n*ldb + k] (both row-major along k)
function gNT(A, lda, B, ldb, C, ldc, M, N, K) {
  for (let m = 0; m < M; m += 2) {
    const r0 = m * ldc,
      r1 = r0 + ldc,
      a0o = m * lda,
      a1o = a0o + lda;
    for (let n = 0; n < N; n += 4) {
      let c00 = 0,
        c01 = 0,
        c02 = 0,
        c03 = 0,
        c10 = 0,
        c11 = 0,
        c12 = 0,
        c13 = 0;
      const b0o = n * ldb,
        b1o = b0o + ldb,
        b2o = b1o + ldb,
        b3o = b2o + ldb;
      for (let k = 0; k < K; k++) {
        const a0 = A[a0o + k],
          a1 = A[a1o + k],
          b0 = B[b0o + k],
          b1 = B[b1o + k],
          b2 = B[b2o + k],
          b3 = B[b3o + k];
        c00 += a0 * b0;
        c01 += a0 * b1;
        c02 += a0 * b2;
        c03 += a0 * b3;
        c10 += a1 * b0;
        c11 += a1 * b1;
        c12 += a1 * b2;
        c13 += a1 * b3;
      }
      const o0 = r0 + n,
        o1 = r1 + n;
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
// NN specialised: A[m*lda + k], B[k*ldb + n]
function gNN(A, lda, B, ldb, C, ldc, M, N, K) {
  for (let m = 0; m < M; m += 2) {
    const r0 = m * ldc,
      r1 = r0 + ldc,
      a0o = m * lda,
      a1o = a0o + lda;
    for (let n = 0; n < N; n += 4) {
      let c00 = 0,
        c01 = 0,
        c02 = 0,
        c03 = 0,
        c10 = 0,
        c11 = 0,
        c12 = 0,
        c13 = 0;
      let bi = n;
      for (let k = 0; k < K; k++) {
        const a0 = A[a0o + k],
          a1 = A[a1o + k],
          b0 = B[bi],
          b1 = B[bi + 1],
          b2 = B[bi + 2],
          b3 = B[bi + 3];
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
      const o0 = r0 + n,
        o1 = r1 + n;
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
const M = 64,
  N = 128,
  K = 64;
const A = mk(4 * 128 * 128),
  B = mk(4 * 128 * 128),
  C = new Float64Array(128 * 128 + 64);
function cpu() {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1000;
}
const flops = 2 * M * N * K;
const variants = [
  ['TN', () => gTN(A, M, B, N, C, N, M, N, K)],
  ['S-TN', () => gS(A, 1, M, B, N, 1, C, N, M, N, K)],
  ['NT', () => gNT(A, K, B, K, C, N, M, N, K)],
  ['S-NT', () => gS(A, K, 1, B, 1, K, C, N, M, N, K)],
  ['NN', () => gNN(A, K, B, N, C, N, M, N, K)],
  ['S-NN', () => gS(A, K, 1, B, N, 1, C, N, M, N, K)],
];
const tot = {};
for (let rep = 0; rep < 6; rep++)
  for (const [name, f] of variants) {
    for (let w = 0; w < 50; w++) f();
    const reps = 1500;
    const c0 = cpu();
    for (let w = 0; w < reps; w++) f();
    const cms = cpu() - c0;
    (tot[name] ??= []).push((flops * reps) / cms / 1e6);
  }
for (const [k, v] of Object.entries(tot)) {
  v.sort((a, b) => a - b);
  console.log(k, 'median', v[3].toFixed(2), 'max', v[5].toFixed(2));
}
