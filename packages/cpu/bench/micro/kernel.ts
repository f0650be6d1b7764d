// The kernels alone, in the calling thread, on src (not dist): forward or backward of b=1, hq=8,
// s, d = 64 with chosen tiles and forward units; best and median GFLOP per CPU-second of `reps`
// runs. Used for the sweeps and profiles of PERF.md. Bundle it first (from packages/cpu):
//
//   pnpm exec esbuild bench/micro/kernel.ts --bundle --platform=node --format=esm --outfile=/tmp/kernel.mjs
//   UNITS=4 node /tmp/kernel.mjs 1024 64 128 64 fwd 6      # s Br Bc d pass reps
//   node --cpu-prof /tmp/kernel.mjs 1024 64 128 64 bwd 3
import { resolveProblem } from '@flashattn/core';
import { computeD } from '../../src/backward.js';
import { backwardItems, forwardItems } from '../../src/job.js';
import { runAll } from '../../src/run.js';
import { Scratch } from '../../src/scratch.js';

const s = Number(process.argv[2] ?? 1024),
  h = 8,
  d = Number(process.argv[5] ?? 64);
const Br = Number(process.argv[3] ?? 64),
  Bc = Number(process.argv[4] ?? 128);
const pass = process.argv[6] ?? 'fwd';
const reps = Number(process.argv[7] ?? 8);
const n = s * h * d;
let seed = 1;
const rnd = () => {
  seed = (seed * 1103515245 + 12345) >>> 0;
  return (seed / 2 ** 32) * 2 - 1;
};
const mk = () => {
  const a = new Float32Array(n);
  for (let i = 0; i < n; i++) a[i] = rnd();
  return { dtype: 'float32' as const, shape: [1, s, h, d], data: a };
};
const q = mk(),
  k = mk(),
  v = mk(),
  dout = mk();
const p = resolveProblem(q, k, v, {});
const sc = new Scratch();
const out = new Float32Array(n),
  lse = new Float32Array(h * s);
const fjob = {
  kind: 'forward' as const,
  p,
  q: q.data,
  k: k.data,
  v: v.data,
  out,
  lse,
  blockQ: Br,
  blockK: Bc,
  items: forwardItems(p, Br, Number(process.env.UNITS ?? 4)).items,
};
runAll(fjob, sc);
const D = new Float64Array(h * s);
computeD(p, dout.data, out, D, sc);
const bjob = {
  kind: 'backward' as const,
  p,
  q: q.data,
  k: k.data,
  v: v.data,
  dout: dout.data,
  lse,
  D,
  dq: new Float32Array(n),
  dk: new Float32Array(n),
  dv: new Float32Array(n),
  dkAcc: null,
  dvAcc: null,
  blockQ: Br,
  blockK: Bc,
  items: backwardItems(p, Br, Bc, false),
};
const cpu = () => {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1000;
};
const flops = (pass === 'fwd' ? 4 : 10) * d * s * s * h;
const res: number[] = [];
for (let r = 0; r < reps; r++) {
  const c0 = cpu();
  runAll(pass === 'fwd' ? fjob : bjob, sc);
  res.push(flops / (cpu() - c0) / 1e6);
}
res.sort((a, b) => b - a);
console.log(
  `${pass} s=${s} d=${d} Br=${Br} Bc=${Bc}: best ${res[0].toFixed(2)} median ${res[res.length >> 1].toFixed(2)} GF/s (cpu time)`,
);
