// exp(x) for x <= 0, as the softmax needs it (PERF.md changes 3 and 5): Math.exp against a
// reduction to 2^-k (table) times a degree-8 polynomial, and against the kernel's 2^(-n/256) table
// with a degree-3 polynomial. Prints ns per element of max + exp + store over a 64×128 tile, and
// the largest relative error over 2e6 random arguments.
//
//   node bench/micro/exp-variants.mjs
const LN2_HI = 0.6931471803691238;
const LN2_LO = 1.9082149292705877e-10;
const POW2 = [];
for (let k = 0; k < 1024; k++) POW2.push(2 ** -k);
const FRAC256 = [];
for (let k = 0; k < 256; k++) FRAC256.push(2 ** (-k / 256));

function expDeg8(x) {
  if (x <= 0 && x > -700) {
    const k = (x * Math.LOG2E - 0.5) | 0;
    const r = x - k * LN2_HI - k * LN2_LO;
    const p =
      1 +
      r *
        (1 +
          r *
            (0.5 + r * (1 / 6 + r * (1 / 24 + r * (1 / 120 + r * (1 / 720 + r * (1 / 5040 + r / 40320)))))));
    return p * POW2[0 - k];
  }
  return Math.exp(x);
}

const N256 = 256 / Math.LN2;
function expT256(x) {
  if (x <= 0 && x > -700) {
    const n = (0.5 - x * N256) | 0;
    const r = x + n * (LN2_HI / 256) + n * (LN2_LO / 256);
    return (1 + r * (1 + r * (0.5 + r * 0.16666666666666666))) * POW2[n >> 8] * FRAC256[n & 255];
  }
  return Math.exp(x);
}

function make(ex) {
  const S0 = [];
  for (let i = 0; i < 64 * 128; i++) S0.push(Math.random() * 20 - 10);
  const S = S0.slice();
  return () => {
    for (let i = 0; i < S.length; i++) S[i] = S0[i];
    for (let r = 0; r < 64; r++) {
      const so = r * 128;
      let mx = Number.NEGATIVE_INFINITY;
      for (let t = 0; t < 128; t++) mx = Math.max(mx, S[so + t]);
      for (let t = 0; t < 128; t++) S[so + t] = ex(S[so + t] - mx);
    }
  };
}

function cpuMs() {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1000;
}

const variants = {
  'Math.exp': Math.exp,
  'deg8 + 2^-k': expDeg8,
  'deg3 + 2^(-k/256)': expT256,
};

// One variant per process, so that the loop's call to `ex` stays monomorphic and inlined.
const name = process.argv[2];
if (name) {
  const ex = variants[name];
  let err = 0;
  for (let i = 0; i < 2e6; i++) {
    const x = -Math.random() * (i % 2 ? 700 : 5);
    err = Math.max(err, Math.abs(ex(x) / Math.exp(x) - 1));
  }
  const f = make(ex);
  for (let w = 0; w < 50; w++) f();
  let best = Number.POSITIVE_INFINITY;
  for (let r = 0; r < 10; r++) {
    const c0 = cpuMs();
    for (let w = 0; w < 200; w++) f();
    best = Math.min(best, ((cpuMs() - c0) * 1e6) / (200 * 64 * 128));
  }
  console.log(`${name.padEnd(18)} ${best.toFixed(2)} ns/element, max relative error ${err.toExponential(1)}`);
} else {
  const { spawnSync } = await import('node:child_process');
  for (const v of Object.keys(variants))
    spawnSync(process.execPath, [process.argv[1], v], { stdio: 'inherit' });
}
