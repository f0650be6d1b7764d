/**
 * The conformance suite against the cuda backend, outside vitest (the GPU machine has no
 * node_modules): bundled by cuda-build.sh into .device/cuda-verify.mjs.
 *
 *   node .device/cuda-verify.mjs [--mode auto|generic|both] [--quick] [--filter text] [--out dir]
 *                                [--backend cuda|reference] [--jobs N] [--slice i/n] [--variant N]
 *                                [--nondeterministic]
 *
 * Runs every case of conformanceCases() through runCase, records pass / fail / unsupported, the kernel
 * each case ended on, and writes cuda-verify-<mode>.json. --jobs N runs N child processes over
 * interleaved slices of the list (the references are computed in JavaScript, the slow part).
 */
import { spawn } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  type CaseResult,
  type ConformanceCase,
  conformanceCases,
  describeSpec,
  type ProblemSpec,
  runCase,
} from '@flashattn/conformance/cases';
import { type Backend, createReferenceBackend } from '@flashattn/core';
import { createCudaBackend } from '@flashattn/cuda';

function arg(name: string, dflt: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 && i + 1 < process.argv.length ? process.argv[i + 1] : dflt;
}
const quick = process.argv.includes('--quick');
const modeArg = arg('mode', 'both');
const filter = arg('filter', '');
const outDir = arg('out', 'test-output');
const which = arg('backend', 'cuda');
const jobs = Number(arg('jobs', '1'));
const slice = arg('slice', '');
// --clones: also every float32 forward/backward case re-run in bfloat16 and float16 (the tensor-core
// kernels see every feature that way); reported apart from the suite's own counts.
const clones = process.argv.includes('--clones');
// --variant N: a tuning variant's kernels (builds made with FLASHATTN_CUDA_TUNE=1), so that a candidate
// is checked before it becomes the default; written to cuda-verify-<mode>-vN.json.
const variant = Number(arg('variant', '0'));
// --nondeterministic: the backend made with `deterministic: false` (the opt-in unordered backward; the
// harness then holds its gradients to the tolerances only); written to cuda-verify-<mode>-nd.json.
const nondeterministic = process.argv.includes('--nondeterministic');

interface Row extends CaseResult {
  kernel?: string;
  ms: number;
}

async function makeBackend(mode: string): Promise<Backend> {
  if (which === 'reference') return createReferenceBackend();
  return createCudaBackend({ forceGeneric: mode === 'generic', variant, deterministic: !nondeterministic });
}

function caseList(): ConformanceCase[] {
  const base = conformanceCases({ quick });
  if (!clones) return base;
  const extra: ConformanceCase[] = [];
  for (const c of base) {
    if ((c.kind !== 'forward' && c.kind !== 'backward') || !c.spec || c.spec.dtype !== 'float32') continue;
    for (const dtype of ['bfloat16', 'float16'] as const) {
      extra.push({
        ...c,
        name: `${c.name} [clone as ${dtype}]`,
        tags: [...c.tags, 'clone'],
        spec: { ...c.spec, dtype },
      });
    }
  }
  return [...base, ...extra, ...decodeCases()];
}

// Split-KV decode shapes long enough for the tensor-core decode kernel to split (the suite's own
// cases are too short for most of its paths): GQA/MQA packing, sq > 1 with causal and window masks,
// key padding, paged KV, head dims below the tile's 128, lse. Reported apart, with the clones.
function decodeCases(): ConformanceCase[] {
  const specs: Array<Partial<ProblemSpec>> = [
    {
      batch: 2,
      sq: 1,
      sk: 3000,
      hq: 8,
      hk: 2,
      d: 128,
      dtype: 'bfloat16',
      seqlensK: [3000, 1777],
      lse: 'always',
    },
    { batch: 1, sq: 1, sk: 4096, hq: 32, hk: 4, d: 64, dtype: 'float16' },
    { batch: 1, sq: 1, sk: 2500, hq: 16, hk: 1, d: 128, dtype: 'bfloat16', lse: 'always' },
    { batch: 1, sq: 4, sk: 2048, hq: 8, hk: 2, d: 128, dtype: 'bfloat16', causal: true, lse: 'always' },
    { batch: 1, sq: 2, sk: 3001, hq: 4, hk: 1, d: 96, dtype: 'float16', window: [700, 0] },
    {
      batch: 2,
      sq: 1,
      sk: 2600,
      hq: 16,
      hk: 4,
      d: 128,
      dtype: 'float16',
      paged: { pageSize: 64, extraPages: 3 },
      seqlensK: [2600, 901],
    },
    { batch: 3, sq: 1, sk: 1500, hq: 4, hk: 4, d: 40, dtype: 'bfloat16', seqlensK: [1500, 0, 333] },
  ];
  return specs.map((over, n) => {
    const sp = { batch: 1, sq: 1, sk: 1000, hq: 4, hk: 1, d: 128, dtype: 'float32', seed: 9100 + n, ...over };
    return {
      name: `forward · decode #${n + 1} [decode] · ${describeSpec(sp as ProblemSpec)}`,
      kind: 'forward',
      tags: ['decode'],
      spec: sp,
    } as ConformanceCase;
  });
}

async function runSlice(mode: string, idx: number, n: number): Promise<Row[]> {
  const cases = caseList().filter((c, i) => c.name.includes(filter) && i % n === idx);
  const backend = await makeBackend(mode);
  const rows: Row[] = [];
  for (const c of cases) {
    const t0 = performance.now();
    let r: CaseResult;
    try {
      r = await runCase(backend, c, { factory: () => makeBackend(mode) });
    } catch (e) {
      r = { name: c.name, status: 'fail', message: `runCase threw: ${(e as Error).stack ?? e}` };
    }
    const kernel = (backend as { lastPlan?: { kernel: string } | null }).lastPlan?.kernel;
    rows.push({ ...r, kernel, ms: Math.round(performance.now() - t0) });
  }
  await backend.dispose();
  return rows;
}

async function runMode(mode: string): Promise<Row[]> {
  if (jobs <= 1) return runSlice(mode, 0, 1);
  const self = fileURLToPath(import.meta.url);
  const parts = await Promise.all(
    Array.from(
      { length: jobs },
      (_, i) =>
        new Promise<Row[]>((resolve, reject) => {
          const args = [
            self,
            '--mode',
            mode,
            '--slice',
            `${i}/${jobs}`,
            '--backend',
            which,
            '--filter',
            filter,
          ];
          if (quick) args.push('--quick');
          if (clones) args.push('--clones');
          if (variant) args.push('--variant', String(variant));
          if (nondeterministic) args.push('--nondeterministic');
          const child = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'inherit'] });
          let text = '';
          child.stdout.on('data', (b) => {
            text += b;
          });
          child.on('error', reject);
          child.on('close', (code) => {
            const line = text.split('\n').find((l) => l.startsWith('SLICE '));
            if (!line) reject(new Error(`slice ${i} exited ${code} without results:\n${text.slice(-2000)}`));
            else resolve(JSON.parse(line.slice(6)) as Row[]);
          });
        }),
    ),
  );
  return parts.flat();
}

function summarise(mode: string, all: Row[], seconds: number): string {
  const rows = all.filter((r) => !r.name.includes('[clone as ') && !r.name.includes('[decode]'));
  const cloned = all.filter((r) => r.name.includes('[clone as '));
  const decode = all.filter((r) => r.name.includes('[decode]'));
  const count = (s: string, list = rows) => list.filter((r) => r.status === s).length;
  const kernels = new Map<string, number>();
  for (const r of rows) if (r.kernel) kernels.set(r.kernel, (kernels.get(r.kernel) ?? 0) + 1);
  const lines = [
    `cuda conformance (${mode}${quick ? ', quick' : ''}): ${count('pass')} pass, ${count('fail')} fail, ${count('unsupported')} unsupported of ${rows.length} cases in ${seconds.toFixed(0)} s; last kernel per case: ${[...kernels].map(([k, n]) => `${k} ${n}`).join(', ')}`,
  ];
  if (cloned.length) {
    lines.push(
      `  clones (float32 cases re-run in bfloat16 / float16): ${count('pass', cloned)} pass, ${count('fail', cloned)} fail, ${count('unsupported', cloned)} unsupported of ${cloned.length}`,
    );
  }
  if (decode.length) {
    lines.push(
      `  long decode cases (16-bit): ${count('pass', decode)} pass, ${count('fail', decode)} fail, ${count('unsupported', decode)} unsupported of ${decode.length}; kernels ${decode.map((r) => r.kernel ?? '-').join(' ')}`,
    );
  }
  for (const r of all.filter((x) => x.status !== 'pass')) {
    lines.push(
      `  ${r.status.toUpperCase()} ${r.name} [${r.kernel ?? '-'}]: ${(r.message ?? '').slice(0, 400)}`,
    );
  }
  return lines.join('\n');
}

async function main(): Promise<void> {
  if (slice) {
    const [i, n] = slice.split('/').map(Number);
    const rows = await runSlice(modeArg, i, n);
    process.stdout.write(`SLICE ${JSON.stringify(rows)}\n`);
    return;
  }
  mkdirSync(outDir, { recursive: true });
  const modes = modeArg === 'both' ? ['auto', 'generic'] : [modeArg];
  const summaries: string[] = [];
  for (const mode of modes) {
    const t0 = performance.now();
    const rows = await runMode(mode);
    const seconds = (performance.now() - t0) / 1000;
    rows.sort((a, b) => a.name.localeCompare(b.name));
    writeFileSync(
      path.join(
        outDir,
        `cuda-verify-${mode}${variant ? `-v${variant}` : ''}${nondeterministic ? '-nd' : ''}.json`,
      ),
      JSON.stringify({ mode, quick, seconds, rows }, null, 1),
    );
    const s = summarise(mode, rows, seconds);
    console.log(s);
    summaries.push(s.split('\n')[0]);
  }
  console.log(summaries.join('\n'));
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
