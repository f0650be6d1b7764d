/**
 * The See tab: FlashAttention-2's forward for one head, one block at a time, on a small example.
 * The row state is core's own online softmax (newRowState, rescaleRow, updateRow, finalizeRow); the
 * check at the end is the plain softmax of the standard algorithm (referenceForward64).
 */
import {
  allowedKeyRange,
  finalizeRow,
  kvHead,
  kvOffset,
  newRowState,
  type Problem,
  qOffset,
  type RowState,
  referenceForward64,
  rescaleRow,
  resolveProblem,
  toFloat32,
  updateRow,
} from '@flashattn/core';
import { byId, checked, el, errorText, fmtCell, fmtErr, num } from './format.js';
import { drawHeatmap } from './heatmap.js';
import { makeInputs, normals } from './inputs.js';

type Phase = 'start' | 'load-q' | 'scores' | 'rescale' | 'accumulate' | 'skip' | 'finalize' | 'done';

interface RowSnap {
  i: number;
  m: number;
  l: number;
  acc: number[];
  /** The block's row max, on 'scores' steps. */
  blockMax: number | null;
  /** m before this block: shown as old → new. */
  mOld: number | null;
  /** ℓ before this step (rescale or accumulate): shown as old → new. */
  lOld?: number | null;
  /** exp(m_old − m_new) when the max grew from a finite value (a real rescale). */
  alpha: number | null;
}

interface Snapshot {
  phase: Phase;
  qb: number;
  kb: number;
  r0: number;
  r1: number;
  c0: number;
  c1: number;
  S: number[][] | null;
  P: number[][] | null;
  rows: RowSnap[];
  out: (number[] | null)[];
  lse: (number | null)[];
  justFinalized: boolean;
  /** 1 = score computed, 0 = not yet, per (i, j). */
  seen: Uint8Array;
  desc: string;
}

interface Example {
  sq: number;
  sk: number;
  d: number;
  heads: number;
  head: number;
  br: number;
  bc: number;
  causal: boolean;
  p: Problem;
  q: Float32Array;
  k: Float32Array;
  v: Float32Array;
  /** Full score matrix of the stepped head (−∞ where masked), for colouring revealed cells. */
  scores: Float64Array;
  /** Standard-algorithm output and P of every head. */
  refOut: Float64Array;
  steps: Snapshot[];
}

let ex: Example | null = null;
let at = 0;

function scoreOf(e: Omit<Example, 'steps' | 'scores' | 'refOut'>, h: number, i: number, j: number): number {
  const qo = qOffset(e.p, 0, i, h);
  const ko = kvOffset(e.p, 0, j, kvHead(e.p, h));
  let dot = 0;
  for (let c = 0; c < e.d; c++) dot += e.q[qo + c] * e.k[ko + c];
  return e.p.scale * dot;
}

function snapRow(i: number, st: RowState, extra: Partial<RowSnap> = {}): RowSnap {
  return { i, m: st.m, l: st.l, acc: Array.from(st.acc), blockMax: null, mOld: null, alpha: null, ...extra };
}

function build(): Example {
  const sq = Math.max(1, Math.min(24, num('see-sq') | 0));
  const sk = Math.max(1, Math.min(24, num('see-sk') | 0));
  const d = Math.max(1, Math.min(8, num('see-d') | 0));
  const heads = Math.max(1, Math.min(4, num('see-heads') | 0));
  const head = Math.min(heads - 1, Number(byId<HTMLSelectElement>('see-head').value) || 0);
  const br = Math.max(1, Math.min(sq, num('see-br') | 0));
  const bc = Math.max(1, Math.min(sk, num('see-bc') | 0));
  const causal = checked('see-causal');
  const seed = num('see-seed') | 0;
  const spread = Math.max(0.1, num('see-spread'));
  const base = makeInputs(
    { batch: 1, seqQ: sq, seqK: sk, headsQ: heads, headsK: heads, headDim: d },
    'float32',
    seed,
  );
  // q with a chosen spread: larger = peakier rows = more visible rescales.
  const qData = normals(sq * heads * d, seed * 7 + 5, spread);
  const qT = { ...base.q, data: qData };
  const options = causal ? { causal: true } : {};
  const p = resolveProblem(qT, base.k, base.v, options);
  const q = toFloat32(qT);
  const k = toFloat32(base.k);
  const v = toFloat32(base.v);
  const ref = referenceForward64(qT, base.k, base.v, options);
  const partial = { sq, sk, d, heads, head, br, bc, causal, p, q, k, v };
  const scores = new Float64Array(sq * sk).fill(Number.NEGATIVE_INFINITY);
  for (let i = 0; i < sq; i++) {
    const [lo, hi] = allowedKeyRange(p, i, sq, sk);
    for (let j = lo; j < hi; j++) scores[i * sk + j] = scoreOf(partial, head, i, j);
  }

  const steps: Snapshot[] = [];
  const out: (number[] | null)[] = Array.from({ length: sq }, () => null);
  const lse: (number | null)[] = Array.from({ length: sq }, () => null);
  const seen = new Uint8Array(sq * sk);
  const hk = kvHead(p, head);
  const push = (s: Omit<Snapshot, 'out' | 'lse' | 'seen' | 'justFinalized'> & { justFinalized?: boolean }) =>
    steps.push({
      justFinalized: false,
      ...s,
      out: out.map((r) => (r ? [...r] : null)),
      lse: [...lse],
      seen: seen.slice(),
    });

  push({
    phase: 'start',
    qb: -1,
    kb: -1,
    r0: 0,
    r1: 0,
    c0: 0,
    c1: 0,
    S: null,
    P: null,
    rows: [],
    desc: `Q is ${sq}×${d}, K and V are ${sk}×${d} (head ${head} of ${heads}), all in HBM. FlashAttention-2 loops over blocks of Br = ${br} query rows (outer) and Bc = ${bc} key/value rows (inner), keeping for each query row a running max m, a running sum ℓ and an unnormalised output acc in SRAM. The ${sq}×${sk} matrix S is never stored.`,
  });

  const tmpOut = new Float64Array(d);
  for (let r0 = 0, qb = 0; r0 < sq; r0 += br, qb++) {
    const r1 = Math.min(sq, r0 + br);
    const states = Array.from({ length: r1 - r0 }, () => newRowState(d));
    push({
      phase: 'load-q',
      qb,
      kb: -1,
      r0,
      r1,
      c0: 0,
      c1: 0,
      S: null,
      P: null,
      rows: states.map((st, t) => snapRow(r0 + t, st)),
      desc: `Load Q block ${qb} (rows ${r0}…${r1 - 1}) into SRAM. Each row starts with m = −∞, ℓ = 0, acc = 0.`,
    });
    for (let c0 = 0, kb = 0; c0 < sk; c0 += bc, kb++) {
      const c1 = Math.min(sk, c0 + bc);
      // A block that no row of the Q block may see is never loaded (causal / window skipping).
      let any = false;
      for (let i = r0; i < r1; i++) {
        const [lo, hi] = allowedKeyRange(p, i, sq, sk);
        if (lo < c1 && hi > c0 && hi > lo) any = true;
      }
      if (!any) {
        push({
          phase: 'skip',
          qb,
          kb,
          r0,
          r1,
          c0,
          c1,
          S: null,
          P: null,
          rows: states.map((st, t) => snapRow(r0 + t, st)),
          desc: `K/V block ${kb} (keys ${c0}…${c1 - 1}) is masked for every row of this Q block: skipped, never loaded.`,
        });
        continue;
      }
      const S: number[][] = [];
      for (let i = r0; i < r1; i++) {
        const row: number[] = [];
        for (let j = c0; j < c1; j++) {
          row.push(scores[i * sk + j]);
          seen[i * sk + j] = 1;
        }
        S.push(row);
      }
      const blockMax = S.map((row) => Math.max(...row));
      const mOld = states.map((st) => st.m);
      push({
        phase: 'scores',
        qb,
        kb,
        r0,
        r1,
        c0,
        c1,
        S,
        P: null,
        rows: states.map((st, t) => snapRow(r0 + t, st, { blockMax: blockMax[t] })),
        desc: `Load K/V block ${kb} (keys ${c0}…${c1 - 1}) into SRAM and compute S = scale · Q Kᵀ for this block (−∞ where masked). Each row's block max is compared with its running max m.`,
      });
      // Rescale: where the block max exceeds m, multiply ℓ and acc by exp(m_old − m_new).
      const lBefore = states.map((st) => st.l);
      const alphas: (number | null)[] = states.map(() => null);
      let rescaled = 0;
      states.forEach((st, t) => {
        const bm = blockMax[t];
        if (bm > st.m) {
          if (st.m !== Number.NEGATIVE_INFINITY) {
            alphas[t] = Math.exp(st.m - bm);
            rescaled++;
          }
          rescaleRow(st, bm);
        }
      });
      if (rescaled > 0) {
        push({
          phase: 'rescale',
          qb,
          kb,
          r0,
          r1,
          c0,
          c1,
          S,
          P: null,
          rows: states.map((st, t) =>
            snapRow(r0 + t, st, { blockMax: blockMax[t], mOld: mOld[t], alpha: alphas[t], lOld: lBefore[t] }),
          ),
          desc: `The max grew in ${rescaled} row${rescaled > 1 ? 's' : ''}: ℓ and acc, which were sums of exp(s − m_old), are multiplied by α = exp(m_old − m_new) so that they are sums of exp(s − m_new). Nothing already computed is recomputed.`,
        });
      }
      // Accumulate: P~ = exp(S − m), ℓ += rowsum(P~), acc += P~ V.
      const P: number[][] = S.map((row, t) =>
        row.map((x) => (states[t].m === Number.NEGATIVE_INFINITY ? 0 : Math.exp(x - states[t].m))),
      );
      const lMid = states.map((st) => st.l);
      states.forEach((st, t) => {
        updateRow(st, S[t], c1 - c0, v, (u) => kvOffset(p, 0, c0 + u, hk));
      });
      push({
        phase: 'accumulate',
        qb,
        kb,
        r0,
        r1,
        c0,
        c1,
        S,
        P,
        rows: states.map((st, t) =>
          snapRow(r0 + t, st, { blockMax: blockMax[t], mOld: mOld[t], alpha: alphas[t], lOld: lMid[t] }),
        ),
        desc: `P̃ = exp(S − m) (unnormalised, in SRAM only); ℓ += rowsum(P̃); acc += P̃ · V_block. K/V block ${kb} can now leave SRAM.`,
      });
    }
    // Finalize: O = acc / ℓ, lse = m + ln ℓ, written to HBM once.
    const before = states.map((st, t) => snapRow(r0 + t, st));
    states.forEach((st, t) => {
      const l = finalizeRow(st, tmpOut, 0);
      out[r0 + t] = Array.from(tmpOut);
      lse[r0 + t] = l;
    });
    push({
      phase: 'finalize',
      qb,
      kb: -1,
      r0,
      r1,
      c0: 0,
      c1: 0,
      S: null,
      P: null,
      rows: before,
      justFinalized: true,
      desc: `All K/V blocks seen: divide once, O_i = acc / ℓ, and keep lse_i = m + ln ℓ (4 bytes per row) for the backward pass. Write O block ${qb} to HBM.`,
    });
  }
  push({
    phase: 'done',
    qb: -1,
    kb: -1,
    r0: 0,
    r1: 0,
    c0: 0,
    c1: 0,
    S: null,
    P: null,
    rows: [],
    desc: 'Done. The result is checked against the plain softmax(S)·V of the standard algorithm, which stores the whole S and P.',
  });
  return { ...partial, scores, refOut: ref.out, steps };
}

function matrix(
  title: string,
  rows: number[][],
  rowLabels: string[],
  colLabels: string[] | null,
  cls = '',
): HTMLElement {
  return el(
    'div',
    { class: `mat ${cls}` },
    el('div', { class: 'mat-title', text: title }),
    el(
      'table',
      {},
      colLabels
        ? el('thead', {}, el('tr', {}, el('th'), ...colLabels.map((c) => el('th', { text: c }))))
        : null,
      el(
        'tbody',
        {},
        ...rows.map((r, i) =>
          el(
            'tr',
            {},
            el('th', { text: rowLabels[i] }),
            ...r.map((x) =>
              el('td', { class: x === Number.NEGATIVE_INFINITY ? 'masked' : '', text: fmtCell(x) }),
            ),
          ),
        ),
      ),
    ),
  );
}

function slice(
  data: Float32Array,
  e: Example,
  rowsFrom: number,
  rowsTo: number,
  which: 'q' | 'kv',
): number[][] {
  const out: number[][] = [];
  for (let r = rowsFrom; r < rowsTo; r++) {
    const off = which === 'q' ? qOffset(e.p, 0, r, e.head) : kvOffset(e.p, 0, r, kvHead(e.p, e.head));
    out.push(Array.from(data.subarray(off, off + e.d)));
  }
  return out;
}

function render(): void {
  if (!ex) return;
  const e = ex;
  const s = e.steps[at];
  const root = byId('tab-see');
  root.dataset.step = String(at);
  root.dataset.steps = String(e.steps.length);
  root.dataset.phase = s.phase;
  byId('see-step-label').textContent = `step ${at + 1} / ${e.steps.length}: ${s.phase}`;
  byId('see-desc').textContent = s.desc;
  byId('see-desc').className = `desc phase-${s.phase}`;
  byId<HTMLButtonElement>('see-prev').disabled = at === 0;
  byId<HTMLButtonElement>('see-next').disabled = at === e.steps.length - 1;
  byId<HTMLButtonElement>('see-end').disabled = at === e.steps.length - 1;

  // HBM: the score matrix, coloured where computed so far; Q rows and K/V columns outlined.
  const hbm = byId<HTMLCanvasElement>('see-hbm');
  let lo = Number.POSITIVE_INFINITY;
  let hi = Number.NEGATIVE_INFINITY;
  for (const x of e.scores)
    if (x !== Number.NEGATIVE_INFINITY) {
      lo = Math.min(lo, x);
      hi = Math.max(hi, x);
    }
  const norm = Float64Array.from(e.scores, (x) =>
    x === Number.NEGATIVE_INFINITY ? 0 : (x - lo) / (hi - lo || 1),
  );
  const highlight = [];
  if (s.qb >= 0) highlight.push({ r: s.r0, c: 0, h: s.r1 - s.r0, w: e.sk, color: '#f59e0b' });
  if (s.kb >= 0) highlight.push({ r: 0, c: s.c0, h: e.sq, w: s.c1 - s.c0, color: '#ec4899' });
  drawHeatmap(hbm, norm, e.sq, e.sk, {
    max: 1,
    size: 300,
    highlight,
    masked: (r, c) => !s.seen[r * e.sk + c] || e.scores[r * e.sk + c] === Number.NEGATIVE_INFINITY,
  });

  // SRAM contents.
  const sram = byId('see-sram');
  const parts: HTMLElement[] = [];
  const dims = Array.from({ length: e.d }, (_, c) => `${c}`);
  if (s.qb >= 0 && s.phase !== 'finalize') {
    parts.push(
      matrix(
        `Q block ${s.qb}`,
        slice(e.q, e, s.r0, s.r1, 'q'),
        Array.from({ length: s.r1 - s.r0 }, (_, t) => `q${s.r0 + t}`),
        dims,
        'q',
      ),
    );
  }
  if (s.kb >= 0 && s.phase !== 'skip') {
    const keys = Array.from({ length: s.c1 - s.c0 }, (_, t) => `k${s.c0 + t}`);
    parts.push(matrix(`K block ${s.kb}`, slice(e.k, e, s.c0, s.c1, 'kv'), keys, dims, 'kv'));
    parts.push(
      matrix(
        `V block ${s.kb}`,
        slice(e.v, e, s.c0, s.c1, 'kv'),
        keys.map((k) => k.replace('k', 'v')),
        dims,
        'kv',
      ),
    );
  }
  const rowL = Array.from({ length: s.r1 - s.r0 }, (_, t) => `q${s.r0 + t}`);
  const colL = Array.from({ length: s.c1 - s.c0 }, (_, t) => `k${s.c0 + t}`);
  if (s.S) parts.push(matrix('S = scale·QKᵀ', s.S, rowL, colL, 's'));
  if (s.P) parts.push(matrix('P̃ = exp(S − m)', s.P, rowL, colL, 'p'));
  if (parts.length === 0)
    parts.push(el('p', { class: 'note', text: s.phase === 'done' ? 'SRAM is empty.' : 'Nothing loaded.' }));
  sram.replaceChildren(...parts);

  // Row states.
  const rows = byId('see-rows');
  if (s.rows.length === 0) rows.replaceChildren(el('p', { class: 'note', text: 'No Q block in SRAM.' }));
  else
    rows.replaceChildren(
      el(
        'table',
        { class: 'data rows' },
        el(
          'thead',
          {},
          el(
            'tr',
            {},
            ...['row', 'block max', 'm', 'α = e^(m_old − m_new)', 'ℓ', 'acc (unnormalised output)'].map((h) =>
              el('th', { text: h }),
            ),
            s.phase === 'finalize' ? el('th', { text: 'O = acc / ℓ' }) : null,
          ),
        ),
        el(
          'tbody',
          {},
          ...s.rows.map((r) => {
            const rescaled = r.alpha != null && (s.phase === 'rescale' || s.phase === 'accumulate');
            const mText =
              r.mOld != null && r.mOld !== r.m ? `${fmtCell(r.mOld)} → ${fmtCell(r.m)}` : fmtCell(r.m);
            return el(
              'tr',
              { class: rescaled ? 'rescaled' : '', 'data-row': r.i },
              el('th', { text: `q${r.i}` }),
              el('td', { text: r.blockMax == null ? '' : fmtCell(r.blockMax) }),
              el('td', { class: r.mOld != null && r.mOld !== r.m ? 'changed' : '', text: mText }),
              el('td', { class: rescaled ? 'alpha' : '', text: r.alpha == null ? '' : fmtCell(r.alpha) }),
              el('td', {
                class: r.lOld != null && r.lOld !== r.l ? 'changed' : '',
                text:
                  r.lOld != null && r.lOld !== r.l ? `${fmtCell(r.lOld)} → ${fmtCell(r.l)}` : fmtCell(r.l),
              }),
              el('td', { class: 'vec', text: `[${r.acc.map(fmtCell).join(', ')}]` }),
              s.phase === 'finalize'
                ? el('td', { class: 'vec changed', text: `[${(s.out[r.i] ?? []).map(fmtCell).join(', ')}]` })
                : null,
            );
          }),
        ),
      ),
    );

  // Output O in HBM.
  const outRows = s.out.map((r) => r ?? Array.from({ length: e.d }, () => Number.NaN));
  const outEl = matrix(
    'O (rows written so far)',
    outRows,
    outRows.map((_, i) => `o${i}`),
    dims,
    'o',
  );
  outEl.querySelectorAll('tbody tr').forEach((tr, i) => {
    if (!s.out[i]) tr.classList.add('pending');
    else if (s.justFinalized && i >= s.r0 && i < s.r1) tr.classList.add('fresh');
  });
  byId('see-out').replaceChildren(outEl);

  // The check against the plain softmax.
  const check = byId('see-check');
  if (s.phase === 'done') {
    let err = 0;
    for (let i = 0; i < e.sq; i++) {
      const o = s.out[i] ?? [];
      const off = qOffset(e.p, 0, i, e.head);
      for (let c = 0; c < e.d; c++) err = Math.max(err, Math.abs(o[c] - e.refOut[off + c]));
    }
    const ok = err <= 1e-12;
    check.dataset.maxError = String(err);
    check.dataset.pass = String(ok);
    check.className = `check-result ${ok ? 'ok' : 'bad'}`;
    check.textContent = `max |O_flash − softmax(S)·V| = ${fmtErr(err)} ${ok ? '✓ the same to float64 rounding' : '✗'} (the plain softmax stores all ${e.sq}×${e.sk} scores; FlashAttention never did).`;
  } else {
    delete check.dataset.maxError;
    delete check.dataset.pass;
    check.className = 'check-result';
    check.textContent = '';
  }
}

function drawSeeHeatmap(): void {
  if (!ex) return;
  const e = ex;
  const h = Math.min(e.heads - 1, Number(byId<HTMLSelectElement>('see-heat-head').value) || 0);
  const P = new Float64Array(e.sq * e.sk);
  for (let i = 0; i < e.sq; i++) {
    const [lo, hi] = allowedKeyRange(e.p, i, e.sq, e.sk);
    let m = Number.NEGATIVE_INFINITY;
    for (let j = lo; j < hi; j++) m = Math.max(m, scoreOf(e, h, i, j));
    let sum = 0;
    for (let j = lo; j < hi; j++) sum += Math.exp(scoreOf(e, h, i, j) - m);
    for (let j = lo; j < hi; j++) P[i * e.sk + j] = Math.exp(scoreOf(e, h, i, j) - m) / sum;
  }
  const max = drawHeatmap(byId<HTMLCanvasElement>('see-heatmap'), P, e.sq, e.sk, {
    size: 300,
    masked: (r, c) => {
      const [lo, hi] = allowedKeyRange(e.p, r, e.sq, e.sk);
      return c < lo || c >= hi;
    },
  });
  byId('see-heat-max').textContent = max.toPrecision(3);
}

function fillHeads(): void {
  const heads = Math.max(1, Math.min(4, num('see-heads') | 0));
  for (const id of ['see-head', 'see-heat-head']) {
    const s = byId<HTMLSelectElement>(id);
    const keep = Math.min(Number(s.value) || 0, heads - 1);
    s.replaceChildren(
      ...Array.from({ length: heads }, (_, i) => el('option', { value: i, text: String(i) })),
    );
    s.value = String(keep);
  }
}

function rebuild(): void {
  try {
    fillHeads();
    ex = build();
    at = 0;
    render();
    drawSeeHeatmap();
  } catch (err) {
    byId('see-desc').textContent = errorText(err);
    byId('see-desc').className = 'desc error';
  }
}

export function initSee(): () => void {
  const form = byId<HTMLFormElement>('see-form');
  form.addEventListener('submit', (ev) => ev.preventDefault());
  form.addEventListener('change', (ev) => {
    if ((ev.target as HTMLElement).id !== 'see-heat-head') rebuild();
  });
  byId('see-heat-head').addEventListener('change', drawSeeHeatmap);
  byId('see-reset').addEventListener('click', () => {
    at = 0;
    render();
  });
  byId('see-prev').addEventListener('click', () => {
    at = Math.max(0, at - 1);
    render();
  });
  byId('see-next').addEventListener('click', () => {
    if (ex) at = Math.min(ex.steps.length - 1, at + 1);
    render();
  });
  byId('see-end').addEventListener('click', () => {
    if (ex) at = ex.steps.length - 1;
    render();
  });
  document.addEventListener('keydown', (ev) => {
    if (byId('tab-see').hidden || (ev.target as HTMLElement).tagName === 'INPUT') return;
    if (ev.key === 'ArrowRight') byId('see-next').click();
    if (ev.key === 'ArrowLeft') byId('see-prev').click();
  });
  return rebuild;
}
