const d = 64,
  Br = 64,
  Bc = 128;
function mk(n) {
  const a = new Float64Array(n);
  for (let i = 0; i < n; i++) a[i] = Math.random() - 0.5;
  return a;
}
const LOG2E = Math.LOG2E,
  LN2_HI = 0.6931471803691238,
  LN2_LO = 1.9082149292705877e-10;
const POW2_NEG = new Float64Array(1024);
for (let k = 0; k < 1024; k++) POW2_NEG[k] = 2 ** -k;
const FRAC = new Float64Array(32);
for (let j = 0; j < 32; j++) FRAC[j] = 2 ** (-j / 32);
const K32 = 32 / Math.LN2,
  L32_HI = LN2_HI / 32,
  L32_LO = LN2_LO / 32;
function expFast(x) {
  if (x <= 0 && x > -700) {
    const k = (x * LOG2E - 0.5) | 0;
    const r = x - k * LN2_HI - k * LN2_LO;
    const poly =
      1 +
      r *
        (1 +
          r *
            (0.5 +
              r *
                (0.16666666666666666 +
                  r *
                    (0.041666666666666664 +
                      r *
                        (0.008333333333333333 +
                          r *
                            (0.001388888888888889 +
                              r * (1.984126984126984e-4 + r * 2.48015873015873e-5)))))));
    return poly * POW2_NEG[0 - k];
  }
  return Math.exp(x);
}
function expT(x) {
  if (x <= 0 && x > -700) {
    const n = (0.5 - x * K32) | 0;
    const r = x + n * L32_HI + n * L32_LO;
    const poly = 1 + r * (1 + r * (0.5 + r * (0.16666666666666666 + r * 0.041666666666666664)));
    return poly * POW2_NEG[n >> 5] * FRAC[n & 31];
  }
  return Math.exp(x);
}
function gTN(A, lda, B, ldb, C, ldc, M, N, K, add) {
  for (let m = 0; m < M; m += 2) {
    const r0 = m * ldc,
      r1 = r0 + ldc;
    for (let n = 0; n < N; n += 4) {
      const o0 = r0 + n,
        o1 = r1 + n;
      let c00 = 0,
        c01 = 0,
        c02 = 0,
        c03 = 0,
        c10 = 0,
        c11 = 0,
        c12 = 0,
        c13 = 0;
      if (add) {
        c00 = C[o0];
        c01 = C[o0 + 1];
        c02 = C[o0 + 2];
        c03 = C[o0 + 3];
        c10 = C[o1];
        c11 = C[o1 + 1];
        c12 = C[o1 + 2];
        c13 = C[o1 + 3];
      }
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
// generic strides A[m*am + k*ak], B[k*bk + n*bn]
function gS(A, am, ak, B, bk, bn, C, ldc, M, N, K, add) {
  for (let m = 0; m < M; m += 2) {
    const r0 = m * ldc,
      r1 = r0 + ldc;
    for (let n = 0; n < N; n += 4) {
      const o0 = r0 + n,
        o1 = r1 + n;
      let c00 = 0,
        c01 = 0,
        c02 = 0,
        c03 = 0,
        c10 = 0,
        c11 = 0,
        c12 = 0,
        c13 = 0;
      if (add) {
        c00 = C[o0];
        c01 = C[o0 + 1];
        c02 = C[o0 + 2];
        c03 = C[o0 + 3];
        c10 = C[o1];
        c11 = C[o1 + 1];
        c12 = C[o1 + 2];
        c13 = C[o1 + 3];
      }
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
const Qt = mk(d * Br),
  Qr = mk(Br * d),
  Kt = mk(d * Bc),
  Kr = mk(Bc * d),
  V = mk(Bc * d),
  S = new Float64Array(Br * Bc),
  Pt = new Float64Array(Bc * Br),
  P = new Float64Array(Br * Bc),
  acc = new Float64Array(Br * d);
const Mx = new Float64Array(Br),
  L = new Float64Array(Br);
function softA(ex) {
  // transposed store
  for (let r = 0; r < Br; r++) {
    const so = r * Bc;
    let mx = -Infinity;
    for (let t = 0; t < Bc; t++) {
      const x = S[so + t];
      if (x > mx || Number.isNaN(x)) mx = x;
    }
    let sum = 0;
    for (let t = 0; t < Bc; t++) {
      const x = ex(S[so + t] - mx);
      sum += x;
      Pt[t * Br + r] = x;
    }
    L[r] = sum;
  }
}
function softB(ex) {
  // row-major store in place
  for (let r = 0; r < Br; r++) {
    const so = r * Bc;
    let mx = -Infinity;
    for (let t = 0; t < Bc; t++) {
      const x = S[so + t];
      if (x > mx || Number.isNaN(x)) mx = x;
    }
    let sum = 0;
    for (let t = 0; t < Bc; t++) {
      const x = ex(S[so + t] - mx);
      sum += x;
      S[so + t] = x;
    }
    L[r] = sum;
  }
}
const softA1 = () => softA(expFast),
  softB1 = () => softB(expFast),
  softB2 = () => softB(expT);
function vA() {
  gTN(Qt, Br, Kt, Bc, S, Bc, Br, Bc, d, false);
  for (let i = 0; i < S.length; i++) S[i] *= 0.1;
  softA1();
  gTN(Pt, Br, V, d, acc, d, Br, d, Bc, true);
}
function vB() {
  gS(Qr, d, 1, Kr, 1, d, S, Bc, Br, Bc, d, false);
  for (let i = 0; i < S.length; i++) S[i] *= 0.1;
  softB1();
  gS(S, Bc, 1, V, d, 1, acc, d, Br, d, Bc, true);
}
function vC() {
  gS(Qr, d, 1, Kr, 1, d, S, Bc, Br, Bc, d, false);
  for (let i = 0; i < S.length; i++) S[i] *= 0.1;
  softB2();
  gS(S, Bc, 1, V, d, 1, acc, d, Br, d, Bc, true);
}
function vD() {
  gS(Qt, 1, Br, Kt, Bc, 1, S, Bc, Br, Bc, d, false);
  for (let i = 0; i < S.length; i++) S[i] *= 0.1;
  softB2();
  gS(S, Bc, 1, V, d, 1, acc, d, Br, d, Bc, true);
}
function cpu() {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1000;
}
const flops = 4 * Br * Bc * d;
const res = {};
for (let rep = 0; rep < 9; rep++)
  for (const [nm, f] of [
    ['A TN/Pt/expFast', vA],
    ['B strided NT/NN/expFast', vB],
    ['C NT/NN/expT', vC],
    ['D TN/NN/expT', vD],
  ]) {
    for (let w = 0; w < 30; w++) f();
    const reps = 300;
    const c0 = cpu();
    for (let w = 0; w < reps; w++) f();
    const c = cpu() - c0;
    (res[nm] ??= []).push((flops * reps) / c / 1e6);
  }
for (const [k, v] of Object.entries(res)) {
  v.sort((a, b) => b - a);
  console.log(k.padEnd(28), 'GF/s max', v[0].toFixed(2), 'median', v[4].toFixed(2));
}
