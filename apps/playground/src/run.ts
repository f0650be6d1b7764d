/** The Run tab: one forward pass on a chosen backend, timed, checked against the float64 reference. */
import {
  type AttentionOptions,
  type Backend,
  countAllowedPairs,
  type DType,
  type HostTensor,
  resolveProblem,
  seqLenK,
  seqLenQ,
  type Tensor,
  toFloat32,
} from '@flashattn/core';
import { backendFor, backendInfo, reportedBytes, statusesOnce } from './backends.js';
import {
  byId,
  checked,
  el,
  errorText,
  fmtBytes,
  fmtCount,
  fmtErr,
  fmtMs,
  median,
  nextFrame,
  num,
} from './format.js';
import { drawHeatmap } from './heatmap.js';
import { type FormOptions, type Inputs, makeInputs, type Shape, toAttentionOptions } from './inputs.js';
import { refCall } from './ref-client.js';

/** Past the materialising limit, the two-pass reference checks this many last rows of each sequence. */
const SAMPLE_ROWS = 512;

/** Rows [rowStart, seqQ) of each of `shape.batch` sequences of `rowSize` values each. */
function lastRowsOf(a: Float32Array, shape: Shape, rowStart: number, rowSize: number): Float32Array {
  if (rowStart === 0) return a;
  const keep = shape.seqQ - rowStart;
  const out = new Float32Array(shape.batch * keep * rowSize);
  for (let b = 0; b < shape.batch; b++) {
    out.set(
      a.subarray((b * shape.seqQ + rowStart) * rowSize, (b + 1) * shape.seqQ * rowSize),
      b * keep * rowSize,
    );
  }
  return out;
}

/** Where the §8 bound cannot be computed (refLow materialises S), a loose bound per dtype. */
const FALLBACK_TOL: Record<DType, number> = { float32: 1e-4, float16: 1e-2, bfloat16: 5e-2 };

interface LastRun {
  inputs: Inputs;
  options: AttentionOptions;
  shape: Shape;
}
let last: LastRun | null = null;

const PRESETS: Record<string, Partial<Record<string, number>>> = {
  tiny: { b: 1, sq: 17, sk: 33, hq: 2, hk: 1, d: 8 },
  small: { b: 1, sq: 256, sk: 256, hq: 4, hk: 4, d: 64 },
  medium: { b: 1, sq: 1024, sk: 1024, hq: 4, hk: 4, d: 64 },
  gqa: { b: 2, sq: 128, sk: 512, hq: 8, hk: 2, d: 64 },
  long: { b: 1, sq: 4096, sk: 4096, hq: 1, hk: 1, d: 64 },
};

function status(text: string, kind: 'busy' | 'ok' | 'error' | '' = ''): void {
  const s = byId('run-status');
  s.textContent = text;
  s.className = `status ${kind}`;
}

function readShape(): Shape {
  return {
    batch: num('run-b'),
    seqQ: num('run-sq'),
    seqK: num('run-sk'),
    headsQ: num('run-hq'),
    headsK: num('run-hk'),
    headDim: num('run-d'),
  };
}

function readOptions(): FormOptions {
  return {
    causal: checked('run-causal'),
    windowLeft: num('run-wl'),
    windowRight: num('run-wr'),
    softcap: num('run-softcap'),
    alibi: checked('run-alibi'),
    dropoutP: num('run-dropout'),
    dropoutSeed: num('run-seed'),
    returnLse: checked('run-lse'),
  };
}

function describeOptions(o: FormOptions): string {
  const parts: string[] = [];
  if (o.causal) parts.push('causal');
  if (o.windowLeft >= 0 || o.windowRight >= 0) parts.push(`window [${o.windowLeft}, ${o.windowRight}]`);
  if (o.softcap > 0) parts.push(`softcap ${o.softcap}`);
  if (o.alibi) parts.push('ALiBi');
  if (o.dropoutP > 0) parts.push(`dropout ${o.dropoutP}`);
  return parts.join(', ') || '—';
}

function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) {
    const x = a[i];
    const y = b[i];
    if (x === y || (Number.isNaN(x) && Number.isNaN(y))) continue;
    const d = Math.abs(x - y);
    if (Number.isNaN(d)) return Number.NaN;
    if (d > m) m = d;
  }
  return m;
}

function maxAbs(a: ArrayLike<number>): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) if (Math.abs(a[i]) > m) m = Math.abs(a[i]);
  return m;
}

async function toHostLse(backend: Backend, lse: unknown): Promise<Float32Array | null> {
  if (lse instanceof Float32Array) return lse;
  if (lse && backend.download) {
    const h = await backend.download(lse as Tensor);
    return toFloat32(h);
  }
  return null;
}

async function timeResident(
  backend: Backend,
  x: Inputs,
  opts: AttentionOptions,
  repeats: number,
): Promise<number | null> {
  if (!backend.upload || !backend.download) return null;
  const q = await backend.upload(x.q);
  const k = await backend.upload(x.k);
  const v = await backend.upload(x.v);
  // Host backends hand the same tensor back: no separate resident timing to show.
  if (q === (x.q as Tensor)) return null;
  const o = { ...opts, returnLse: false };
  const times: number[] = [];
  try {
    for (let r = 0; r <= repeats; r++) {
      const t0 = performance.now();
      const res = await backend.forward(q, k, v, o);
      // Reading the output back is the only portable way to know the device has finished.
      await backend.download(res.out);
      const t = performance.now() - t0;
      backend.free?.(res.out);
      if (r > 0) times.push(t);
    }
  } finally {
    backend.free?.(q);
    backend.free?.(k);
    backend.free?.(v);
  }
  return median(times);
}

function resultRow(label: string, value: string | Node, id?: string): HTMLElement {
  return el('div', { class: 'kv' }, el('dt', { text: label }), el('dd', id ? { id } : {}, value));
}

async function runOnce(): Promise<void> {
  const go = byId<HTMLButtonElement>('run-go');
  const result = byId('run-result');
  go.disabled = true;
  const name = byId<HTMLSelectElement>('run-backend').value;
  const threads = num('run-threads');
  const shape = readShape();
  const form = readOptions();
  const dtype = byId<HTMLSelectElement>('run-dtype').value as DType;
  const repeats = Math.max(1, Math.min(50, num('run-repeats') | 0));
  result.dataset.state = 'running';
  delete result.dataset.maxError;
  try {
    status('making inputs…', 'busy');
    await nextFrame();
    const x = makeInputs(shape, dtype, form.dropoutSeed + 1000);
    const opts = toAttentionOptions(form, shape.headsQ);
    const p = resolveProblem(x.q, x.k, x.v, opts);
    const pairs = countAllowedPairs(
      p,
      (b) => seqLenQ(p, b),
      (b) => seqLenK(p, b),
    );
    const flops = 4 * shape.headDim * pairs;

    status(`starting ${name}…`, 'busy');
    const backend = await backendFor(name, threads);
    status(`${backend.name}: warm-up…`, 'busy');
    await nextFrame();
    const first = await backend.forward(x.q, x.k, x.v, opts);
    const bytes = reportedBytes(backend);
    const times: number[] = [];
    for (let r = 0; r < repeats; r++) {
      status(`${backend.name}: timed run ${r + 1} of ${repeats}…`, 'busy');
      await nextFrame();
      const t0 = performance.now();
      await backend.forward(x.q, x.k, x.v, opts);
      times.push(performance.now() - t0);
    }
    let resident: number | null = null;
    try {
      status(`${backend.name}: timing with inputs resident on the device…`, 'busy');
      resident = await timeResident(backend, x, opts, repeats);
    } catch {
      resident = null;
    }
    const t = median(times);

    status('float64 reference (in a worker)…', 'busy');
    const ref = await refCall({
      kind: 'check',
      q: x.q,
      k: x.k,
      v: x.v,
      options: opts,
      sampleRows: checked('run-fullref') ? 0 : SAMPLE_ROWS,
    });
    // The reference may cover only the last rows of each sequence: compare those.
    const out = lastRowsOf(
      toFloat32(first.out as HostTensor),
      shape,
      ref.rowStart,
      shape.headsQ * shape.headDim,
    );
    const err = maxAbsDiff(out, ref.out);
    const lseFull = form.returnLse ? await toHostLse(backend, first.lse) : null;
    const lse = lseFull
      ? lastRowsOf(lseFull, { ...shape, batch: shape.batch * shape.headsQ }, ref.rowStart, 1)
      : null;
    const lseErr = lse ? maxAbsDiff(lse, ref.lse) : null;
    const bound = ref.bound ?? FALLBACK_TOL[dtype] * Math.max(1, maxAbs(ref.out));
    const pass = Number.isFinite(err) && err <= bound;
    const gflops = flops / (t * 1e6);

    result.dataset.state = 'done';
    result.dataset.backend = backend.name;
    result.dataset.maxError = String(err);
    result.dataset.lseError = lseErr == null ? '' : String(lseErr);
    result.dataset.bound = String(bound);
    result.dataset.refMethod = ref.method;
    result.dataset.refRowStart = String(ref.rowStart);
    result.dataset.pass = String(pass);
    result.dataset.timeMs = String(t);
    result.dataset.gflops = String(gflops);
    const verdict = el('span', {
      class: pass ? 'verdict ok' : 'verdict bad',
      text: pass ? '✓ within bound' : '✗ outside bound',
    });
    result.replaceChildren(
      el(
        'dl',
        { class: 'kvs' },
        resultRow('backend', `${backend.name}${name === 'auto' ? ' (auto)' : ''}`, 'run-out-backend'),
        resultRow(`time (median of ${repeats}, host → host)`, fmtMs(t), 'run-out-time'),
        resultRow(
          'time with inputs resident',
          resident == null ? 'n/a (host backend)' : `${fmtMs(resident)} (incl. reading out back)`,
        ),
        resultRow('FLOPs (4·d·allowed pairs)', fmtCount(flops)),
        resultRow('GFLOP/s', gflops.toFixed(2), 'run-out-gflops'),
        resultRow('max |out − ref64|', fmtErr(err), 'run-out-err'),
        resultRow('max |lse − ref64|', lseErr == null ? '—' : fmtErr(lseErr), 'run-out-lse-err'),
        resultRow(
          ref.bound == null
            ? 'bound (fallback: refLow does not fit)'
            : 'bound (SPEC §8: 2·|refLow − ref64| + floor)',
          fmtErr(bound),
        ),
        resultRow('verdict', verdict, 'run-out-verdict'),
        resultRow(
          'reference',
          `${
            ref.method === 'standard'
              ? 'referenceForward64 (standard, materialising)'
              : ref.rowStart > 0
                ? `referenceForwardTwoPass (sq·sk > 2²³) on the last ${shape.seqQ - ref.rowStart} query rows of each sequence`
                : 'referenceForwardTwoPass (sq·sk > 2²³)'
          } in ${fmtMs(ref.ms)}`,
        ),
        resultRow('memory the backend reports', bytes == null ? 'not reported' : fmtBytes(bytes)),
        resultRow('backend info', backendInfo(backend, shape.headDim) ?? '—', 'run-out-info'),
      ),
    );
    const tr = el(
      'tr',
      { class: pass ? '' : 'bad' },
      el('td', { text: backend.name }),
      el('td', {
        text: `${shape.batch}×${shape.seqQ}×${shape.headsQ}×${shape.headDim}, sk ${shape.seqK}, hk ${shape.headsK}`,
      }),
      el('td', { text: dtype }),
      el('td', { text: describeOptions(form) }),
      el('td', { text: fmtMs(t) }),
      el('td', { text: resident == null ? '—' : fmtMs(resident) }),
      el('td', { text: gflops.toFixed(2) }),
      el('td', { text: fmtErr(err) }),
      el('td', { text: fmtErr(bound) }),
      el('td', { text: pass ? '✓' : '✗' }),
    );
    byId('run-history').querySelector('tbody')?.prepend(tr);
    status(`done: ${backend.name}, ${fmtMs(t)}, max error ${fmtErr(err)}`, pass ? 'ok' : 'error');
    last = { inputs: x, options: opts, shape };
    fillHeatSelects(shape);
    await drawRunHeatmap();
  } catch (e) {
    result.dataset.state = 'error';
    result.dataset.error = errorText(e);
    result.replaceChildren(el('p', { class: 'error', text: errorText(e) }));
    status('failed', 'error');
  } finally {
    go.disabled = false;
  }
}

function fillHeatSelects(shape: Shape): void {
  const fill = (id: string, n: number) => {
    const s = byId<HTMLSelectElement>(id);
    const keep = Math.min(Number(s.value) || 0, n - 1);
    s.replaceChildren(...Array.from({ length: n }, (_, i) => el('option', { value: i, text: String(i) })));
    s.value = String(keep);
  };
  fill('run-heat-batch', shape.batch);
  fill('run-heat-head', shape.headsQ);
}

async function drawRunHeatmap(): Promise<void> {
  if (!last) return;
  const batch = Number(byId<HTMLSelectElement>('run-heat-batch').value) || 0;
  const head = Number(byId<HTMLSelectElement>('run-heat-head').value) || 0;
  const { q, k, v } = last.inputs;
  const r = await refCall({ kind: 'probs', q, k, v, options: last.options, batch, head, maxCells: 256 });
  const max = drawHeatmap(byId<HTMLCanvasElement>('run-heatmap'), r.data, r.rows, r.cols, { size: 384 });
  byId('run-heat-max').textContent = max.toPrecision(3);
  byId('run-heat-note').textContent =
    r.rows < r.sq || r.cols < r.sk
      ? `${r.sq}×${r.sk} probabilities, max-pooled to ${r.rows}×${r.cols}`
      : `${r.sq} queries (rows) × ${r.sk} keys (columns)`;
}

function applyPreset(name: string): void {
  const p = PRESETS[name];
  if (!p) return;
  for (const [k, v] of Object.entries(p)) byId<HTMLInputElement>(`run-${k}`).value = String(v);
}

export async function initRun(): Promise<void> {
  const form = byId<HTMLFormElement>('run-form');
  form.addEventListener('submit', (ev) => {
    ev.preventDefault();
    void runOnce();
  });
  for (const b of form.querySelectorAll<HTMLButtonElement>('[data-preset]'))
    b.addEventListener('click', () => applyPreset(b.dataset.preset ?? ''));
  byId('run-heat-batch').addEventListener('change', () => void drawRunHeatmap());
  byId('run-heat-head').addEventListener('change', () => void drawRunHeatmap());

  const select = byId<HTMLSelectElement>('run-backend');
  select.replaceChildren(el('option', { value: 'auto', text: 'auto (best available)' }));
  const statuses = await statusesOnce();
  const threaded = new Set(statuses.filter((s) => s.threaded).map((s) => s.name));
  const syncThreads = () => {
    byId('run-threads-label').hidden = !threaded.has(select.value);
  };
  select.addEventListener('change', syncThreads);
  for (const s of statuses) {
    select.append(
      el('option', {
        value: s.name,
        disabled: !s.available,
        text: s.available ? s.name : `${s.name} (unavailable)`,
        title: s.reason ?? '',
      }),
    );
  }
  syncThreads();
  const table = byId('backend-table');
  table.replaceChildren(
    el('thead', {}, el('tr', {}, el('th', { text: 'backend' }), el('th', { text: 'status' }))),
    el(
      'tbody',
      {},
      ...statuses.map((s) =>
        el(
          'tr',
          { 'data-backend': s.name, 'data-available': String(s.available) },
          el('td', {}, el('code', { text: s.name })),
          el(
            'td',
            { class: s.available ? 'ok' : 'muted' },
            s.available ? 'available' : `unavailable: ${s.reason ?? 'no reason given'}`,
          ),
        ),
      ),
    ),
  );
}
