const BR = 64,
  BC = 128,
  rows = 64,
  keys = 128;
const S = new Float64Array(BR * BC);
for (let i = 0; i < S.length; i++) S[i] = Math.random() * 10 - 5;
const Pt = new Float64Array(BC * BR),
  P = new Float64Array(BR * BC),
  M = new Float64Array(BR).fill(-Infinity),
  L = new Float64Array(BR);
const LOG2E = 1.4426950408889634,
  LN2_HI = 0.6931471803691238,
  LN2_LO = 1.9082149292705877e-10;
const POW2_NEG = new Float64Array(1024);
for (let k = 0; k < 1024; k++) POW2_NEG[k] = 2 ** -k;
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
// table variant: 2^(-n/32) = POW2_NEG[n>>5] * FRAC[n&31]
const FRAC = new Float64Array(32);
for (let j = 0; j < 32; j++) FRAC[j] = 2 ** (-j / 32);
const K32 = 32 / Math.LN2,
  L32_HI = LN2_HI / 32,
  L32_LO = LN2_LO / 32;
function expT(x) {
  if (x <= 0 && x > -700) {
    const n = (0.5 - x * K32) | 0; // round(-x*32/ln2) >= 0
    const r = x + n * L32_HI + n * L32_LO; // |r| <= ln2/64
    const poly = 1 + r * (1 + r * (0.5 + r * (0.16666666666666666 + r * 0.041666666666666664)));
    return poly * POW2_NEG[n >> 5] * FRAC[n & 31];
  }
  return Math.exp(x);
}
let me = 0;
for (let i = 0; i < 100000; i++) {
  const x = -Math.random() * 50;
  me = Math.max(me, Math.abs(expT(x) / Math.exp(x) - 1));
}
console.log('expT maxrel', me);
function mkRows(ex, transposed) {
  return new Function(
    'S',
    'P',
    'Pt',
    'L',
    'ex',
    'BR',
    'BC',
    'rows',
    'keys',
    `return function() {
  for (let r = 0; r < rows; r++) {
    const so = r * BC; let mx = -Infinity;
    for (let t = 0; t < keys; t++) { const x = S[so + t]; if (x > mx || x !== x) mx = x; }
    const m = mx; let sum = 0;
    for (let t = 0; t < keys; t++) { const x = ex(S[so + t] - m); sum += x; ${transposed ? 'Pt[t * BR + r] = x;' : 'P[so + t] = x;'} }
    L[r] = sum;
  }}`,
  )(S, P, Pt, L, ex, BR, BC, rows, keys);
}
function cpu() {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1000;
}
const res = {};
const variants = [
  ['fast-T', mkRows(expFast, true)],
  ['fast-R', mkRows(expFast, false)],
  ['table-T', mkRows(expT, true)],
  ['table-R', mkRows(expT, false)],
  ['Math-R', mkRows(Math.exp, false)],
];
for (let rep = 0; rep < 7; rep++)
  for (const [nm, f] of variants) {
    for (let w = 0; w < 50; w++) f();
    const reps = 1000;
    const c0 = cpu();
    for (let w = 0; w < reps; w++) f();
    const c = cpu() - c0;
    (res[nm] ??= []).push((c * 1e6) / (reps * rows * keys));
  }
for (const [k, v] of Object.entries(res)) {
  v.sort((a, b) => a - b);
  console.log(k, 'ns/elem min', v[0].toFixed(2), 'median', v[3].toFixed(2));
}
