#!/usr/bin/env node
// A/B of two builds of the package in one process: a saved dist (a previous version, bundled with
// @flashattn/core external) against ../dist, forward (or backward) on one thread, interleaved, timed
// by the process's CPU time (on a shared machine that removes time-slicing, not the other load).
//   node [--experimental-wasm-relaxed-simd] bench/ab.mjs OLD_INDEX_JS [simd|relaxed] [rounds] [bwd]
// Save a version with, from the package: esbuild src/index.ts --bundle --format=esm
//   --platform=neutral --external:@flashattn/core --external:node:* --outfile=build/old/index.js
// (build/ is ignored by git, and inside the package, so that @flashattn/core resolves from there).
import { resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { tensorFromArray } from '@flashattn/core';
import { createWasmSimdBackend as newBackend } from '../dist/index.js';
import { uniformSource } from './inputs.mjs';

const [oldPath, build = 'relaxed', roundsArg = '9', mode = 'fwd'] = process.argv.slice(2);
if (!oldPath) throw new Error('usage: bench/ab.mjs OLD_INDEX_JS [simd|relaxed] [rounds] [bwd]');
const { createWasmSimdBackend: oldBackend } = await import(pathToFileURL(resolve(oldPath)).href);
const relaxed = build !== 'simd';
const rounds = Number(roundsArg);
const bwd = mode === 'bwd';
const s = 2048;
const hq = 8;
const d = 64;
const n = s * hq * d;
const rnd = uniformSource(1);
const shape = [1, s, hq, d];
const [q, k, v, dout] = [0, 1, 2, 3].map(() => tensorFromArray(rnd(n), shape));
const A = await oldBackend({ threads: 1, relaxed });
const B = await newBackend({ threads: 1, relaxed });
const o = { returnLse: true };
const flops = 4 * d * s * s * hq * (bwd ? 2.5 : 1);
const ref = await A.forward(q, k, v, o);
const run = async (be) => {
  const c = process.cpuUsage();
  if (bwd) await be.backward(dout, q, k, v, ref.out, ref.lse, o);
  else await be.forward(q, k, v, o);
  const u = process.cpuUsage(c);
  return flops / ((u.user + u.system) / 1000) / 1e6;
};
await run(A);
await run(B);
const ra = [];
const rb = [];
const rr = [];
const pk = [];
for (let r = 0; r < rounds; r++) {
  pk.push(B.peakGflops(0.2));
  const a = await run(A);
  const b = await run(B);
  ra.push(a);
  rb.push(b);
  rr.push(b / a);
}
const med = (x) => [...x].sort((a, b) => a - b)[x.length >> 1];
console.log(
  `${B.details.variant}${bwd ? ' backward' : ''}: old ${med(ra).toFixed(2)} new ${med(rb).toFixed(2)} GFLOP/s, new/old median ${med(rr).toFixed(3)} [${rr.map((x) => x.toFixed(2)).join(' ')}], peak ${med(pk).toFixed(1)} (wall), new/peak ${(med(rb) / med(pk)).toFixed(2)}`,
);
await A.dispose();
await B.dispose();
