/**
 * runCase: one conformance case against one backend, outside or inside vitest. Never throws for a
 * backend's misbehaviour: every outcome is a CaseResult.
 */
import {
  type AttentionOptions,
  type Backend,
  type DeviceTensor,
  type DType,
  type Feature,
  fromFloat32,
  type HostTensor,
  isDeviceTensor,
  isFlashAttentionError,
  lseIndex,
  type Problem,
  qOffset,
  type ReferenceBackward,
  type ReferenceForward,
  referenceBackward64,
  referenceBackwardLow,
  referenceForward64,
  referenceForwardLow,
  resolveProblem,
  seqLenQ,
  type Tensor,
  toFloat32,
} from '@flashattn/core';
import { type CloseResult, checkClose } from './check.js';
import { type ConformanceInputs, lseLengthOf, makeInputs, specFeatures } from './inputs.js';
import type { CaseResult, ConformanceCase, ErrorInputs, ProblemSpec, RunContext } from './types.js';

// ---------------------------------------------------------------------------------------------
// Helpers

class CaseFailure extends Error {}

function failWith(message: string): never {
  throw new CaseFailure(message);
}

function errorText(e: unknown): string {
  if (e instanceof Error) return `${e.name}: ${e.message}`;
  return String(e);
}

/** What this call needs that the backend's capabilities leave out (features, dtype, head dim). */
function missingOf(
  backend: Backend,
  problem: { features: Feature[]; dtype: DType; headDim: number },
  extra: Feature[] = [],
): string[] {
  const caps = backend.capabilities;
  const missing: string[] = [];
  for (const f of new Set([...problem.features, ...extra]))
    if (!caps.features.includes(f)) missing.push(`'${f}'`);
  if (!caps.dtypes.includes(problem.dtype)) missing.push(`dtype ${problem.dtype}`);
  if (problem.headDim > caps.maxHeadDim)
    missing.push(`head dim ${problem.headDim} > maxHeadDim ${caps.maxHeadDim}`);
  return missing;
}

/** The result of a call that threw: 'unsupported' when it may, else a failure. */
function thrown(name: string, what: string, e: unknown, missing: string[]): CaseResult {
  const code = isFlashAttentionError(e) ? e.code : null;
  if (missing.length > 0 && (code === 'UNSUPPORTED_FEATURE' || code === 'HEAD_DIM_UNSUPPORTED')) {
    return {
      name,
      status: 'unsupported',
      message: `lacks ${missing.join(', ')} (${e instanceof Error ? e.message : e})`,
    };
  }
  if (code === 'UNSUPPORTED_FEATURE') {
    return {
      name,
      status: 'fail',
      message: `${name}: ${what} threw UNSUPPORTED_FEATURE although its capabilities list everything this case uses: ${errorText(e)}`,
    };
  }
  return { name, status: 'fail', message: `${name}: ${what} threw ${errorText(e)}` };
}

function lacksNote(missing: string[]): string {
  return missing.length > 0
    ? ` (its capabilities leave out ${missing.join(', ')}: it must throw UNSUPPORTED_FEATURE rather than return a wrong answer)`
    : '';
}

function axesOf(p: Problem, which: 'q' | 'kv' | 'lse'): string[] {
  if (which === 'lse') return p.cuSeqlensQ ? ['h', 't'] : ['b', 'h', 's'];
  if (p.cuSeqlensQ) return ['t', 'h', 'c'];
  if (which === 'kv' && p.blockTable) return ['page', 'slot', 'h', 'c'];
  return p.layout === 'bhsd' ? ['b', 'h', 's', 'c'] : ['b', 's', 'h', 'c'];
}

/** Every array the caller handed over, copied, to prove afterwards that none was written. */
interface Snapshot {
  entries: { name: string; live: ArrayLike<number>; copy: Uint8Array }[];
  optionsJson: string;
  options: AttentionOptions;
}

function bytesOf(a: ArrayBufferView): Uint8Array {
  return new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
}

function snapshot(
  tensors: Record<string, HostTensor | Float32Array | undefined>,
  options: AttentionOptions,
): Snapshot {
  const entries: Snapshot['entries'] = [];
  const addArray = (name: string, a: unknown) => {
    if (ArrayBuffer.isView(a))
      entries.push({ name, live: a as unknown as ArrayLike<number>, copy: bytesOf(a).slice() });
  };
  for (const [name, t] of Object.entries(tensors)) {
    if (!t) continue;
    if (t instanceof Float32Array) addArray(name, t);
    else {
      addArray(`${name}.data`, t.data);
      entries.push({ name: `${name}.shape`, live: t.shape as number[], copy: Uint8Array.from([]) });
    }
  }
  const o = options as Record<string, unknown>;
  for (const key of Object.keys(o)) {
    const value = o[key];
    if (ArrayBuffer.isView(value)) addArray(`options.${key}`, value);
    else if (
      value &&
      typeof value === 'object' &&
      'data' in value &&
      ArrayBuffer.isView((value as HostTensor).data)
    ) {
      addArray(`options.${key}.data`, (value as HostTensor).data);
    }
  }
  const shapes = Object.fromEntries(
    Object.entries(tensors).map(([n, t]) => [
      n,
      t && !(t instanceof Float32Array) ? [...t.shape, t.dtype] : null,
    ]),
  );
  const json = JSON.stringify({ shapes, options: describeOptions(options) });
  return { entries, optionsJson: json, options };
}

/** The options as JSON-able data (typed arrays by length only: their bytes are compared separately). */
function describeOptions(options: AttentionOptions): unknown {
  return Object.fromEntries(
    Object.entries(options as Record<string, unknown>).map(([k, v]) => [
      k,
      ArrayBuffer.isView(v)
        ? `${v.constructor.name}(${(v as Float32Array).length})`
        : v && typeof v === 'object' && 'data' in v
          ? 'tensor'
          : v,
    ]),
  );
}

function checkSnapshot(snap: Snapshot, tensors: Record<string, HostTensor | Float32Array | undefined>): void {
  for (const e of snap.entries) {
    if (e.name.endsWith('.shape')) continue;
    const now = bytesOf(e.live as unknown as ArrayBufferView);
    if (now.length !== e.copy.length) failWith(`the backend resized the caller's ${e.name}`);
    for (let t = 0; t < now.length; t++) {
      if (now[t] !== e.copy[t]) failWith(`the backend wrote into the caller's ${e.name} (byte ${t})`);
    }
  }
  const shapes = Object.fromEntries(
    Object.entries(tensors).map(([n, t]) => [
      n,
      t && !(t instanceof Float32Array) ? [...t.shape, t.dtype] : null,
    ]),
  );
  const json = JSON.stringify({ shapes, options: describeOptions(snap.options) });
  if (json !== snap.optionsJson)
    failWith(
      `the backend changed the caller's tensors or options: before ${snap.optionsJson}, after ${json}`,
    );
}

function sameBits(a: ArrayBufferView, b: ArrayBufferView): number {
  const x = bytesOf(a);
  const y = bytesOf(b);
  if (x.length !== y.length) return 0;
  for (let t = 0; t < x.length; t++) if (x[t] !== y[t]) return t;
  return -1;
}

function expectHostTensor(name: string, t: unknown, dtype: DType, shape: readonly number[]): HostTensor {
  if (typeof t !== 'object' || t === null) failWith(`${name} is ${String(t)}, not a HostTensor`);
  if (isDeviceTensor(t))
    failWith(`${name} is a device tensor although host tensors went in (host in, host out)`);
  const h = t as HostTensor;
  if (h.dtype !== dtype) failWith(`${name}.dtype is ${String(h.dtype)}, expected ${dtype}`);
  if (!Array.isArray(h.shape) && !(typeof h.shape === 'object' && h.shape !== null))
    failWith(`${name}.shape is missing`);
  if (h.shape.length !== shape.length || h.shape.some((s, a) => s !== shape[a])) {
    failWith(`${name}.shape is [${[...h.shape].join(', ')}], expected [${shape.join(', ')}]`);
  }
  const wantArray = dtype === 'float32' ? Float32Array : Uint16Array;
  if (!(h.data instanceof wantArray)) failWith(`${name}.data is not a ${wantArray.name}`);
  const n = shape.reduce((a, b) => a * b, 1);
  if (h.data.length !== n) failWith(`${name}.data has ${h.data.length} elements, expected ${n}`);
  return h;
}

// ---------------------------------------------------------------------------------------------
// References, cached per spec object (several backends, or broken variants, share one case list).

interface Refs {
  problem: Problem;
  f64: ReferenceForward;
  fLow: ReferenceForward;
  b64?: ReferenceBackward;
  bLow?: ReferenceBackward;
}

const refCache = new WeakMap<ProblemSpec, Refs>();

function referencesOf(spec: ProblemSpec, x: ConformanceInputs, backward: boolean): Refs {
  let r = refCache.get(spec);
  if (!r) {
    const options = { ...x.options, returnLse: undefined };
    const f64 = referenceForward64(x.q, x.k, x.v, options);
    r = { problem: f64.problem, f64, fLow: referenceForwardLow(x.q, x.k, x.v, options) };
    refCache.set(spec, r);
  }
  if (backward && !r.b64) {
    const options = { ...x.options, returnLse: undefined };
    r.b64 = referenceBackward64(x.dout, x.q, x.k, x.v, options);
    r.bLow = referenceBackwardLow(x.dout, x.q, x.k, x.v, options);
  }
  return r;
}

/** Options as sent to a backend: lse asked for per the spec and the capabilities; no undefined keys. */
function callOptions(
  backend: Backend,
  spec: ProblemSpec,
  options: AttentionOptions,
): { options: AttentionOptions; wantLse: boolean } {
  const wantLse =
    spec.lse === 'always' || (spec.lse !== 'never' && backend.capabilities.features.includes('lse'));
  const o: AttentionOptions = { ...options };
  if (wantLse) o.returnLse = true;
  else o.returnLse = undefined;
  for (const k of Object.keys(o) as (keyof AttentionOptions)[]) if (o[k] === undefined) delete o[k];
  return { options: o, wantLse };
}

interface Verdict {
  checks: CloseResult[];
  notes: string[];
}

function verdictResult(name: string, v: Verdict, missing: string[]): CaseResult {
  const bad = v.checks.filter((c) => !c.ok);
  let worst: CloseResult | undefined;
  for (const c of v.checks) {
    const ratio = c.bound > 0 ? c.maxError / c.bound : c.maxError > 0 ? Number.POSITIVE_INFINITY : 0;
    const w = worst ? (worst.bound > 0 ? worst.maxError / worst.bound : 0) : -1;
    if (!worst || ratio > w) worst = c;
  }
  if (bad.length > 0) {
    return {
      name,
      status: 'fail',
      message: `${name}:\n  ${bad.map((c) => c.message).join('\n  ')}${lacksNote(missing)}`,
      maxError: bad[0].maxError,
      bound: bad[0].bound,
    };
  }
  const notes = [...v.notes];
  if (missing.length > 0)
    notes.push(`the capabilities leave out ${missing.join(', ')}, yet the call succeeded`);
  return {
    name,
    status: 'pass',
    message: notes.length > 0 ? notes.join('; ') : undefined,
    maxError: worst?.maxError,
    bound: worst?.bound,
  };
}

/** The forward's out (and lse) against the references, plus exact zeros on fully masked rows. */
function checkForward(
  name: string,
  refs: Refs,
  x: ConformanceInputs,
  out: HostTensor,
  lse: Float32Array | undefined,
  wantLse: boolean,
): Verdict {
  const p = refs.problem;
  const checks: CloseResult[] = [];
  const notes: string[] = [];
  const o = expectHostTensor('out', out, p.dtype, x.q.shape);
  const values = toFloat32(o);
  checks.push(
    checkClose(
      values,
      refs.f64.out,
      refs.fLow.out,
      p.dtype,
      'output',
      `${name} › out`,
      x.q.shape,
      axesOf(p, 'q'),
    ),
  );
  if (wantLse) {
    if (!(lse instanceof Float32Array))
      failWith(`returnLse was set but lse is ${lse === undefined ? 'missing' : 'not a Float32Array'}`);
    if (lse.length !== p.lseLength)
      failWith(`lse has ${lse.length} entries, expected ${p.lseLength} ([${p.lseShape.join(', ')}])`);
    checks.push(
      checkClose(
        lse,
        refs.f64.lse,
        refs.fLow.lse,
        p.dtype,
        'lse',
        `${name} › lse`,
        p.lseShape,
        axesOf(p, 'lse'),
      ),
    );
  }
  // Fully masked rows: out exactly 0.
  let masked = 0;
  for (let b = 0; b < p.batch; b++) {
    for (let h = 0; h < p.headsQ; h++) {
      for (let i = 0; i < seqLenQ(p, b); i++) {
        if (refs.f64.lse[lseIndex(p, b, h, i)] !== Number.NEGATIVE_INFINITY) continue;
        masked++;
        const off = qOffset(p, b, i, h);
        for (let c = 0; c < p.headDim; c++) {
          if (values[off + c] !== 0) {
            checks.push({
              ok: false,
              label: `${name} › masked row`,
              maxError: Math.abs(values[off + c]) || Number.POSITIVE_INFINITY,
              bound: 0,
              refError: 0,
              worstIndex: off + c,
              badCount: 1,
              message: `${name} › out: row b=${b} h=${h} i=${i} has no allowed key, so out must be exactly 0, got ${values[off + c]} at c=${c}`,
            });
            b = p.batch;
            h = p.headsQ;
            break;
          }
        }
        if (b >= p.batch) break;
      }
    }
  }
  if (masked > 0) notes.push(`${masked} fully masked rows`);
  return { checks, notes };
}

// ---------------------------------------------------------------------------------------------
// Runners per kind

async function runForward(backend: Backend, c: ConformanceCase, spec: ProblemSpec): Promise<CaseResult> {
  const x = makeInputs(spec);
  const { options, wantLse } = callOptions(backend, spec, x.options);
  const problem = resolveProblem(x.q, x.k, x.v, options);
  const missing = missingOf(backend, problem);
  const snap = snapshot({ q: x.q, k: x.k, v: x.v }, options);
  let res: { out: HostTensor; lse?: Float32Array };
  try {
    res = await backend.forward(x.q, x.k, x.v, options);
  } catch (e) {
    return thrown(c.name, 'forward', e, missing);
  }
  checkSnapshot(snap, { q: x.q, k: x.k, v: x.v });
  const refs = referencesOf(spec, makeInputs(spec), false);
  return verdictResult(c.name, checkForward(c.name, refs, x, res.out, res.lse, wantLse), missing);
}

function backwardExtras(refs: Refs, x: ConformanceInputs): { out: HostTensor; lse: Float32Array } {
  // The backend gets ref64's out rounded to the dtype and ref64's lse in float32 (SPEC §8).
  return {
    out: fromFloat32(Float32Array.from(refs.f64.out), x.q.dtype, x.q.shape),
    lse: Float32Array.from(refs.f64.lse),
  };
}

function checkGrads(
  name: string,
  refs: Refs,
  x: ConformanceInputs,
  g: { dq: HostTensor; dk: HostTensor; dv: HostTensor },
): Verdict {
  const p = refs.problem;
  const b64 = refs.b64 as ReferenceBackward;
  const bLow = refs.bLow as ReferenceBackward;
  const checks: CloseResult[] = [];
  const dq = expectHostTensor('dq', g.dq, p.dtype, x.q.shape);
  const dk = expectHostTensor('dk', g.dk, p.dtype, x.k.shape);
  const dv = expectHostTensor('dv', g.dv, p.dtype, x.v.shape);
  checks.push(checkClose(dq, b64.dq, bLow.dq, p.dtype, 'grad', `${name} › dq`, x.q.shape, axesOf(p, 'q')));
  checks.push(checkClose(dk, b64.dk, bLow.dk, p.dtype, 'grad', `${name} › dk`, x.k.shape, axesOf(p, 'kv')));
  checks.push(checkClose(dv, b64.dv, bLow.dv, p.dtype, 'grad', `${name} › dv`, x.v.shape, axesOf(p, 'kv')));
  return { checks, notes: [] };
}

async function runBackward(backend: Backend, c: ConformanceCase, spec: ProblemSpec): Promise<CaseResult> {
  const x = makeInputs(spec);
  const { options } = callOptions(backend, { ...spec, lse: 'never' }, x.options);
  const problem = resolveProblem(x.q, x.k, x.v, options);
  const missing = missingOf(backend, problem, ['backward']);
  const refs = referencesOf(spec, makeInputs(spec), true);
  const { out, lse } = backwardExtras(refs, x);
  const snap = snapshot({ dout: x.dout, q: x.q, k: x.k, v: x.v, out, lse }, options);
  let g1: { dq: HostTensor; dk: HostTensor; dv: HostTensor };
  let g2: { dq: HostTensor; dk: HostTensor; dv: HostTensor };
  try {
    g1 = await backend.backward(x.dout, x.q, x.k, x.v, out, lse, options);
    g2 = await backend.backward(x.dout, x.q, x.k, x.v, out, lse, options);
  } catch (e) {
    return thrown(c.name, 'backward', e, missing);
  }
  checkSnapshot(snap, { dout: x.dout, q: x.q, k: x.k, v: x.v, out, lse });
  const verdict = checkGrads(c.name, refs, x, g1);
  // A backend in its opt-in non-deterministic mode is held to the tolerances only (SPEC §4).
  for (const key of backend.capabilities.deterministic === false ? [] : (['dq', 'dk', 'dv'] as const)) {
    const t = sameBits(g1[key].data, g2[key].data);
    if (t >= 0)
      failWith(
        `two backward calls with the same inputs gave different ${key} (first difference at byte ${t}): not deterministic`,
      );
  }
  return verdictResult(c.name, verdict, missing);
}

async function runDropoutStats(backend: Backend, c: ConformanceCase, spec: ProblemSpec): Promise<CaseResult> {
  // q = 0: every score is 0, P_ij = 1/sk; v one-hot per key: out[i][c] = keep_ic / ((1-p)·sk).
  const x = makeInputs(spec);
  const { options } = callOptions(backend, { ...spec, lse: 'never' }, x.options);
  const problem = resolveProblem(x.q, x.k, x.v, options);
  const missing = missingOf(backend, problem);
  let res: { out: HostTensor };
  try {
    res = await backend.forward(x.q, x.k, x.v, options);
  } catch (e) {
    return thrown(c.name, 'forward', e, missing);
  }
  const out = toFloat32(expectHostTensor('out', res.out, spec.dtype, x.q.shape));
  const p = (spec.dropout as { p: number }).p;
  const keptValue = 1 / ((1 - p) * spec.sk);
  const cols = Math.min(spec.sk, spec.d);
  let kept = 0;
  let total = 0;
  let worstRel = 0;
  for (let row = 0; row < out.length / spec.d; row++) {
    for (let col = 0; col < cols; col++) {
      const v = out[row * spec.d + col];
      if (!Number.isFinite(v)) failWith(`${c.name}: out has ${v} at row ${row}, column ${col}`);
      total++;
      if (v > keptValue / 2) {
        kept++;
        worstRel = Math.max(worstRel, Math.abs(v - keptValue) / keptValue);
      } else if (Math.abs(v) > 1e-6) {
        failWith(
          `${c.name}: out[${row}][${col}] = ${v}: a dropped element must give 0, a kept one ${keptValue}`,
        );
      }
    }
  }
  const fraction = kept / total;
  const message = `kept ${kept} of ${total} = ${fraction.toFixed(4)}, expected 1-p = ${(1 - p).toFixed(4)} ± 0.01; kept values off by at most ${worstRel.toExponential(2)} relative`;
  if (Math.abs(fraction - (1 - p)) > 0.01)
    return { name: c.name, status: 'fail', message: `${c.name}: ${message}${lacksNote(missing)}` };
  if (worstRel > 1e-4) {
    return {
      name: c.name,
      status: 'fail',
      message: `${c.name}: kept elements must be scaled by 1/(1-p): ${message}`,
    };
  }
  return { name: c.name, status: 'pass', message, maxError: Math.abs(fraction - (1 - p)), bound: 0.01 };
}

async function expectCode(
  call: () => Promise<unknown>,
  code: string,
  what: string,
): Promise<{ ok: true } | { ok: false; message: string; error?: unknown }> {
  try {
    await call();
  } catch (e) {
    if (isFlashAttentionError(e) && e.code === code) return { ok: true };
    return {
      ok: false,
      error: e,
      message: `${what}: expected a FlashAttentionError ${code}, got ${isFlashAttentionError(e) ? `code ${e.code}: ${e.message}` : errorText(e)}`,
    };
  }
  return { ok: false, message: `${what}: expected a FlashAttentionError ${code}, but the call succeeded` };
}

async function runError(backend: Backend, c: ConformanceCase): Promise<CaseResult> {
  const e = c.error as NonNullable<ConformanceCase['error']>;
  // The base may itself be invalid (d = 257, hq = 3 with hk = 2): nothing here may resolve it.
  const x = makeInputs(e.base);
  const inputs: ErrorInputs = {
    q: x.q,
    k: x.k,
    v: x.v,
    dout: x.dout,
    out: fromFloat32(new Float32Array(x.q.data.length), x.q.dtype, x.q.shape),
    lse: new Float32Array(lseLengthOf(e.base)),
    options: { ...x.options } as ErrorInputs['options'],
  };
  e.mutate(inputs);
  const o = inputs.options;
  for (const k of Object.keys(o)) if (o[k] === undefined) delete o[k];
  let err: unknown = null;
  let succeeded = false;
  try {
    if (e.call === 'forward') await backend.forward(inputs.q, inputs.k, inputs.v, o);
    else await backend.backward(inputs.dout, inputs.q, inputs.k, inputs.v, inputs.out, inputs.lse, o);
    succeeded = true;
  } catch (thrownError) {
    err = thrownError;
  }
  if (succeeded)
    return {
      name: c.name,
      status: 'fail',
      message: `${c.name}: expected ${e.expect}, but the call succeeded`,
    };
  if (isFlashAttentionError(err) && err.code === e.expect) {
    if (e.mentions && !err.message.toLowerCase().includes(e.mentions.toLowerCase())) {
      return {
        name: c.name,
        status: 'fail',
        message: `${c.name}: the ${e.expect} message should name '${e.mentions}', got: ${err.message}`,
      };
    }
    return { name: c.name, status: 'pass', message: err.message };
  }
  // A backend lacking what the broken input touches may refuse it for that reason first.
  const missing = missingOf(
    backend,
    { features: [...specFeatures(e.base), ...(e.features ?? [])], dtype: e.base.dtype, headDim: 0 },
    e.call === 'backward' ? ['backward'] : [],
  );
  for (const d of e.dtypes ?? []) if (!backend.capabilities.dtypes.includes(d)) missing.push(`dtype ${d}`);
  if (isFlashAttentionError(err) && err.code === 'UNSUPPORTED_FEATURE' && missing.length > 0) {
    return { name: c.name, status: 'unsupported', message: `lacks ${missing.join(', ')} (${err.message})` };
  }
  return {
    name: c.name,
    status: 'fail',
    message: `${c.name}: expected a FlashAttentionError ${e.expect}, got ${
      isFlashAttentionError(err) ? `${err.code}: ${err.message}` : errorText(err)
    }`,
  };
}

async function runDisposed(backend: Backend, c: ConformanceCase, ctx: RunContext): Promise<CaseResult> {
  if (!ctx.factory) {
    return {
      name: c.name,
      status: 'unsupported',
      message: 'needs the backend factory (RunContext.factory) to make a second instance',
    };
  }
  const second = await ctx.factory();
  if (second === backend) {
    return {
      name: c.name,
      status: 'fail',
      message: `${c.name}: the factory returned the same instance twice; each call must make a new one`,
    };
  }
  await second.dispose();
  const x = makeInputs({ batch: 1, sq: 4, sk: 6, hq: 2, hk: 2, d: 8, dtype: 'float32', seed: 11 });
  const f = await expectCode(() => second.forward(x.q, x.k, x.v), 'DISPOSED', 'forward after dispose()');
  if (!f.ok) return { name: c.name, status: 'fail', message: `${c.name}: ${f.message}` };
  const out = fromFloat32(new Float32Array(x.q.data.length), 'float32', x.q.shape);
  const lse = new Float32Array(1 * 2 * 4);
  const b = await expectCode(
    () => second.backward(x.dout, x.q, x.k, x.v, out, lse),
    'DISPOSED',
    'backward after dispose()',
  );
  if (!b.ok) {
    const noBackward = !backend.capabilities.features.includes('backward');
    const err = b.error;
    if (!(noBackward && isFlashAttentionError(err) && err.code === 'UNSUPPORTED_FEATURE')) {
      return { name: c.name, status: 'fail', message: `${c.name}: ${b.message}` };
    }
  }
  // The first instance must be unaffected by the second's disposal.
  try {
    await backend.forward(x.q, x.k, x.v);
  } catch (e) {
    return {
      name: c.name,
      status: 'fail',
      message: `${c.name}: disposing a second instance broke the first: ${errorText(e)}`,
    };
  }
  return {
    name: c.name,
    status: 'pass',
    message: 'a disposed second instance threw DISPOSED; the first still works',
  };
}

async function runUnsupportedFeatures(backend: Backend, c: ConformanceCase): Promise<CaseResult> {
  const caps = backend.capabilities;
  const base: ProblemSpec = { batch: 2, sq: 5, sk: 7, hq: 2, hk: 2, d: 8, dtype: 'float32', seed: 5 };
  const probes: { what: string; spec: ProblemSpec; backward?: boolean }[] = [];
  const feat = (f: string, over: Partial<ProblemSpec>) =>
    probes.push({ what: `'${f}'`, spec: { ...base, ...over } });
  for (const f of [
    'causal',
    'window',
    'softcap',
    'alibi',
    'bias',
    'dropout',
    'gqa',
    'varlen',
    'kvcache',
    'paged',
    'lse',
    'backward',
  ] as const) {
    if (caps.features.includes(f)) continue;
    if (f === 'causal') feat(f, { causal: true });
    if (f === 'window') feat(f, { window: [2, 2] });
    if (f === 'softcap') feat(f, { softcap: 10 });
    if (f === 'alibi') feat(f, { alibi: 'heads' });
    if (f === 'bias') feat(f, { bias: { shape: [5, 7] } });
    if (f === 'dropout') feat(f, { dropout: { p: 0.1, seed: 1 } });
    if (f === 'gqa') feat(f, { hk: 1 });
    if (f === 'varlen') feat(f, { varlen: { q: [2, 3], k: [4, 3] } });
    if (f === 'kvcache') feat(f, { seqlensK: [7, 3] });
    if (f === 'paged') feat(f, { paged: { pageSize: 4 }, seqlensK: [7, 5] });
    if (f === 'lse') feat(f, { lse: 'always' });
    if (f === 'backward') probes.push({ what: "'backward'", spec: base, backward: true });
  }
  for (const dtype of ['float32', 'float16', 'bfloat16'] as const) {
    if (!caps.dtypes.includes(dtype)) probes.push({ what: `dtype ${dtype}`, spec: { ...base, dtype } });
  }
  if (probes.length === 0) {
    return {
      name: c.name,
      status: 'pass',
      message: 'the capabilities list every feature and dtype: nothing to refuse',
    };
  }
  const failures: string[] = [];
  for (const probe of probes) {
    const x = makeInputs(probe.spec);
    const call = probe.backward
      ? () =>
          backend.backward(
            x.dout,
            x.q,
            x.k,
            x.v,
            fromFloat32(new Float32Array(x.q.data.length), x.q.dtype, x.q.shape),
            new Float32Array(lseLengthOf(probe.spec)),
            x.options,
          )
      : () => backend.forward(x.q, x.k, x.v, x.options);
    const r = await expectCode(call, 'UNSUPPORTED_FEATURE', `a call using ${probe.what}`);
    if (!r.ok) failures.push(r.message);
  }
  if (failures.length > 0)
    return { name: c.name, status: 'fail', message: `${c.name}:\n  ${failures.join('\n  ')}` };
  return {
    name: c.name,
    status: 'pass',
    message: `refused ${probes.map((p) => p.what).join(', ')} with UNSUPPORTED_FEATURE`,
  };
}

/** Drops what the backend lacks from a spec (for behaviour cases that are not about features). */
function fitToCapabilities(backend: Backend, spec: ProblemSpec): ProblemSpec | null {
  const f = backend.capabilities.features;
  const s: ProblemSpec = { ...spec };
  if (!backend.capabilities.dtypes.includes(s.dtype)) return null;
  if (s.d > backend.capabilities.maxHeadDim) return null;
  if (!f.includes('causal')) s.causal = undefined;
  if (!f.includes('window')) s.window = undefined;
  if (!f.includes('softcap')) s.softcap = undefined;
  if (!f.includes('alibi')) s.alibi = undefined;
  if (!f.includes('bias')) s.bias = undefined;
  if (!f.includes('dropout')) s.dropout = undefined;
  if (!f.includes('kvcache')) s.seqlensK = undefined;
  if (!f.includes('gqa')) s.hk = s.hq;
  if (s.varlen && !f.includes('varlen')) return null;
  if (s.paged && !f.includes('paged')) return null;
  return s;
}

async function runImmutability(backend: Backend, c: ConformanceCase, spec: ProblemSpec): Promise<CaseResult> {
  const s = fitToCapabilities(backend, spec);
  if (!s) return { name: c.name, status: 'unsupported', message: 'no supported problem to try' };
  const x = makeInputs(s);
  const { options } = callOptions(backend, s, x.options);
  const snap = snapshot({ q: x.q, k: x.k, v: x.v }, options);
  let res: { out: HostTensor; lse?: Float32Array };
  try {
    res = await backend.forward(x.q, x.k, x.v, options);
  } catch (e) {
    return thrown(c.name, 'forward', e, []);
  }
  checkSnapshot(snap, { q: x.q, k: x.k, v: x.v });
  // The result must not alias an input either.
  for (const [name, t] of [
    ['q', x.q],
    ['k', x.k],
    ['v', x.v],
  ] as const) {
    if (res.out.data.buffer === t.data.buffer) failWith(`out shares its buffer with the caller's ${name}`);
  }
  const notes = ['forward left every input as it was'];
  if (backend.capabilities.features.includes('backward')) {
    const refs = referencesOf(s, makeInputs(s), false);
    const { out, lse } = backwardExtras(refs, x);
    const bOptions = { ...options };
    delete bOptions.returnLse;
    const all = { dout: x.dout, q: x.q, k: x.k, v: x.v, out, lse };
    const snap2 = snapshot(all, bOptions);
    try {
      await backend.backward(x.dout, x.q, x.k, x.v, out, lse, bOptions);
    } catch (e) {
      return thrown(c.name, 'backward', e, []);
    }
    checkSnapshot(snap2, all);
    notes.push('so did backward (dout, out and lse included)');
  }
  return {
    name: c.name,
    status: 'pass',
    message: `${notes.join('; ')}; options used: ${Object.keys(options).join(', ')}`,
  };
}

async function runConcurrency(backend: Backend, c: ConformanceCase): Promise<CaseResult> {
  const specs = (c.specs ?? [])
    .map((s) => fitToCapabilities(backend, s))
    .filter((s): s is ProblemSpec => s !== null);
  if (specs.length === 0)
    return { name: c.name, status: 'unsupported', message: 'no supported problem to try' };
  const inputs = specs.map((s) => {
    const x = makeInputs(s);
    return { x, options: callOptions(backend, s, x.options).options };
  });
  const withBackward = backend.capabilities.features.includes('backward');
  const run = (n: number) => {
    const { x, options } = inputs[n];
    if (withBackward && n % 3 === 2) {
      const out = fromFloat32(new Float32Array(x.q.data.length).fill(0.5), x.q.dtype, x.q.shape);
      const lse = new Float32Array(resolveProblem(x.q, x.k, x.v, options).lseLength).fill(1);
      const bo = { ...options };
      delete bo.returnLse;
      return backend
        .backward(x.dout, x.q, x.k, x.v, out, lse, bo)
        .then((g) => [g.dq.data, g.dk.data, g.dv.data]);
    }
    return backend.forward(x.q, x.k, x.v, options).then((r) => (r.lse ? [r.out.data, r.lse] : [r.out.data]));
  };
  const sequential: ArrayBufferView[][] = [];
  for (let n = 0; n < inputs.length; n++) sequential.push(await run(n));
  const parallel = await Promise.all(inputs.map((_, n) => run(n)));
  for (let n = 0; n < inputs.length; n++) {
    for (let a = 0; a < sequential[n].length; a++) {
      const t = sameBits(sequential[n][a], parallel[n][a]);
      if (t >= 0) {
        failWith(
          `call ${n + 1} of ${inputs.length} gave different bits when run concurrently with the others (array ${a}, byte ${t})`,
        );
      }
    }
  }
  return {
    name: c.name,
    status: 'pass',
    message: `${inputs.length} calls (${withBackward ? 'forward and backward' : 'forward'}) agree bit for bit`,
  };
}

async function runDevice(backend: Backend, c: ConformanceCase, spec: ProblemSpec): Promise<CaseResult> {
  const { upload, download } = backend;
  if (!upload || !download) {
    return {
      name: c.name,
      status: 'pass',
      message: 'a host backend (no upload/download): nothing to round-trip',
    };
  }
  const up = (h: HostTensor) => upload.call(backend, h);
  const down = (t: Tensor) => download.call(backend, t);
  const free = (ts: (Tensor | undefined)[]) => {
    for (const t of ts) if (t && isDeviceTensor(t) && backend.free) backend.free(t);
  };
  const backward = c.tags.includes('backward');
  const x = makeInputs(spec);
  const { options, wantLse } = callOptions(backend, spec, x.options);
  const problem = resolveProblem(x.q, x.k, x.v, options);
  const missing = missingOf(backend, problem, backward ? ['backward'] : []);
  const refs = referencesOf(spec, makeInputs(spec), backward);
  const held: Tensor[] = [];
  try {
    const [q, k, v] = [await up(x.q), await up(x.k), await up(x.v)];
    held.push(q, k, v);
    if (!backward) {
      let res: { out: Tensor; lse?: Float32Array | DeviceTensor };
      try {
        res = await backend.forward(q, k, v, options);
      } catch (e) {
        return thrown(c.name, 'forward on device tensors', e, missing);
      }
      if (!isDeviceTensor(res.out))
        failWith('device tensors went in but out is not a device tensor (device in, device out)');
      held.push(res.out);
      const out = await down(res.out);
      let lse: Float32Array | undefined;
      if (wantLse) {
        if (!res.lse || !isDeviceTensor(res.lse)) failWith('lse of a device call must be a device tensor');
        held.push(res.lse);
        const h = await down(res.lse);
        lse = h.data instanceof Float32Array ? h.data : failWith(`downloaded lse is ${h.dtype}, not float32`);
      }
      return verdictResult(c.name, checkForward(c.name, refs, x, out, lse, wantLse), missing);
    }
    const { out, lse } = backwardExtras(refs, x);
    const dout = await up(x.dout);
    const outD = await up(out);
    const lseD = await up({ dtype: 'float32', shape: problem.lseShape, data: lse });
    held.push(dout, outD, lseD);
    const bo = { ...options };
    delete bo.returnLse;
    let g: { dq: Tensor; dk: Tensor; dv: Tensor };
    try {
      g = await backend.backward(dout, q, k, v, outD, lseD as DeviceTensor, bo);
    } catch (e) {
      return thrown(c.name, 'backward on device tensors', e, missing);
    }
    for (const key of ['dq', 'dk', 'dv'] as const) {
      if (!isDeviceTensor(g[key])) failWith(`device tensors went in but ${key} is not a device tensor`);
      held.push(g[key]);
    }
    const host = { dq: await down(g.dq), dk: await down(g.dk), dv: await down(g.dv) };
    return verdictResult(c.name, checkGrads(c.name, refs, x, host), missing);
  } finally {
    free(held);
  }
}

// ---------------------------------------------------------------------------------------------

/**
 * Runs one case. Statuses: 'pass'; 'unsupported' when the backend refused it with UNSUPPORTED_FEATURE
 * (or HEAD_DIM_UNSUPPORTED past its maxHeadDim) for something its capabilities leave out; 'fail'
 * for anything else, with a message naming the case, the worst element and the bound.
 */
export async function runCase(
  backend: Backend,
  c: ConformanceCase,
  ctx: RunContext = {},
): Promise<CaseResult> {
  try {
    switch (c.kind) {
      case 'forward':
        return await runForward(backend, c, c.spec as ProblemSpec);
      case 'backward':
        return await runBackward(backend, c, c.spec as ProblemSpec);
      case 'dropout-stats':
        return await runDropoutStats(backend, c, c.spec as ProblemSpec);
      case 'error':
        return await runError(backend, c);
      case 'disposed':
        return await runDisposed(backend, c, ctx);
      case 'unsupported-features':
        return await runUnsupportedFeatures(backend, c);
      case 'immutability':
        return await runImmutability(backend, c, c.spec as ProblemSpec);
      case 'concurrency':
        return await runConcurrency(backend, c);
      case 'device':
        return await runDevice(backend, c, c.spec as ProblemSpec);
      default:
        return {
          name: c.name,
          status: 'fail',
          message: `unknown case kind ${String((c as ConformanceCase).kind)}`,
        };
    }
  } catch (e) {
    if (e instanceof CaseFailure) return { name: c.name, status: 'fail', message: `${c.name}: ${e.message}` };
    return {
      name: c.name,
      status: 'fail',
      message: `${c.name}: ${errorText(e)}${e instanceof Error && e.stack ? `\n${e.stack}` : ''}`,
    };
  }
}
