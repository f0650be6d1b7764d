/**
 * `flashattn verify`: the conformance suite (@flashattn/conformance, SPEC §8), quick list by default,
 * against every installed and available backend; exit code 1 on any failure.
 */
import { performance } from 'node:perf_hooks';
import { type Backend, createReferenceBackend, disposeBackends } from '@flashattn/core';
import {
  BACKEND_PACKAGES,
  backendModule,
  createFunction,
  importOptional,
  loadBackendPackages,
  type OpenedBackend,
  openBackend,
  selectBackends,
} from './backends.js';
import { CliError, shortMessage } from './errors.js';
import { fmtError, makeTable } from './format.js';
import type { Io } from './io.js';
import { createProgress } from './progress.js';

/** The parts of @flashattn/conformance/cases used here. */
interface ConformanceCase {
  name: string;
  kind: string;
  tags: string[];
}
interface CaseResult {
  name: string;
  status: 'pass' | 'fail' | 'unsupported';
  message?: string;
  maxError?: number;
  bound?: number;
}
interface ConformanceModule {
  conformanceCases(options?: { quick?: boolean }): ConformanceCase[];
  runCase(
    backend: Backend,
    c: ConformanceCase,
    ctx?: { factory?: () => Promise<Backend> },
  ): Promise<CaseResult>;
}

export interface VerifyOptions {
  backend: string;
  quick: boolean;
  /** Only cases whose name contains this. */
  filter?: string;
  verbose: boolean;
  threads?: number;
  progress: boolean;
}

export interface VerifySummary {
  backend: string;
  pass: number;
  fail: number;
  unsupported: number;
  seconds: number;
  failures: CaseResult[];
  unsupportedCases: CaseResult[];
}

async function loadConformance(): Promise<ConformanceModule> {
  const r = await importOptional<Partial<ConformanceModule>>('@flashattn/conformance/cases');
  if (!r.installed) {
    throw new CliError(
      'verify needs @flashattn/conformance, which is not installed (pnpm add -D @flashattn/conformance)',
    );
  }
  const m = r.module;
  if (!m || typeof m.conformanceCases !== 'function' || typeof m.runCase !== 'function') {
    throw new CliError(
      `@flashattn/conformance could not be loaded: ${r.error ?? 'conformanceCases/runCase missing'}`,
    );
  }
  return m as ConformanceModule;
}

/** A factory for a second instance of a backend (the suite's DISPOSED case disposes one). */
function factoryFor(name: string, threads?: number): (() => Promise<Backend>) | undefined {
  if (name === 'reference') return async () => createReferenceBackend();
  const info = BACKEND_PACKAGES.find((p) => p.backend === name);
  const create = info && createFunction(info, backendModule(name));
  if (!create) return undefined;
  return async () => create(threads ? { threads } : undefined);
}

export async function verifyCommand(opts: VerifyOptions, io: Io): Promise<number> {
  const conformance = await loadConformance();
  await loadBackendPackages();
  const selection = await selectBackends(opts.backend);
  let names = selection.names;
  const notes: string[] = selection.skipped.map(
    (s) => `${s.name}: not available (${s.reason ?? 'no reason given'})`,
  );
  if (opts.backend === 'all' && names.length > 1 && names.includes('reference')) {
    // The float64 reference is the suite's yardstick; it is verified when named or when it is all there is.
    names = names.filter((n) => n !== 'reference');
    notes.push('reference: skipped (the float64 yardstick itself); name it with --backend reference');
  }
  let cases = conformance.conformanceCases({ quick: opts.quick });
  if (opts.filter) cases = cases.filter((c) => c.name.includes(opts.filter as string));
  if (cases.length === 0) throw new CliError(`no conformance case matches ${JSON.stringify(opts.filter)}`);

  io.out(`flashattn verify: ${cases.length} ${opts.quick ? 'quick ' : ''}conformance cases per backend\n`);
  const summaries: VerifySummary[] = [];
  const owned: OpenedBackend[] = [];
  const progress = createProgress(io, opts.progress);
  try {
    progress.start(cases.length * names.length, 'starting');
    for (const name of names) {
      const opened = await openBackend(name, { threads: opts.threads });
      if (opened.owned) owned.push(opened);
      const ctx = { factory: factoryFor(name, opts.threads) };
      const s: VerifySummary = {
        backend: name,
        pass: 0,
        fail: 0,
        unsupported: 0,
        seconds: 0,
        failures: [],
        unsupportedCases: [],
      };
      const t0 = performance.now();
      for (const c of cases) {
        progress.update(`${name}: ${c.name}`);
        const c0 = performance.now();
        let r: CaseResult;
        try {
          r = await conformance.runCase(opened.backend, c, ctx);
        } catch (e) {
          r = { name: c.name, status: 'fail', message: `threw: ${shortMessage(e)}` };
        }
        s[r.status]++;
        if (r.status === 'fail') s.failures.push(r);
        if (r.status === 'unsupported') s.unsupportedCases.push(r);
        if (opts.verbose && !io.errIsTTY) {
          io.out(
            `  ${r.status.padEnd(11)} ${name}: ${c.name} (${((performance.now() - c0) / 1000).toFixed(2)} s)\n`,
          );
        }
        progress.tick();
      }
      s.seconds = (performance.now() - t0) / 1000;
      summaries.push(s);
      // One line per backend as soon as it is done (a slow backend can take minutes).
      progress.stop();
      io.out(
        `${name}: ${s.pass} passed, ${s.fail} failed, ${s.unsupported} unsupported in ${s.seconds.toFixed(1)} s\n`,
      );
      if (name !== names[names.length - 1]) {
        progress.start(cases.length * names.length, 'next backend', cases.length * summaries.length);
      }
    }
  } finally {
    progress.stop();
    await Promise.all(owned.map((o) => o.backend.dispose().catch(() => {})));
    await disposeBackends();
  }

  const lines: string[] = [''];
  const table = makeTable(['backend', 'pass', 'fail', 'unsupported', 'seconds']);
  for (const s of summaries) {
    table.push([s.backend, String(s.pass), String(s.fail), String(s.unsupported), s.seconds.toFixed(1)]);
  }
  lines.push(table.toString());
  for (const s of summaries) {
    for (const f of s.failures) {
      const err =
        f.maxError !== undefined ? ` (max error ${fmtError(f.maxError)}, bound ${fmtError(f.bound)})` : '';
      lines.push(`FAIL ${s.backend}: ${f.name}: ${f.message ?? 'failed'}${err}`);
    }
    if (opts.verbose) {
      for (const u of s.unsupportedCases)
        lines.push(`unsupported ${s.backend}: ${u.name}: ${u.message ?? ''}`);
    }
  }
  for (const n of notes) lines.push(`note: ${n}`);
  const fail = summaries.reduce((n, s) => n + s.fail, 0);
  const pass = summaries.reduce((n, s) => n + s.pass, 0);
  const unsupported = summaries.reduce((n, s) => n + s.unsupported, 0);
  lines.push(`${pass} passed, ${fail} failed, ${unsupported} unsupported`);
  io.out(`${lines.join('\n')}\n`);
  return fail > 0 ? 1 : 0;
}
