/**
 * `flashattn bench`: the SPEC §9 shapes on the chosen backends (and onnxruntime-node anchors), each
 * result timed (warm-up, then the median of N runs) and checked on sampled rows against float64.
 */
import { writeFileSync } from 'node:fs';
import { performance } from 'node:perf_hooks';
import {
  type Backend,
  type Capabilities,
  type DType,
  disposeBackends,
  type HostTensor,
  type Tensor,
} from '@flashattn/core';
import {
  isDeviceBackend,
  loadBackendPackages,
  noteOf,
  type OpenedBackend,
  openBackend,
  packageVersion,
  selectBackends,
} from '../backends.js';
import { shortMessage } from '../errors.js';
import type { Io } from '../io.js';
import { type MachineInfo, machineInfo } from '../machine.js';
import { createProgress } from '../progress.js';
import {
  ANCHOR_VARIANTS,
  AnchorRunner,
  type AnchorVariant,
  anchorName,
  anchorUnsupported,
  loadOrt,
} from './anchors.js';
import { type CheckResult, RowReference, sampleRows } from './check.js';
import { type BenchInputs, clearInputCache, makeDout, makeInputs } from './data.js';
import { renderBench } from './report.js';
import {
  type BenchShape,
  cpuShapes,
  gpuShapes,
  kvBytes,
  type ShapeSetName,
  shapeFlops,
  shapeKey,
  shapeLabel,
} from './shapes.js';
import { median, timeRuns } from './timing.js';

export interface BenchOptions {
  /** 'auto', 'all' or a comma-separated list of backend names. */
  backend: string;
  shapes: ShapeSetName;
  dtype: DType;
  threads?: number;
  backward: boolean;
  json?: string;
  anchors: boolean;
  /** Timed runs per result (median reported); default 3 for quick, 5 for standard. */
  repeat?: number;
  warmup: number;
  /** Replaces the prefill sequence lengths of the shape set. */
  seq?: number[];
  /** Query rows checked against the float64 reference per result. */
  rows: number;
  /**
   * Seconds of timed runs per result: timing stops once they are spent (after one run at least), and a
   * shape whose one run is predicted (from the backend's best rate so far) to take over twice this is skipped.
   * Default 1.5 for quick, 30 for standard; 0 = no limit.
   */
  budget?: number;
  /** Draw the progress bar (when stderr is a terminal). */
  progress: boolean;
}

export type BenchPass = 'forward' | 'backward';
export type BenchStatus = 'pass' | 'fail' | 'error' | 'unsupported' | 'skipped';

export interface BenchResult {
  /** Backend name, or the anchor's ("ort-mha/1t"). */
  backend: string;
  anchor: boolean;
  threads?: number;
  device: boolean;
  pass: BenchPass;
  shape: BenchShape;
  label: string;
  dtype: DType;
  status: BenchStatus;
  message?: string;
  /** FLOPs of SPEC §9 (4·d·allowed pairs; backward 2.5×). */
  flops: number;
  /** Median of the timed runs (device-resident data for device backends). */
  ms?: number;
  samples?: number[];
  /** Device backends: host tensors in, host tensors out. */
  e2eMs?: number;
  flopsPerSecond?: number;
  /** Decode shapes: bytes of K and V read per second. */
  kvBytesPerSecond?: number;
  maxError?: number;
  bound?: number;
  checkedRows?: number;
}

export interface BenchReport {
  tool: 'flashattn bench';
  version?: string;
  machine: MachineInfo;
  options: Omit<BenchOptions, 'progress'> & { repeat: number; budget: number };
  backends: { name: string; threads?: number; device: boolean; note?: string; capabilities: Capabilities }[];
  notes: string[];
  anchors?: { package: 'onnxruntime-node'; version?: string; error?: string };
  results: BenchResult[];
}

/** Why a backend cannot run this benchmark, from its capabilities, or undefined. */
export function capabilityGap(
  caps: Capabilities,
  shape: BenchShape,
  dtype: DType,
  pass: BenchPass,
): string | undefined {
  if (!caps.dtypes.includes(dtype)) return `no ${dtype}`;
  if (shape.d > caps.maxHeadDim) return `head dim ${shape.d} > ${caps.maxHeadDim}`;
  if (shape.causal && !caps.features.includes('causal')) return 'no causal';
  if (shape.hq !== shape.hk && !caps.features.includes('gqa')) return 'no gqa';
  if (pass === 'backward' && !caps.features.includes('backward')) return 'no backward';
  if (pass === 'backward' && !caps.features.includes('lse')) return 'no lse (backward needs it)';
  return undefined;
}

/** Waits for queued device work where the backend offers a way to (duck-typed). */
async function sync(backend: Backend): Promise<void> {
  const b = backend as unknown as { synchronize?: () => unknown; sync?: () => unknown };
  if (typeof b.synchronize === 'function') await b.synchronize();
  else if (typeof b.sync === 'function') await b.sync();
}

/** A shape's inputs and row references, made once for all the backends that run it. */
interface Prepared {
  inputs: BenchInputs;
  ref: RowReference;
  dout: () => HostTensor;
}

interface Planned {
  shape: BenchShape;
  runs: { opened: OpenedBackend; pass: BenchPass }[];
  anchors: boolean;
}

function freeAll(backend: Backend, ...ts: unknown[]): void {
  if (typeof backend.free !== 'function') return;
  for (const t of ts) {
    if (t && typeof t === 'object' && (t as { kind?: string }).kind === 'device') {
      try {
        backend.free(t as Tensor);
      } catch {
        // Freeing is best effort.
      }
    }
  }
}

class BenchRunner {
  /** Seconds per FLOP of each backend's fastest result so far, per shape kind and pass: predicts the next. */
  private readonly rates = new Map<string, number>();

  constructor(
    private readonly opts: BenchOptions,
    private readonly repeat: number,
    private readonly budget: number,
  ) {}

  private get timing() {
    return { warmup: this.opts.warmup, repeat: this.repeat, budgetMs: this.budget * 1000 };
  }

  private rateKey(r: BenchResult): string {
    return `${r.backend}|${r.shape.kind}|${r.pass}`;
  }

  /**
   * Before a backend's first large shape of a kind, one untimed forward on a small shape of that kind
   * (the first of the quick set) gives a rate to predict from, so that a slow backend (a software GPU
   * adapter) is not left running a 16k-token problem for minutes. Backward is predicted from it until
   * it has a rate of its own.
   */
  private async calibrate(opened: OpenedBackend, r: BenchResult): Promise<void> {
    if (!this.budget || this.rates.has(this.rateKey(r))) return;
    const device = isDeviceBackend(opened.name, opened.backend);
    const small = (device ? gpuShapes('quick') : cpuShapes('quick')).find((s) => s.kind === r.shape.kind);
    if (!small) return;
    const flops = shapeFlops(small, false);
    const fwdKey = `${r.backend}|${r.shape.kind}|forward`;
    if (!this.rates.has(fwdKey) && r.flops > 8 * flops) {
      try {
        const { q, k, v } = makeInputs(small, this.opts.dtype);
        const t0 = performance.now();
        await opened.backend.forward(q, k, v, { causal: small.causal });
        this.rates.set(fwdKey, (performance.now() - t0) / 1000 / flops);
      } catch {
        return; // The real run will report the error.
      }
    }
    const fwd = this.rates.get(fwdKey);
    if (fwd !== undefined && !this.rates.has(this.rateKey(r))) this.rates.set(this.rateKey(r), fwd);
  }

  /** A reason to skip r: its one run is predicted to take more than twice the budget. */
  private tooSlow(r: BenchResult): string | undefined {
    const rate = this.rates.get(this.rateKey(r));
    if (!this.budget || rate === undefined) return undefined;
    const predicted = rate * r.flops;
    if (predicted <= 2 * this.budget) return undefined;
    return `about ${predicted < 10 ? predicted.toFixed(1) : predicted.toFixed(0)} s a run at its best rate so far, over twice --budget ${this.budget}`;
  }

  private base(opened: OpenedBackend, shape: BenchShape, pass: BenchPass): BenchResult {
    return {
      backend: opened.name,
      anchor: false,
      threads: opened.threads,
      device: isDeviceBackend(opened.name, opened.backend),
      pass,
      shape,
      label: shapeLabel(shape),
      dtype: this.opts.dtype,
      status: 'pass',
      flops: shapeFlops(shape, pass === 'backward'),
    };
  }

  private finish(r: BenchResult, samples: number[], check: CheckResult): BenchResult {
    r.samples = samples.map((s) => Math.round(s * 1000) / 1000);
    r.ms = median(samples);
    if (r.flops > 0) {
      // The best rate so far: predicting from it skips only what is too slow even at its fastest.
      const rate = r.ms / 1000 / r.flops;
      const key = this.rateKey(r);
      this.rates.set(key, Math.min(rate, this.rates.get(key) ?? rate));
    }
    r.flopsPerSecond = r.flops / (r.ms / 1000);
    if (r.shape.kind === 'decode') r.kvBytesPerSecond = kvBytes(r.shape, r.dtype) / (r.ms / 1000);
    r.maxError = check.maxError;
    r.bound = check.bound;
    r.checkedRows = check.rows;
    r.status = check.pass ? 'pass' : 'fail';
    if (!check.pass)
      r.message = `max error ${check.maxError} exceeds the bound ${check.bound} on sampled rows`;
    return r;
  }

  async run(
    opened: OpenedBackend,
    shape: BenchShape,
    pass: BenchPass,
    prepare: () => Prepared,
  ): Promise<BenchResult> {
    const r = this.base(opened, shape, pass);
    const gap = capabilityGap(opened.backend.capabilities, shape, this.opts.dtype, pass);
    if (gap) return { ...r, status: 'unsupported', message: gap };
    await this.calibrate(opened, r);
    const slow = this.tooSlow(r);
    if (slow) return { ...r, status: 'skipped', message: slow };
    try {
      const { inputs, ref, dout } = prepare();
      return pass === 'forward'
        ? await this.forward(r, opened.backend, inputs, ref)
        : await this.backward(r, opened.backend, inputs, ref, dout());
    } catch (e) {
      return { ...r, status: 'error', message: shortMessage(e) };
    }
  }

  private async forward(
    r: BenchResult,
    backend: Backend,
    { q, k, v }: { q: HostTensor; k: HostTensor; v: HostTensor },
    ref: RowReference,
  ): Promise<BenchResult> {
    const options = { causal: r.shape.causal };
    if (r.device && backend.upload && backend.download) {
      const [qd, kd, vd] = await Promise.all([backend.upload(q), backend.upload(k), backend.upload(v)]);
      try {
        const { samples, last } = await timeRuns(
          async () => {
            const res = await backend.forward(qd, kd, vd, options);
            await sync(backend);
            return res;
          },
          { ...this.timing, after: (res) => freeAll(backend, res.out) },
        );
        const out = await backend.download(last.out);
        freeAll(backend, last.out);
        this.finish(r, samples, ref.checkForward(out));
      } finally {
        freeAll(backend, qd, kd, vd);
      }
      // End to end: host tensors in and out, copies included.
      const e2e = await timeRuns(() => backend.forward(q, k, v, options), {
        warmup: 0,
        repeat: Math.min(this.repeat, 3),
        budgetMs: this.budget * 1000,
      });
      r.e2eMs = median(e2e.samples);
      return r;
    }
    const { samples, last } = await timeRuns(() => backend.forward(q, k, v, options), this.timing);
    return this.finish(r, samples, ref.checkForward(last.out as HostTensor));
  }

  private async backward(
    r: BenchResult,
    backend: Backend,
    { q, k, v }: { q: HostTensor; k: HostTensor; v: HostTensor },
    ref: RowReference,
    dout: HostTensor,
  ): Promise<BenchResult> {
    const options = { causal: r.shape.causal };
    const device = r.device && backend.upload && backend.download;
    const up = async (t: HostTensor): Promise<Tensor> => (device ? backend.upload!(t) : t);
    const [qd, kd, vd, dod] = await Promise.all([up(q), up(k), up(v), up(dout)]);
    let fwd: { out: Tensor; lse?: unknown } | undefined;
    try {
      fwd = await backend.forward(qd, kd, vd, { ...options, returnLse: true });
      const { out, lse } = fwd;
      if (lse === undefined) throw new Error('the forward returned no lse with returnLse: true');
      const { samples, last } = await timeRuns(
        async () => {
          const g = await backend.backward(dod, qd, kd, vd, out, lse as Float32Array, options);
          await sync(backend);
          return g;
        },
        { ...this.timing, after: (g) => freeAll(backend, g.dq, g.dk, g.dv) },
      );
      const dq = device ? await backend.download!(last.dq) : (last.dq as HostTensor);
      freeAll(backend, last.dq, last.dk, last.dv);
      return this.finish(r, samples, ref.checkDq(dq, dout));
    } finally {
      freeAll(backend, qd, kd, vd, dod, fwd?.out, fwd?.lse);
    }
  }

  async anchor(
    runner: AnchorRunner,
    variant: AnchorVariant,
    shape: BenchShape,
    prepare: () => Prepared,
  ): Promise<BenchResult> {
    const r: BenchResult = {
      backend: anchorName(variant),
      anchor: true,
      threads: variant.threads,
      device: false,
      pass: 'forward',
      shape,
      label: shapeLabel(shape),
      dtype: this.opts.dtype,
      status: 'pass',
      flops: shapeFlops(shape, false),
    };
    const why = anchorUnsupported(shape);
    if (why) return { ...r, status: 'unsupported', message: why };
    const slow = this.tooSlow(r);
    if (slow) return { ...r, status: 'skipped', message: slow };
    try {
      const { inputs, ref } = prepare();
      const { samples, out } = await runner.run(variant, shape, inputs, this.timing);
      return this.finish(
        r,
        samples,
        ref.checkForward({ dtype: 'float32', shape: inputs.q.shape, data: out }),
      );
    } catch (e) {
      return { ...r, status: 'error', message: shortMessage(e) };
    }
  }
}

/** Runs the benchmark, prints the report and returns the exit code (1 if any backend result failed). */
export async function benchCommand(opts: BenchOptions, io: Io, argv: string[] = []): Promise<number> {
  const repeat = opts.repeat ?? (opts.shapes === 'quick' ? 3 : 5);
  const budget = opts.budget ?? (opts.shapes === 'quick' ? 1.5 : 30);
  const notes: string[] = [];
  await loadBackendPackages();
  const selection = await selectBackends(opts.backend);
  for (const s of selection.skipped)
    notes.push(`${s.name}: not available (${s.reason ?? 'no reason given'})`);

  const opened: OpenedBackend[] = [];
  const owned: OpenedBackend[] = [];
  try {
    for (const name of selection.names) {
      try {
        const o = await openBackend(name, { threads: opts.threads });
        opened.push(o);
        if (o.owned) owned.push(o);
      } catch (e) {
        if (opts.backend !== 'all') throw e;
        notes.push(`${name}: could not be opened (${shortMessage(e)})`);
      }
    }

    // The plan: every shape once, with the backends (and anchors) that run it, CPU shapes first.
    const plan = new Map<string, Planned>();
    const pass: BenchPass[] = opts.backward ? ['forward', 'backward'] : ['forward'];
    const cpuSet = cpuShapes(opts.shapes, opts.seq);
    for (const o of opened) {
      const device = isDeviceBackend(o.name, o.backend);
      let shapes = device ? gpuShapes(opts.shapes, opts.seq) : cpuSet;
      if (o.name === 'reference' && !opts.seq) {
        // float64 JavaScript, written for clarity: only the smallest shape unless --seq asks.
        const smallest = Math.min(...shapes.map((s) => s.sq));
        shapes = shapes.filter((s) => s.sq === smallest);
        notes.push(
          `reference: the float64 reference backend runs only the smallest shape (s=${smallest}); use --seq to choose lengths`,
        );
      }
      for (const shape of shapes) {
        const key = `${device ? 'gpu' : 'cpu'} ${shapeKey(shape)}`;
        let entry = plan.get(key);
        if (!entry) {
          entry = { shape, runs: [], anchors: !device };
          plan.set(key, entry);
        }
        for (const p of pass) entry.runs.push({ opened: o, pass: p });
      }
    }
    const entries = [...plan.values()].sort((a, b) => Number(!a.anchors) - Number(!b.anchors));

    let runner: AnchorRunner | undefined;
    let anchorsInfo: BenchReport['anchors'];
    if (opts.anchors) {
      const ort = await loadOrt();
      anchorsInfo = { package: 'onnxruntime-node', version: ort.version, error: ort.error };
      if (ort.error) notes.push(`anchors: ${ort.error}`);
      else if (opts.dtype !== 'float32')
        notes.push(`anchors: onnxruntime-node runs float32 only; no anchors for ${opts.dtype}`);
      else if (!entries.some((e) => e.anchors))
        notes.push('anchors: they measure the CPU shapes, and no CPU backend ran');
      else runner = new AnchorRunner(ort.ort!);
    }

    const total = entries.reduce(
      (n, e) => n + e.runs.length + (runner && e.anchors ? ANCHOR_VARIANTS.length : 0),
      0,
    );
    const progress = createProgress(io, opts.progress);
    const bench = new BenchRunner(opts, repeat, budget);
    const results: BenchResult[] = [];
    progress.start(total, 'preparing inputs');
    try {
      let lastFamily: boolean | undefined;
      for (const entry of entries) {
        if (lastFamily !== undefined && lastFamily !== entry.anchors) clearInputCache();
        lastFamily = entry.anchors;
        const { shape } = entry;
        const label = `${shapeLabel(shape)}${shape.causal ? ' causal' : ''}`;
        // Inputs and the row references are made on first use: a shape every backend skips costs nothing.
        let prepared: Prepared | undefined;
        const prepare = (): Prepared => {
          if (!prepared) {
            progress.update(`inputs ${label}`);
            const inputs = makeInputs(shape, opts.dtype);
            const rows = sampleRows(shape, opts.rows);
            const ref = new RowReference(inputs.q, inputs.k, inputs.v, { causal: shape.causal }, rows);
            let dout: HostTensor | undefined;
            prepared = {
              inputs,
              ref,
              dout: () => {
                dout ??= makeDout(shape, opts.dtype);
                return dout;
              },
            };
          }
          return prepared;
        };
        for (const { opened: o, pass: p } of entry.runs) {
          progress.update(`${o.name} ${label} ${p}`);
          results.push(await bench.run(o, shape, p, prepare));
          progress.tick();
        }
        if (runner && entry.anchors) {
          for (const v of ANCHOR_VARIANTS) {
            progress.update(`${anchorName(v)} ${label}`);
            results.push(await bench.anchor(runner, v, shape, prepare));
            progress.tick();
          }
        }
      }
    } finally {
      progress.stop();
      clearInputCache();
      await runner?.release();
    }

    const report: BenchReport = {
      tool: 'flashattn bench',
      version: packageVersion('@flashattn/cli'),
      machine: machineInfo(),
      options: {
        backend: opts.backend,
        shapes: opts.shapes,
        dtype: opts.dtype,
        threads: opts.threads,
        backward: opts.backward,
        json: opts.json,
        anchors: opts.anchors,
        repeat,
        warmup: opts.warmup,
        seq: opts.seq,
        rows: opts.rows,
        budget,
      },
      backends: opened.map((o) => ({
        name: o.name,
        threads: o.threads,
        device: isDeviceBackend(o.name, o.backend),
        note: noteOf(o.backend),
        capabilities: o.backend.capabilities,
      })),
      notes,
      ...(anchorsInfo ? { anchors: anchorsInfo } : {}),
      results,
    };
    io.out(renderBench(report, argv));
    if (opts.json) {
      writeFileSync(opts.json, `${JSON.stringify(report, null, 2)}\n`);
      io.err(`wrote ${opts.json}\n`);
    }
    const bad = results.filter((r) => !r.anchor && (r.status === 'fail' || r.status === 'error'));
    return bad.length > 0 ? 1 : 0;
  } finally {
    await Promise.all(owned.map((o) => o.backend.dispose().catch(() => {})));
    await disposeBackends();
  }
}
