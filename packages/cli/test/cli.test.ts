import { execFile } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import {
  type Backend,
  createReferenceBackend,
  type DeviceTensor,
  type HostTensor,
  registerBackend,
  type Tensor,
  unregisterBackend,
} from '@flashattn/core';
import { afterAll, describe, expect, it } from 'vitest';
import { importOptional } from '../src/backends.js';
import { loadOrt } from '../src/bench/anchors.js';
import type { BenchReport } from '../src/bench/run.js';
import type { InfoReport } from '../src/info.js';
import { bufferIo } from '../src/io.js';
import { run } from '../src/program.js';

const ort = await loadOrt();
const tmp = mkdtempSync(join(tmpdir(), 'flashattn-cli-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

async function cli(...argv: string[]) {
  const io = bufferIo();
  const code = await run(argv, io);
  return { code, stdout: io.stdout(), stderr: io.stderr() };
}

/** A user error is one line on stderr (plus commander's usage hint), never a stack trace. */
function expectNoStack(stderr: string) {
  expect(stderr).not.toMatch(/^\s+at /m);
  expect(stderr).not.toContain('internal error');
}

describe('parsing and dispatch', () => {
  it('prints help with no arguments and with --help', async () => {
    for (const argv of [[], ['--help']]) {
      const r = await cli(...argv);
      expect(r.code).toBe(0);
      expect(r.stdout).toContain('Usage: flashattn');
      for (const c of ['info', 'bench', 'verify']) expect(r.stdout).toContain(c);
    }
    const h = await cli('bench', '--help');
    expect(h.code).toBe(0);
    for (const o of [
      '--backend',
      '--shapes',
      '--dtype',
      '--threads',
      '--backward',
      '--json',
      '--anchors',
      '--repeat',
    ]) {
      expect(h.stdout).toContain(o);
    }
  });

  it('rejects unknown commands and bad option values with exit code 2', async () => {
    const cases: [string[], RegExp][] = [
      [['frobnicate'], /unknown command 'frobnicate'/],
      [['bench', '--dtype', 'float8'], /Allowed choices are float32, float16, bfloat16/],
      [['bench', '--shapes', 'huge'], /Allowed choices are quick, standard/],
      [['bench', '--threads', '0'], /--threads must be a positive integer/],
      [['bench', '--repeat', 'x'], /--repeat must be a positive integer/],
      [['bench', '--seq', '12,a'], /comma-separated list of positive integers/],
      [['bench', '--bogus'], /unknown option '--bogus'/],
    ];
    for (const [argv, message] of cases) {
      const r = await cli(...argv);
      expect(r.code, argv.join(' ')).toBe(2);
      expect(r.stderr).toMatch(message);
      expect(r.stdout).toBe('');
      expectNoStack(r.stderr);
    }
  });

  it('reports an unknown backend as a one-line FlashAttentionError, exit code 1', async () => {
    const r = await cli('bench', '--backend', 'nosuch', '--shapes', 'quick');
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/^flashattn: \[BACKEND_UNAVAILABLE\] no backend named "nosuch" is registered/);
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
    expectNoStack(r.stderr);
    const all = await cli('bench', '--backend', 'all,cpu');
    expect(all.code).toBe(2);
    expect(all.stderr).toContain('cannot be combined');
  });
});

describe('info', () => {
  it('lists the installed packages and backends with their capabilities', async () => {
    const r = await cli('info');
    expect(r.code).toBe(0);
    expect(r.stdout).toContain('@flashattn/core');
    expect(r.stdout).toMatch(/reference\s+│ 0\s+│ yes/);
    expect(r.stdout).toContain(`Node ${process.version}`);
    const j = await cli('info', '--json');
    expect(j.code).toBe(0);
    const report = JSON.parse(j.stdout) as InfoReport;
    const ref = report.backends.find((b) => b.name === 'reference');
    expect(ref?.available).toBe(true);
    expect(ref?.capabilities?.dtypes).toEqual(['float32', 'float16', 'bfloat16']);
    expect(report.machine.node).toBe(process.version);
    expect(report.machine.cores).toBeGreaterThan(0);
    for (const p of report.packages) expect(typeof p.installed).toBe('boolean');
    expect(report.auto).toBeDefined();
  });
});

describe('bench', () => {
  it('--shapes quick --backend reference: the smallest shape, checked, with --json', async () => {
    const file = join(tmp, 'bench.json');
    const r = await cli(
      'bench',
      '--shapes',
      'quick',
      '--backend',
      'reference',
      '--repeat',
      '1',
      '--warmup',
      '0',
      '--json',
      file,
    );
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/│ reference\s+│ b1 s256 h8 d64 │ no\s+│/);
    expect(r.stdout).toContain('GFLOP/s');
    expect(r.stdout).toContain('2 passed, 0 failed');
    const report = JSON.parse(readFileSync(file, 'utf8')) as BenchReport;
    expect(report.results).toHaveLength(2);
    for (const res of report.results) {
      expect(res.status).toBe('pass');
      expect(res.ms).toBeGreaterThan(0);
      expect(res.flopsPerSecond).toBeCloseTo(res.flops / (res.ms! / 1000), 3);
      expect(res.maxError).toBeLessThanOrEqual(res.bound!);
    }
    expect(report.results.map((x) => x.shape.causal)).toEqual([false, true]);
    expect(report.machine.cpuModel).toBeTruthy();
    expect(report.machine.date).toMatch(/^\d{4}-/);
    expect(report.options.repeat).toBe(1);
  });

  it('--backward, float16 and chosen lengths', async () => {
    const r = await cli(
      'bench',
      '--backend',
      'reference',
      '--seq',
      '24,40',
      '--dtype',
      'float16',
      '--backward',
      '--repeat',
      '1',
      '--warmup',
      '0',
    );
    expect(r.code, r.stdout + r.stderr).toBe(0);
    expect(r.stdout).toMatch(/│ reference\s+│ bwd\s+│ b1 s40 h8 d64/);
    expect(r.stdout).toContain('8 passed, 0 failed');
  });

  it.skipIf(!ort.ort)('--anchors adds onnxruntime-node rows and the ratio table', async () => {
    const r = await cli(
      'bench',
      '--backend',
      'reference',
      '--seq',
      '32',
      '--anchors',
      '--repeat',
      '1',
      '--warmup',
      '0',
    );
    expect(r.code, r.stderr).toBe(0);
    for (const a of ['ort-mha/1t', 'ort-mha/2t', 'ort-matmul/1t', 'ort-matmul/2t'])
      expect(r.stdout).toContain(a);
    expect(r.stdout).toContain('Speed relative to onnxruntime-node');
    expect(r.stdout).toMatch(/vs ort-mha\/1t/);
  });
});

describe('bench budget and device backends', () => {
  it('skips a shape predicted to blow the --budget, and leaves it out of the table', async () => {
    const file = join(tmp, 'skip.json');
    const r = await cli(
      'bench',
      '--backend',
      'reference',
      '--seq',
      '16,1024',
      '--budget',
      '0.05',
      '--warmup',
      '0',
      '--json',
      file,
    );
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(
      /skipped reference: 2 shapes \(b1 s1024 h8 d64; b1 s1024 h8 d64 causal\); the first: about/,
    );
    expect(r.stdout).not.toMatch(/│ reference\s+│ b1 s1024/);
    expect(r.stdout).toContain('2 passed, 0 failed, 0 unsupported, 2 skipped');
    const report = JSON.parse(readFileSync(file, 'utf8')) as BenchReport;
    expect(report.results.map((x) => x.status)).toEqual(['pass', 'pass', 'skipped', 'skipped']);
  });

  it('times a device backend on resident data and end to end, on the GPU shapes', async () => {
    // A stand-in GPU: the reference backend behind upload/download, with device tensors of its own.
    type Dev = DeviceTensor & { host: HostTensor };
    const freed: Dev[] = [];
    const uploads: Dev[] = [];
    registerBackend(
      'fakegpu',
      async () => {
        const ref = createReferenceBackend();
        const wrap = (h: HostTensor): Dev => ({
          kind: 'device',
          backend: 'fakegpu',
          dtype: h.dtype,
          shape: h.shape,
          host: h,
        });
        const un = (t: Tensor) => ((t as Dev).kind === 'device' ? (t as Dev).host : (t as HostTensor));
        const backend: Backend = {
          name: 'fakegpu',
          capabilities: ref.capabilities,
          async forward(q, k, v, options) {
            const r = await ref.forward(un(q), un(k), un(v), options);
            return ((q as Dev).kind === 'device' ? { out: wrap(r.out) } : r) as never;
          },
          backward: ref.backward as Backend['backward'],
          async upload(h) {
            const d = wrap(h);
            uploads.push(d);
            return d;
          },
          async download(t) {
            return un(t);
          },
          free(t) {
            freed.push(t as Dev);
          },
          async dispose() {},
        };
        return backend;
      },
      -1,
    );
    const file = join(tmp, 'gpu.json');
    const r = await cli(
      'bench',
      '--backend',
      'fakegpu',
      '--shapes',
      'quick',
      '--seq',
      '16',
      '--repeat',
      '2',
      '--warmup',
      '0',
      '--json',
      file,
    ).finally(() => unregisterBackend('fakegpu'));
    expect(r.code, r.stdout + r.stderr).toBe(0);
    expect(r.stdout).toContain('e2e ms');
    const report = JSON.parse(readFileSync(file, 'utf8')) as BenchReport;
    // 1024 tokens at s=16: b=64, hidden 512 = 8 heads of 64; then decode q1 k2048 h32/8 d128.
    expect(report.results.map((x) => x.label)).toEqual([
      'b64 s16 h8 d64',
      'b64 s16 h8 d64',
      'b1 q1 k2048 h32/8 d128',
    ]);
    for (const x of report.results) {
      expect(x.device).toBe(true);
      expect(x.status).toBe('pass');
      expect(x.e2eMs).toBeGreaterThan(0);
    }
    expect(report.results[2].kvBytesPerSecond).toBeGreaterThan(0);
    expect(r.stdout).toMatch(/GB\/s/);
    // Every uploaded input and every output was freed.
    for (const u of uploads) expect(freed).toContain(u);
    expect(freed.length).toBeGreaterThan(uploads.length);
  });
});

const conformance = await importOptional('@flashattn/conformance/cases');

describe('verify', () => {
  it.skipIf(!conformance.module)('--backend reference --quick passes', async () => {
    const r = await cli('verify', '--backend', 'reference', '--quick');
    expect(r.stdout).toMatch(/\d+ passed, 0 failed/);
    expect(r.code, r.stdout).toBe(0);
  });
});

describe('the built bin (dist/cli.js) as a subprocess', () => {
  const bin = fileURLToPath(new URL('../dist/cli.js', import.meta.url));
  const exec = promisify(execFile);
  const node = (...args: string[]) =>
    exec(process.execPath, [bin, ...args], { encoding: 'utf8' }).then(
      (r) => ({ code: 0, ...r }),
      (e: { code: number; stdout: string; stderr: string }) => ({
        code: e.code,
        stdout: e.stdout,
        stderr: e.stderr,
      }),
    );

  it('exists (build first: pnpm build) and starts with a hashbang', () => {
    expect(existsSync(bin), 'dist/cli.js is missing: run `pnpm build` first').toBe(true);
    expect(readFileSync(bin, 'utf8').startsWith('#!/usr/bin/env node')).toBe(true);
  });

  it('runs info and reports errors in one line with a non-zero exit', async () => {
    const info = await node('info');
    expect(info.code).toBe(0);
    expect(info.stdout).toContain('reference');
    const bad = await node('bench', '--backend', 'nosuch');
    expect(bad.code).toBe(1);
    expect(bad.stderr.trim()).toMatch(/^flashattn: \[BACKEND_UNAVAILABLE\][^\n]*$/);
    const usage = await node('bench', '--dtype', 'float64');
    expect(usage.code).toBe(2);
    expectNoStack(usage.stderr);
  });
});
