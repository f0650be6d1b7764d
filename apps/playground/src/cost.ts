/** The Cost tab: SPEC §10's model (block sizes, HBM accesses, activation memory) with GPU presets. */
import {
  activationBytesFlash,
  activationBytesStandard,
  flashBlockSizes,
  forwardFlops,
  gpuPresets,
  hbmAccessesFlash,
  hbmAccessesStandard,
} from '@flashattn/core';
import { logLogChart } from './charts.js';
import { byId, checked, el, fmtBytes, fmtCount, fmtMs, num } from './format.js';

const CUSTOM = 'custom';

interface CostInputs {
  preset: (typeof gpuPresets)[number] | null;
  mKiB: number;
  bytes: number;
  n: number;
  d: number;
  batch: number;
  heads: number;
  causal: boolean;
}

function read(): CostInputs {
  const name = byId<HTMLSelectElement>('cost-preset').value;
  return {
    preset: gpuPresets.find((p) => p.name === name) ?? null,
    mKiB: Math.max(1e-3, num('cost-m')),
    bytes: Number(byId<HTMLSelectElement>('cost-bytes').value),
    n: Math.max(1, num('cost-n') | 0),
    d: Math.max(1, num('cost-d') | 0),
    batch: Math.max(1, num('cost-b') | 0),
    heads: Math.max(1, num('cost-heads') | 0),
    causal: checked('cost-causal'),
  };
}

function row(label: string, std: string, flash: string, note = '', id = ''): HTMLElement {
  return el(
    'tr',
    id ? { id } : {},
    el('th', { text: label }),
    el('td', { text: std }),
    el('td', { text: flash }),
    el('td', { class: 'note', text: note }),
  );
}

function update(): void {
  const c = read();
  const M = Math.floor((c.mKiB * 1024) / c.bytes);
  const { Bc, Br } = flashBlockSizes(M, c.d);
  const perHeadStd = hbmAccessesStandard(c.n, c.d);
  const perHeadFlash = hbmAccessesFlash(c.n, c.d, M);
  const heads = c.batch * c.heads;
  const stdBytes = perHeadStd * heads * c.bytes;
  const flashBytes = perHeadFlash * heads * c.bytes;
  const shape = { seq: c.n, batch: c.batch, hidden: c.heads * c.d, heads: c.heads };
  const actStd = activationBytesStandard(shape);
  const actFlash = activationBytesFlash(shape);
  const flops = forwardFlops({
    batch: c.batch,
    headsQ: c.heads,
    seqQ: c.n,
    seqK: c.n,
    headDim: c.d,
    causal: c.causal,
  });
  const bw = c.preset?.hbmGBs;
  const t = (bytes: number) => (bw ? fmtMs((bytes / (bw * 1e9)) * 1e3) : '—');
  const table = byId('cost-table');
  table.dataset.bc = String(Bc);
  table.dataset.br = String(Br);
  table.dataset.hbmStandard = String(perHeadStd);
  table.dataset.hbmFlash = String(perHeadFlash);
  table.replaceChildren(
    el(
      'thead',
      {},
      el(
        'tr',
        {},
        el('th'),
        el('th', { text: 'standard attention' }),
        el('th', { text: 'FlashAttention' }),
        el('th', { text: '' }),
      ),
    ),
    el(
      'tbody',
      {},
      row(
        'on-chip M',
        '—',
        `${fmtCount(M)} elements`,
        `${c.mKiB} KiB per SM / ${c.bytes} B per element${c.preset ? `, ${c.preset.smCount} SMs` : ''}`,
      ),
      row(
        'block sizes',
        '—',
        `Bc = ${Bc}, Br = ${Br}`,
        'Bc = ⌈M / 4d⌉ key rows, Br = min(Bc, d) query rows',
        'cost-blocks',
      ),
      row(
        'HBM accesses per head',
        `${fmtCount(perHeadStd)} el`,
        `${fmtCount(perHeadFlash)} el`,
        'Θ(N·d + N²) against Θ(N²·d² / M)',
        'cost-hbm',
      ),
      row(
        'HBM traffic, all heads',
        fmtBytes(stdBytes),
        fmtBytes(flashBytes),
        `ratio ${(perHeadStd / perHeadFlash).toFixed(1)}× (d² / M = ${((c.d * c.d) / M).toPrecision(3)})`,
      ),
      row(
        '… at peak bandwidth',
        t(stdBytes),
        t(flashBytes),
        bw ? `${bw} GB/s` : 'no bandwidth for a custom device',
      ),
      row(
        'activations kept for backward',
        fmtBytes(actStd),
        fmtBytes(actFlash),
        '11·s·b·h + 5·a·s²·b against 12·s·b·h + 4·s·b·a (16-bit)',
        'cost-act',
      ),
      row(
        'forward FLOPs',
        fmtCount(flops),
        fmtCount(flops),
        'the same arithmetic: 4·d per allowed pair (§9)',
      ),
    ),
  );
  byId('cost-source').textContent = c.preset ? `Figures: ${c.preset.source}.` : 'Custom on-chip memory.';

  const ns: number[] = [];
  for (let n = 256; n <= 131072; n *= 2) ns.push(n);
  const markers = [{ x: c.n, label: `N = ${c.n}`, color: '#6b7280' }];
  logLogChart(byId('cost-hbm-chart'), {
    title: `HBM accesses per head (d = ${c.d}, M = ${fmtCount(M)})`,
    xLabel: 'N',
    yLabel: 'elements',
    xs: ns,
    series: [
      { label: 'standard: N·d + N²', values: ns.map((n) => hbmAccessesStandard(n, c.d)), color: '#b91c1c' },
      {
        label: 'FlashAttention: N²d²/M',
        values: ns.map((n) => hbmAccessesFlash(n, c.d, M)),
        color: '#15803d',
      },
    ],
    yFormat: fmtCount,
    markers,
  });
  logLogChart(byId('cost-act-chart'), {
    title: `Activation memory (b = ${c.batch}, heads = ${c.heads}, d = ${c.d})`,
    xLabel: 'N',
    yLabel: 'bytes',
    xs: ns,
    series: [
      {
        label: 'standard',
        values: ns.map((n) => activationBytesStandard({ ...shape, seq: n })),
        color: '#b91c1c',
      },
      {
        label: 'FlashAttention',
        values: ns.map((n) => activationBytesFlash({ ...shape, seq: n })),
        color: '#15803d',
      },
    ],
    yFormat: fmtBytes,
    yLog: 2,
    markers,
  });
}

export function initCost(): () => void {
  const sel = byId<HTMLSelectElement>('cost-preset');
  sel.replaceChildren(
    ...gpuPresets.map((p) => el('option', { value: p.name, text: p.name })),
    el('option', { value: CUSTOM, text: 'custom' }),
  );
  const syncPreset = () => {
    const p = gpuPresets.find((x) => x.name === sel.value);
    if (p) byId<HTMLInputElement>('cost-m').value = String(p.sharedMemPerSMKiB);
  };
  syncPreset();
  sel.addEventListener('change', syncPreset);
  byId('cost-m').addEventListener('input', () => {
    const p = gpuPresets.find((x) => x.name === sel.value);
    if (p && Number(byId<HTMLInputElement>('cost-m').value) !== p.sharedMemPerSMKiB) sel.value = CUSTOM;
  });
  let shown = false;
  const form = byId<HTMLFormElement>('cost-form');
  form.addEventListener('submit', (ev) => ev.preventDefault());
  form.addEventListener('input', () => shown && update());
  form.addEventListener('change', () => shown && update());
  return () => {
    shown = true;
    update();
  };
}
