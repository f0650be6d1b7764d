/**
 * The GPU run of @flashattn/webgpu (issue 4): conformance (quick list) on the adapter, then the anchors
 * (tiled WGSL matmul, copy bandwidth, plain three-pass attention) and the kernels at the SPEC §9 shapes,
 * all in one process on one device. Bundled by bench/bundle.mjs into one file with every dependency
 * inlined except `webgpu`, which is loaded from node_modules next to it.
 *
 *   node bench.mjs [--out DIR] [--conformance-seconds N] [--quick] [--no-forward] [--decode-variants]
 *                  [--forward-variants [JSON list of ForwardTuning]] [--variant-seqs 512,1024]
 *                  [--variant-rounds N]
 */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { conformanceCases, runCase } from '@flashattn/conformance/cases';
import { type AttentionOptions, type DeviceTensor, fromFloat32 } from '@flashattn/core';
import {
  createWebGPUBackend,
  type DecodeTuning,
  type ForwardTuning,
  type WebGPUBackend,
  type WebGPUBackendOptions,
} from '../src/index.js';
import { copyGBps, matmulTflops, shaderCopyGBps, threePass } from './anchors.js';

const args = process.argv.slice(2);
const arg = (name: string, dflt: string) => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? args[i + 1] : dflt;
};
const outDir = arg('out', process.env.OUT ?? '.');
const confSeconds = Number(arg('conformance-seconds', '150'));
const quick = args.includes('--quick');
const smoke = args.includes('--smoke');
const results: Record<string, unknown> = { date: new Date().toISOString() };
const log = (...x: unknown[]) => console.log(...x);

function randomHost(shape: number[], seed: number) {
  const n = shape.reduce((a, b) => a * b, 1);
  const a = new Float32Array(n);
  let s = seed >>> 0;
  for (let i = 0; i < n; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    a[i] = (s / 2 ** 32 - 0.5) * 2;
  }
  return fromFloat32(a, 'float32', shape);
}

async function conformance(be: WebGPUBackend) {
  const t0 = performance.now();
  const counts = { pass: 0, fail: 0, unsupported: 0, skipped: 0 };
  const failures: string[] = [];
  for (const c of conformanceCases({ quick: true })) {
    if ((performance.now() - t0) / 1000 > confSeconds) {
      counts.skipped++;
      continue;
    }
    const r = await runCase(be, c, { factory: () => createWebGPUBackend() });
    counts[r.status]++;
    if (r.status === 'fail') failures.push(`${r.name}: ${r.message}`);
  }
  log(`conformance (quick): ${JSON.stringify(counts)} in ${((performance.now() - t0) / 1000).toFixed(0)} s`);
  for (const f of failures.slice(0, 20)) log(`  FAIL ${f.slice(0, 400)}`);
  results.conformance = { ...counts, failures };
}

function pairs(b: number, s: number, hq: number, causal: boolean): number {
  // allowed (i, j) pairs, sq = sk = s, bottom-right aligned (off = 0)
  return b * hq * (causal ? (s * (s + 1)) / 2 : s * s);
}

async function main() {
  let be = await createWebGPUBackend();
  try {
    const t = randomHost([1, 100, 2, 64], 9);
    await be.forward(t, t, t, { causal: true });
  } catch (e) {
    log(`subgroup path failed (${String(e).slice(0, 300)}); continuing without subgroups`);
    await be.dispose();
    be = await createWebGPUBackend({ subgroups: false });
  }
  const device = await be.gpuDevice();
  log(`adapter: ${be.info}`);
  const L = device.limits;
  results.adapter = be.adapterInfo;
  results.limits = {
    maxComputeWorkgroupStorageSize: L.maxComputeWorkgroupStorageSize,
    maxStorageBufferBindingSize: L.maxStorageBufferBindingSize,
    maxBufferSize: L.maxBufferSize,
  };
  if (!args.includes('--no-conformance')) await conformance(be);

  const mm = await matmulTflops(device, smoke ? 512 : 4096);
  const copyB2B = await copyGBps(device, smoke ? 1 << 24 : 1 << 30);
  const copyShader = await shaderCopyGBps(device, smoke ? 1 << 24 : 1 << 30);
  const copy = Math.max(copyB2B, copyShader);
  log(
    `anchor matmul f32 ${mm.n}^3: ${mm.tflops.toFixed(2)} TFLOP/s; copy (read+write): copyBufferToBuffer ${copyB2B.toFixed(0)} GB/s, WGSL vec4 copy ${copyShader.toFixed(0)} GB/s`,
  );
  results.anchors = {
    matmulTflops: mm.tflops,
    copyGBps: copy,
    copyBufferToBufferGBps: copyB2B,
    shaderCopyGBps: copyShader,
  };

  const fwd: Record<string, unknown>[] = [];
  const seqs = smoke ? [256] : quick ? [1024, 4096] : [512, 1024, 2048, 4096, 8192, 16384];
  for (const d of smoke || args.includes('--no-forward') ? [] : [64, 128]) {
    for (const s of seqs) {
      const b = smoke ? 1 : 16384 / s;
      const hq = smoke ? 2 : 2048 / d;
      const q = (await be.upload(randomHost([b, s, hq, d], 1))) as DeviceTensor;
      const k = (await be.upload(randomHost([b, s, hq, d], 2))) as DeviceTensor;
      const v = (await be.upload(randomHost([b, s, hq, d], 3))) as DeviceTensor;
      for (const causal of [false, true]) {
        const opts: AttentionOptions = { causal };
        const flops = 4 * d * pairs(b, s, hq, causal);
        const reps = Math.max(2, Math.min(20, Math.round(2e12 / flops)));
        // Median of 7: a shape's calls fall into two modes a few % apart (PERF.md, run 7), and the
        // median of 3 picked either.
        const times: number[] = [];
        for (let r = 0; r < 7; r++) times.push(await be.timeForward(q, k, v, opts, reps));
        times.sort((x, y) => x - y);
        const t = times[3];
        const row: Record<string, unknown> = {
          d,
          s,
          b,
          hq,
          causal,
          ms: t * 1e3,
          tflops: flops / t / 1e12,
          minMs: times[0] * 1e3,
        };
        row.pctMatmul = (100 * (row.tflops as number)) / mm.tflops;
        if (s <= 4096 || !quick) {
          const dout = (await be.upload(randomHost([b, s, hq, d], 4))) as DeviceTensor;
          const f = await be.forward(q, k, v, { ...opts, returnLse: true });
          const bt: number[] = [];
          const breps = Math.max(1, Math.round(reps / 2));
          for (let r = 0; r < 3; r++)
            bt.push(await be.timeBackward(dout, q, k, v, f.out, f.lse as DeviceTensor, opts, breps));
          bt.sort((x, y) => x - y);
          row.bwdMs = bt[1] * 1e3;
          row.bwdTflops = (2.5 * flops) / bt[1] / 1e12;
          row.bwdPctFwd = (100 * (row.bwdTflops as number)) / (row.tflops as number);
          for (const x of [dout, f.out, f.lse as DeviceTensor]) be.free(x);
        }
        log(
          `fwd d=${d} s=${s} causal=${causal}: ${(t * 1e3).toFixed(2)} ms ${(row.tflops as number).toFixed(2)} TFLOP/s (${(row.pctMatmul as number).toFixed(0)}% of matmul)` +
            (row.bwdTflops
              ? `; bwd ${(row.bwdTflops as number).toFixed(2)} TFLOP/s (${(row.bwdPctFwd as number).toFixed(0)}% of fwd)`
              : ''),
        );
        fwd.push(row);
      }
      if (s === 4096 && d === 128) {
        const tp = await threePass(device, b, s, hq, d);
        const fl = fwd.find((r) => r.d === d && r.s === s && r.causal === false) as { ms: number };
        results.threePass4096 = {
          ...tp,
          flashMs: fl.ms,
          speedup: 'seconds' in tp ? (tp.seconds * 1e3) / fl.ms : null,
        };
        log(`three-pass s=4096 d=128: ${JSON.stringify(results.threePass4096)}`);
      }
      if (s === 16384 && d === 128) {
        const tp = await threePass(device, b, s, hq, d);
        results.threePass16384 = tp;
        log(`three-pass s=16384 d=128: ${JSON.stringify(tp)}`);
      }
      for (const x of [q, k, v]) be.free(x);
    }
  }
  results.forward = fwd;
  if (!smoke && !quick && !args.includes('--no-forward')) {
    // Past s = 16384 one head's S (s² · 4 bytes) outgrows a 2 GiB storage binding: the three-pass cannot
    // run at all, while the fused kernel's memory stays O(s · d).
    const b = 1;
    const s = 32768;
    const hq = 16;
    const d = 128;
    const tp = await threePass(device, b, s, hq, d);
    const q = (await be.upload(randomHost([b, s, hq, d], 1))) as DeviceTensor;
    const k = (await be.upload(randomHost([b, s, hq, d], 2))) as DeviceTensor;
    const v = (await be.upload(randomHost([b, s, hq, d], 3))) as DeviceTensor;
    const t = await be.timeForward(q, k, v, {}, 1);
    const flops = 4 * d * pairs(b, s, hq, false);
    results.longSeq = { b, s, hq, d, flashMs: t * 1e3, flashTflops: flops / t / 1e12, threePass: tp };
    log(
      `s=32768 d=128: flash ${(t * 1e3).toFixed(1)} ms (${(flops / t / 1e12).toFixed(2)} TFLOP/s); three-pass: ${JSON.stringify(tp)}`,
    );
    for (const x of [q, k, v]) be.free(x);
  }
  if (be.adapterInfo.subgroups && !smoke && !args.includes('--no-forward')) {
    // The forward's row max through workgroup memory (the default) against subgroup shuffles, like for
    // like: each on a fresh device, distinct q, k, v, the same shapes, alternated twice.
    const cmp: Record<string, unknown>[] = [];
    for (const round of [0, 1]) {
      for (const forwardSubgroups of [false, true]) {
        const sg = await createWebGPUBackend({ forwardSubgroups });
        for (const d of [64, 128]) {
          const b = 4;
          const s = 4096;
          const hq = 2048 / d;
          const q = (await sg.upload(randomHost([b, s, hq, d], 1))) as DeviceTensor;
          const k = (await sg.upload(randomHost([b, s, hq, d], 2))) as DeviceTensor;
          const v = (await sg.upload(randomHost([b, s, hq, d], 3))) as DeviceTensor;
          const times: number[] = [];
          for (let r = 0; r < 3; r++) times.push(await sg.timeForward(q, k, v, {}, 4));
          times.sort((x, y) => x - y);
          const row = { round, forwardSubgroups, d, s, tflops: (4 * d * s * s * b * hq) / times[1] / 1e12 };
          log(`row max via ${forwardSubgroups ? 'shuffles' : 'workgroup memory'}: ${JSON.stringify(row)}`);
          cmp.push(row);
          for (const x of [q, k, v]) sg.free(x);
        }
        await sg.dispose();
      }
    }
    results.rowMaxComparison = cmp;
  }

  if (args.includes('--forward-variants')) await forwardVariants();

  const dec: Record<string, unknown>[] = [];
  for (const sk of smoke ? [1024] : [4096, 32768, 131072]) {
    const b = 1;
    const hq = smoke ? 4 : 32;
    const hk = smoke ? 1 : 8;
    const d = smoke ? 64 : 128;
    const q = (await be.upload(randomHost([b, 1, hq, d], 5))) as DeviceTensor;
    const k = (await be.upload(randomHost([b, sk, hk, d], 6))) as DeviceTensor;
    const v = (await be.upload(randomHost([b, sk, hk, d], 7))) as DeviceTensor;
    const times: number[] = [];
    for (let r = 0; r < 3; r++) times.push(await be.timeForward(q, k, v, {}, 20));
    times.sort((x, y) => x - y);
    const t = times[1];
    const bytes = 2 * b * sk * hk * d * 4;
    const row = { sk, us: t * 1e6, GBps: bytes / t / 1e9, pctCopy: (100 * bytes) / t / 1e9 / copy };
    log(
      `decode sk=${sk}: ${row.us.toFixed(1)} us, ${row.GBps.toFixed(0)} GB/s of K+V (${row.pctCopy.toFixed(0)}% of copy)`,
    );
    dec.push(row);
    for (const x of [q, k, v]) be.free(x);
  }
  results.decode = dec;
  if (args.includes('--decode-variants')) {
    // Decode tunings × target workgroup counts at the issue's shape. The backend reads its options object
    // on every call, so one upload serves every workgroup count of a tuning.
    const variants: Record<string, unknown>[] = [];
    const tunings: DecodeTuning[] = [
      {},
      { prefetch: false, keysPerPass: 2 },
      { keysPerPass: 2 },
      { laneColumns: 8 },
    ];
    for (const sk of [32768, 131072]) {
      for (const [ti, tuning] of tunings.entries()) {
        if (sk > 32768 && ti > 1) continue;
        const opts: WebGPUBackendOptions = { decode: { ...tuning } };
        const vb = await createWebGPUBackend(opts);
        const q = (await vb.upload(randomHost([1, 1, 32, 128], 5))) as DeviceTensor;
        const k = (await vb.upload(randomHost([1, sk, 8, 128], 6))) as DeviceTensor;
        const v = (await vb.upload(randomHost([1, sk, 8, 128], 7))) as DeviceTensor;
        for (const wgs of [128, 256, 512, 1024]) {
          opts.decode = { ...tuning, workgroups: wgs };
          const times: number[] = [];
          for (let r = 0; r < 3; r++) times.push(await vb.timeForward(q, k, v, {}, 20));
          times.sort((x, y) => x - y);
          const bytes = 2 * sk * 8 * 128 * 4;
          const row = {
            sk,
            ...opts.decode,
            us: times[1] * 1e6,
            GBps: bytes / times[1] / 1e9,
            pctCopy: (100 * bytes) / times[1] / 1e9 / copy,
          };
          log(
            `decode variant sk=${sk} ${JSON.stringify(opts.decode)}: ${row.us.toFixed(1)} us, ${row.GBps.toFixed(0)} GB/s (${row.pctCopy.toFixed(0)}% of copy)`,
          );
          variants.push(row);
        }
        await vb.dispose();
      }
    }
    results.decodeVariants = variants;
  }
  writeFileSync(join(outDir, 'webgpu-bench.json'), JSON.stringify(results, null, 2));
  await be.dispose();
  log('done');
  process.exit(0);
}

/**
 * Forward kernel variants (ForwardTuning) like for like: one fresh device, each shape's inputs uploaded
 * once, the variants' timings interleaved (v1, v2, …, v1, v2, …; three rounds, median each). The
 * backend reads its options object on every call, so changing `forward` switches the pipeline.
 */
async function forwardVariants() {
  const next = args[args.indexOf('--forward-variants') + 1];
  const tunings: ForwardTuning[] = next?.startsWith('[')
    ? JSON.parse(next)
    : [
        { prefetch: false, rows: 4 },
        { prefetch: true, rows: 4 },
        { prefetch: false, rows: 8 },
        { prefetch: true, rows: 8 },
      ];
  const opts: WebGPUBackendOptions = {};
  const vb = await createWebGPUBackend(opts);
  const mm = await matmulTflops(await vb.gpuDevice(), 4096);
  log(`variants device: matmul anchor ${mm.tflops.toFixed(2)} TFLOP/s`);
  const rows: Record<string, unknown>[] = [];
  const seqs = args.includes('--variant-seqs')
    ? arg('variant-seqs', '').split(',').map(Number)
    : quick
      ? [512, 4096]
      : [512, 1024, 2048, 4096, 8192, 16384];
  // The small causal shapes move by up to ±10% between sections of one run: more rounds there.
  const rounds = Number(arg('variant-rounds', '3'));
  for (const d of [64, 128]) {
    for (const s of seqs) {
      const b = 16384 / s;
      const hq = 2048 / d;
      const q = (await vb.upload(randomHost([b, s, hq, d], 11))) as DeviceTensor;
      const k = (await vb.upload(randomHost([b, s, hq, d], 12))) as DeviceTensor;
      const v = (await vb.upload(randomHost([b, s, hq, d], 13))) as DeviceTensor;
      for (const causal of [false, true]) {
        const flops = 4 * d * pairs(b, s, hq, causal);
        const reps = Math.max(2, Math.min(20, Math.round(2e12 / flops)));
        const times: number[][] = tunings.map(() => []);
        for (let round = 0; round < rounds; round++) {
          for (const [i, t] of tunings.entries()) {
            opts.forward = t;
            times[i].push(await vb.timeForward(q, k, v, { causal }, reps));
          }
        }
        const line = tunings.map((t, i) => {
          const med = times[i].sort((x, y) => x - y)[rounds >> 1];
          const tflops = flops / med / 1e12;
          rows.push({
            d,
            s,
            causal,
            ...t,
            ms: med * 1e3,
            tflops,
            pctMatmul: (100 * tflops) / mm.tflops,
            allMs: times[i].map((x) => x * 1e3),
          });
          return `${tflops.toFixed(2)}`;
        });
        log(`variants d=${d} s=${s} causal=${causal}: ${line.join(' | ')} TFLOP/s`);
      }
      for (const x of [q, k, v]) vb.free(x);
    }
  }
  log(`variants: ${tunings.map((t, i) => `[${i}] ${JSON.stringify(t)}`).join('  ')}`);
  results.forwardVariants = { matmulTflops: mm.tflops, tunings, rows };
  await vb.dispose();
}

main().catch((e) => {
  console.error(e);
  writeFileSync(
    join(outDir, 'webgpu-bench.json'),
    JSON.stringify({ ...results, error: String(e?.stack ?? e) }, null, 2),
  );
  process.exit(1);
});
