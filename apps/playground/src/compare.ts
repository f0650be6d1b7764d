/**
 * The Compare tab: time and memory against N for every available backend, and the standard
 * (materialising) algorithm until it refuses: the O(N²) wall.
 */
import {
  activationBytesFlash,
  activationBytesStandard,
  type DType,
  forwardFlops,
  STANDARD_REFERENCE_MAX_ELEMENTS,
} from '@flashattn/core';
import { backendFor, reportedBytes, statusesOnce } from './backends.js';
import { logLogChart, type Marker, PALETTE, type SeriesSpec } from './charts.js';
import {
  byId,
  checked,
  el,
  errorText,
  fmtBytes,
  fmtMs,
  fmtTickMs,
  median,
  nextFrame,
  num,
} from './format.js';
import { makeInputs } from './inputs.js';
import { RefError, refCall } from './ref-client.js';

const STANDARD = 'standard (materialising)';

/** One colour per backend across both charts; red is the standard algorithm's. */
const BACKEND_COLORS: Record<string, string> = {
  webgpu: '#2563eb',
  'wasm-simd': '#9333ea',
  cpu: '#ea580c',
  reference: '#0891b2',
  [STANDARD]: '#b91c1c',
};

interface Sweep {
  ns: number[];
  batch: number;
  heads: number;
  headDim: number;
  dtype: DType;
  causal: boolean;
  /** name → ms per N (null = not run) */
  times: Map<string, (number | null)[]>;
  /** name → bytes the backend reported per N */
  bytes: Map<string, (number | null)[]>;
  /** name → why it stopped, and at which N */
  notes: Map<string, string>;
  wallN: number | null;
}

let current: Sweep | null = null;
let stopRequested = false;

function status(text: string, kind: 'busy' | 'ok' | 'error' | '' = ''): void {
  const s = byId('cmp-status');
  s.textContent = text;
  s.className = `status ${kind}`;
}

function parseNs(text: string): number[] {
  const ns = text
    .split(/[\s,;]+/)
    .map((t) => Math.floor(Number(t)))
    .filter((n) => Number.isFinite(n) && n >= 1 && n <= 1 << 20);
  return [...new Set(ns)].sort((a, b) => a - b);
}

function modelSeries(s: Pick<Sweep, 'ns' | 'batch' | 'heads' | 'headDim'>): SeriesSpec[] {
  const shape = (n: number) => ({ seq: n, batch: s.batch, hidden: s.heads * s.headDim, heads: s.heads });
  return [
    {
      label: 'standard, §10 model (16-bit)',
      values: s.ns.map((n) => activationBytesStandard(shape(n))),
      color: '#b91c1c',
      dash: [4, 4],
    },
    {
      label: 'FlashAttention, §10 model',
      values: s.ns.map((n) => activationBytesFlash(shape(n))),
      color: '#15803d',
      dash: [4, 4],
    },
  ];
}

function draw(s: Sweep): void {
  const names = [...s.times.keys()];
  const color = (name: string, i: number) => BACKEND_COLORS[name] ?? PALETTE[(i + 4) % PALETTE.length];
  const markers: Marker[] = [];
  if (s.wallN != null) markers.push({ x: s.wallN, label: `standard refuses (N=${s.wallN}): the O(N²) wall` });
  logLogChart(byId('cmp-time-chart'), {
    title: `Forward time, b=${s.batch}, heads=${s.heads}, d=${s.headDim}, ${s.dtype}${s.causal ? ', causal' : ''}`,
    xLabel: 'N',
    yLabel: 'time',
    xs: s.ns,
    series: names.map((name, i) => ({ label: name, values: s.times.get(name) ?? [], color: color(name, i) })),
    yFormat: fmtMs,
    yTickFormat: fmtTickMs,
    markers,
  });
  const mem: SeriesSpec[] = modelSeries(s);
  if (s.times.has(STANDARD)) {
    mem.push({
      label: 'standard reference: S/P matrix (float64)',
      values: s.ns.map((n, i) => (s.times.get(STANDARD)?.[i] != null ? 8 * n * n : null)),
      color: '#7f1d1d',
    });
  }
  for (const [name, vs] of s.bytes) {
    if (vs.some((v) => v != null))
      mem.push({ label: `${name} (reported)`, values: vs, color: BACKEND_COLORS[name] });
  }
  logLogChart(byId('cmp-mem-chart'), {
    title: 'Memory against N',
    xLabel: 'N',
    yLabel: 'bytes',
    xs: s.ns,
    series: mem,
    yFormat: fmtBytes,
    yLog: 2,
    markers: [
      {
        y: 8 * STANDARD_REFERENCE_MAX_ELEMENTS,
        label: 'reference limit: 2²³ float64 per head',
        color: '#7f1d1d',
      },
      ...(s.wallN != null ? [{ x: s.wallN, label: 'wall' }] : []),
    ],
  });
  drawTable(s);
}

function drawTable(s: Sweep): void {
  const names = [...s.times.keys()];
  const table = byId('cmp-table');
  table
    .querySelector('thead')
    ?.replaceChildren(
      el(
        'tr',
        {},
        el('th', { text: 'N' }),
        ...names.map((n) => el('th', { text: n })),
        el('th', { text: 'GFLOP/s (best)' }),
        el('th', { text: 'std model' }),
        el('th', { text: 'flash model' }),
      ),
    );
  const models = modelSeries(s);
  table.querySelector('tbody')?.replaceChildren(
    ...s.ns.map((n, i) => {
      const flops = forwardFlops({
        batch: s.batch,
        headsQ: s.heads,
        seqQ: n,
        seqK: n,
        headDim: s.headDim,
        causal: s.causal,
      });
      let best = Number.POSITIVE_INFINITY;
      const cells = names.map((name) => {
        const t = s.times.get(name)?.[i];
        if (t != null && name !== STANDARD) best = Math.min(best, t);
        const refused = name === STANDARD && s.wallN != null && n >= s.wallN;
        return el('td', {
          'data-backend': name,
          'data-n': n,
          class: refused ? 'bad' : '',
          text: t != null ? fmtMs(t) : refused ? 'refused (OUT_OF_MEMORY)' : '—',
        });
      });
      return el(
        'tr',
        {},
        el('td', { text: String(n) }),
        ...cells,
        el('td', { text: Number.isFinite(best) ? (flops / (best * 1e6)).toFixed(2) : '—' }),
        el('td', { text: fmtBytes(models[0].values[i] ?? Number.NaN) }),
        el('td', { text: fmtBytes(models[1].values[i] ?? Number.NaN) }),
      );
    }),
    ...[...s.notes].map(([name, note]) =>
      el('tr', { class: 'note-row' }, el('td', { colspan: names.length + 4, text: `${name}: ${note}` })),
    ),
  );
}

async function sweep(): Promise<void> {
  const go = byId<HTMLButtonElement>('cmp-go');
  const stop = byId<HTMLButtonElement>('cmp-stop');
  go.disabled = true;
  stop.disabled = false;
  stopRequested = false;
  const root = byId('tab-compare');
  root.dataset.state = 'running';
  const ns = parseNs(byId<HTMLInputElement>('cmp-ns').value);
  const selected = [...byId('cmp-backends').querySelectorAll<HTMLInputElement>('input:checked')].map(
    (i) => i.value,
  );
  const withStandard = checked('cmp-standard');
  const s: Sweep = {
    ns,
    batch: num('cmp-b'),
    heads: num('cmp-hq'),
    headDim: num('cmp-d'),
    dtype: byId<HTMLSelectElement>('cmp-dtype').value as DType,
    causal: checked('cmp-causal'),
    times: new Map(),
    bytes: new Map(),
    notes: new Map(),
    wallN: null,
  };
  const budgetMs = Math.max(0.001, num('cmp-budget')) * 1000;
  const repeats = Math.max(1, num('cmp-repeats') | 0);
  for (const name of selected) {
    s.times.set(
      name,
      ns.map(() => null),
    );
    s.bytes.set(
      name,
      ns.map(() => null),
    );
  }
  if (withStandard)
    s.times.set(
      STANDARD,
      ns.map(() => null),
    );
  current = s;
  const stopped = new Set<string>();
  try {
    if (ns.length === 0) throw new Error('give at least one N');
    draw(s);
    for (let i = 0; i < ns.length && !stopRequested; i++) {
      const n = ns[i];
      const x = makeInputs(
        { batch: s.batch, seqQ: n, seqK: n, headsQ: s.heads, headsK: s.heads, headDim: s.headDim },
        s.dtype,
        n,
      );
      const opts = s.causal ? { causal: true } : {};
      for (const name of selected) {
        if (stopped.has(name) || stopRequested) continue;
        status(`N=${n}: ${name}…`, 'busy');
        await nextFrame();
        try {
          const backend = await backendFor(name);
          await backend.forward(x.q, x.k, x.v, opts);
          s.bytes.get(name)![i] = reportedBytes(backend);
          const times: number[] = [];
          for (let r = 0; r < repeats; r++) {
            const t0 = performance.now();
            await backend.forward(x.q, x.k, x.v, opts);
            times.push(performance.now() - t0);
            if (times[r] > budgetMs) break;
          }
          const t = median(times);
          s.times.get(name)![i] = t;
          if (t > budgetMs) {
            stopped.add(name);
            s.notes.set(name, `stopped after N=${n} (${fmtMs(t)} > ${fmtMs(budgetMs)} per run)`);
          }
        } catch (e) {
          stopped.add(name);
          s.notes.set(name, `failed at N=${n}: ${errorText(e)}`);
        }
      }
      if (withStandard && s.wallN == null && !stopRequested) {
        // Too slow to time further is not refusal: past the limit it refuses at once, so ask anyway.
        const tooBig = n * n > STANDARD_REFERENCE_MAX_ELEMENTS;
        if (!stopped.has(STANDARD) || tooBig) {
          status(`N=${n}: standard algorithm (float64, in a worker)…`, 'busy');
          try {
            const r = await refCall({ kind: 'standard', q: x.q, k: x.k, v: x.v, options: opts });
            s.times.get(STANDARD)![i] = r.ms;
            if (r.ms > budgetMs) {
              stopped.add(STANDARD);
              s.notes.set(
                STANDARD,
                `not timed past N=${n} (${fmtMs(r.ms)}), but asked again where it must refuse`,
              );
            }
          } catch (e) {
            if (e instanceof RefError && e.code === 'OUT_OF_MEMORY') {
              s.wallN = n;
              s.notes.set(STANDARD, `refused at N=${n}: ${e.message}`);
            } else {
              stopped.add(STANDARD);
              s.notes.set(STANDARD, `failed at N=${n}: ${errorText(e)}`);
            }
          }
        }
      }
      draw(s);
    }
    root.dataset.state = 'done';
    root.dataset.wall = s.wallN == null ? '' : String(s.wallN);
    status(
      stopRequested
        ? 'stopped'
        : `done${s.wallN != null ? `: the standard algorithm refused at N=${s.wallN}` : ''}`,
      'ok',
    );
  } catch (e) {
    root.dataset.state = 'error';
    status(errorText(e), 'error');
  } finally {
    go.disabled = false;
    stop.disabled = true;
  }
}

function drawEmpty(): void {
  const ns = parseNs(byId<HTMLInputElement>('cmp-ns').value);
  const s: Sweep = {
    ns,
    batch: num('cmp-b'),
    heads: num('cmp-hq'),
    headDim: num('cmp-d'),
    dtype: byId<HTMLSelectElement>('cmp-dtype').value as DType,
    causal: checked('cmp-causal'),
    times: new Map(),
    bytes: new Map(),
    notes: new Map(),
    wallN: null,
  };
  draw(s);
}

/** Wires the form; returns what to do the first time the tab is shown. */
export function initCompare(): () => void {
  byId<HTMLFormElement>('cmp-form').addEventListener('submit', (ev) => {
    ev.preventDefault();
    void sweep();
  });
  byId('cmp-stop').addEventListener('click', () => {
    stopRequested = true;
  });
  void statusesOnce().then((statuses) => {
    const box = byId('cmp-backends');
    box.replaceChildren(
      el('span', { class: 'label', text: 'Backends:' }),
      ...statuses.map((s) =>
        el(
          'label',
          { class: s.available ? 'check' : 'check muted', title: s.reason ?? '' },
          el('input', {
            type: 'checkbox',
            value: s.name,
            checked: s.available && s.name !== 'reference',
            disabled: !s.available,
          }),
          ` ${s.name}${s.available ? '' : ' (unavailable)'}`,
        ),
      ),
    );
    // With core alone, the reference backend is all there is: check it.
    if (!statuses.some((s) => s.available && s.name !== 'reference')) {
      const ref = box.querySelector<HTMLInputElement>('input[value="reference"]');
      if (ref) ref.checked = true;
    }
  });
  return () => {
    if (!current) drawEmpty();
    else draw(current);
  };
}
