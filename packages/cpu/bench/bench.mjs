#!/usr/bin/env node
// Benchmarks of @flashattn/cpu (build first: pnpm --filter @flashattn/cpu build).
//
//   node bench/bench.mjs                       forward + backward, b=1 hq=8 d=64 s=4096, threads 1 and 2
//   node bench/bench.mjs --seq 1024 --causal   other shapes: --batch --heads --dim --seq --causal --dtype
//   node bench/bench.mjs --threads 1,2,4 --reps 7 --pass fwd
//   node bench/bench.mjs --memory              the s=65536, hq=1, d=64 forward under /usr/bin/time -v
//
// GFLOP/s = FLOPs (SPEC §9: 4·d·allowed pairs, backward 2.5×) / the median of --reps timed runs after
// one warm-up run. Wall time is what counts; process CPU time is printed too, because on a shared
// machine the two differ when other processes hold the cores.
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import os from 'node:os';
import { fileURLToPath } from 'node:url';
import { backwardFlops, forwardFlops } from '@flashattn/core';
import { createCpuBackend, sharedTensor } from '../dist/index.js';

const args = process.argv.slice(2);
function opt(name, fallback) {
  const i = args.indexOf(`--${name}`);
  if (i < 0) return fallback;
  const v = args[i + 1];
  return v === undefined || v.startsWith('--') ? true : v;
}

function fill(t, seed) {
  // xorshift32, values in [-1, 1): deterministic inputs without a second array.
  let x = seed >>> 0 || 1;
  const d = t.data;
  for (let i = 0; i < d.length; i++) {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    d[i] = x / 2147483648 - 1;
  }
  return t;
}

function tensor(dtype, shape, shared) {
  if (shared) return sharedTensor(dtype, shape);
  const n = shape.reduce((a, b) => a * b, 1);
  return { dtype, shape, data: dtype === 'float32' ? new Float32Array(n) : new Uint16Array(n) };
}

function median(xs) {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)];
}

function loadavg() {
  return os
    .loadavg()
    .map((x) => x.toFixed(1))
    .join(' ');
}

function cpuMs() {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1000;
}

async function time(fn, reps) {
  await fn(); // warm-up
  const wall = [];
  const cpu = [];
  for (let r = 0; r < reps; r++) {
    const c0 = cpuMs();
    const t0 = performance.now();
    await fn();
    wall.push(performance.now() - t0);
    cpu.push(cpuMs() - c0);
  }
  return { wall: median(wall), cpu: median(cpu), all: wall };
}

async function speed() {
  const batch = Number(opt('batch', 1));
  const heads = Number(opt('heads', 8));
  const d = Number(opt('dim', 64));
  const seq = Number(opt('seq', 4096));
  const causal = opt('causal', false) === true;
  const dtype = opt('dtype', 'float32');
  const reps = Number(opt('reps', 5));
  const threadList = String(opt('threads', '1,2')).split(',').map(Number);
  const passes = String(opt('pass', 'fwd,bwd')).split(',');
  if (dtype !== 'float32') {
    console.error('this script fills float32 inputs only');
    process.exit(2);
  }
  const shape = [batch, seq, heads, d];
  const q = fill(tensor(dtype, shape), 1);
  const k = fill(tensor(dtype, shape), 2);
  const v = fill(tensor(dtype, shape), 3);
  const dout = fill(tensor(dtype, shape), 4);
  const fshape = { batch, headsQ: heads, seqQ: seq, seqK: seq, headDim: d, causal };
  const ff = forwardFlops(fshape);
  const bf = backwardFlops(fshape);
  console.log(
    `shape b=${batch} hq=${heads} d=${d} s=${seq}${causal ? ' causal' : ''} ${dtype}; median of ${reps} after warm-up; node ${process.version}`,
  );
  const results = {};
  for (const threads of threadList) {
    const backend = createCpuBackend({ threads });
    await backend.ready();
    const { blockQ, blockK } = backend.blockSizes(d);
    const fwd = await backend.forward(q, k, v, { causal, returnLse: true });
    for (const pass of passes) {
      const run =
        pass === 'fwd'
          ? () => backend.forward(q, k, v, { causal })
          : () => backend.backward(dout, q, k, v, fwd.out, fwd.lse, { causal });
      const t = await time(run, reps);
      const flops = pass === 'fwd' ? ff : bf;
      results[`${pass}${threads}`] = flops / t.wall / 1e6;
      console.log(
        `${pass} threads=${threads} Br=${blockQ} Bc=${blockK}: ${t.wall.toFixed(1)} ms, ${(flops / t.wall / 1e6).toFixed(2)} GFLOP/s` +
          ` (process CPU ${t.cpu.toFixed(0)} ms = ${(flops / t.cpu / 1e6).toFixed(2)} GFLOP per CPU-second);` +
          ` runs ${t.all.map((x) => x.toFixed(0)).join(' ')} ms; load average ${loadavg()}`,
      );
    }
    console.log(`  ${backend.info}`);
    await backend.dispose();
  }
  if (results.fwd1 && results.fwd2)
    console.log(`forward speed-up 2 threads / 1: ${(results.fwd2 / results.fwd1).toFixed(2)}x`);
  if (results.fwd1 && results.bwd1)
    console.log(`backward / forward (1 thread): ${((100 * results.bwd1) / results.fwd1).toFixed(0)}%`);
  if (results.fwd2 && results.bwd2)
    console.log(`backward / forward (2 threads): ${((100 * results.bwd2) / results.fwd2).toFixed(0)}%`);
}

/** Child of --memory: one forward of s=65536, hq=1, d=64 (float32), then exit. */
async function memoryChild() {
  const seq = Number(opt('seq', 65536));
  const threads = Number(opt('threads', 1));
  const shared = opt('shared', false) === true;
  const shape = [1, seq, 1, 64];
  const q = fill(tensor('float32', shape, shared), 1);
  const k = fill(tensor('float32', shape, shared), 2);
  const v = fill(tensor('float32', shape, shared), 3);
  const backend = createCpuBackend({ threads });
  const t0 = performance.now();
  const { out, lse } = await backend.forward(q, k, v, { returnLse: true });
  const ms = performance.now() - t0;
  console.log(
    `child: forward s=${seq} threads=${threads}${shared ? ' (shared inputs)' : ''} in ${(ms / 1000).toFixed(1)} s, ` +
      `${(forwardFlops({ batch: 1, headsQ: 1, seqQ: seq, seqK: seq, headDim: 64 }) / ms / 1e6).toFixed(2)} GFLOP/s, out[0]=${out.data[0].toFixed(4)} lse[0]=${lse[0].toFixed(3)}`,
  );
  await backend.dispose();
}

function memory() {
  const time = '/usr/bin/time';
  if (!existsSync(time)) {
    console.error('/usr/bin/time is missing: apt-get install time');
    process.exit(2);
  }
  const seq = Number(opt('seq', 65536));
  const io = 4 * seq * 64 * 4 + 4 * seq; // q, k, v, out in float32, lse
  const budget = io + 64 * 2 ** 20;
  console.log(
    `memory: forward s=${seq}, hq=1, d=64, float32; inputs+outputs ${(io / 2 ** 20).toFixed(1)} MiB; budget ${(budget / 2 ** 20).toFixed(1)} MiB peak RSS`,
  );
  const self = fileURLToPath(import.meta.url);
  const runs = String(opt('runs', '1,2,2s'))
    .split(',')
    .map((x) => ({ threads: Number.parseInt(x, 10), shared: x.endsWith('s') }));
  for (const { threads, shared } of runs) {
    const childArgs = [self, '--memory-child', '--seq', String(seq), '--threads', String(threads)];
    if (shared) childArgs.push('--shared');
    const r = spawnSync(time, ['-v', process.execPath, ...childArgs], { encoding: 'utf8' });
    const rss =
      Number(/Maximum resident set size \(kbytes\): (\d+)/.exec(r.stderr)?.[1] ?? Number.NaN) * 1024;
    process.stdout.write(r.stdout);
    if (r.status !== 0) process.stdout.write(r.stderr);
    console.log(
      `  threads=${threads}${shared ? ' shared inputs' : ''}: peak RSS ${(rss / 2 ** 20).toFixed(1)} MiB = inputs+outputs + ${((rss - io) / 2 ** 20).toFixed(1)} MiB -> ${rss < budget ? 'within' : 'OVER'} budget`,
    );
  }
}

if (args.includes('--memory-child')) await memoryChild();
else if (args.includes('--memory')) memory();
else await speed();
