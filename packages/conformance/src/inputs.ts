/**
 * makeInputs: a case's tensors and options, deterministic from its seed and already rounded to its
 * dtype (through core's fromFloat32), so the references and the backend see exactly the same numbers.
 */
import {
  type AttentionOptions,
  alibiSlopesFor,
  type Feature,
  fromFloat32,
  type HostTensor,
} from '@flashattn/core';
import { gaussian, mulberry32, permutation } from './prng.js';
import type { ConformanceCase, ProblemSpec } from './types.js';

export interface ConformanceInputs {
  q: HostTensor;
  k: HostTensor;
  v: HostTensor;
  /** The upstream gradient, q's shape and dtype (backward cases). */
  dout: HostTensor;
  options: AttentionOptions;
}

/** Shapes of q and of k/v for a spec. */
export function shapesOf(spec: ProblemSpec): { q: number[]; kv: number[]; batch: number } {
  const { hq, hk, d } = spec;
  if (spec.varlen) {
    const tq = spec.varlen.q.reduce((a, b) => a + b, 0);
    const tk = spec.varlen.k.reduce((a, b) => a + b, 0);
    return { q: [tq, hq, d], kv: [tk, hk, d], batch: spec.varlen.q.length };
  }
  const b = spec.batch;
  const bhsd = spec.layout === 'bhsd';
  const q = bhsd ? [b, hq, spec.sq, d] : [b, spec.sq, hq, d];
  if (spec.paged) {
    const maxPages = Math.ceil(spec.sk / spec.paged.pageSize);
    const pages = b * maxPages + (spec.paged.extraPages ?? 0);
    return { q, kv: [pages, spec.paged.pageSize, hk, d], batch: b };
  }
  return { q, kv: bhsd ? [b, hk, spec.sk, d] : [b, spec.sk, hk, d], batch: b };
}

function prefixSums(lens: number[]): Int32Array {
  const cu = new Int32Array(lens.length + 1);
  for (let i = 0; i < lens.length; i++) cu[i + 1] = cu[i] + lens[i];
  return cu;
}

function numel(shape: readonly number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}

/** Flat offset of [b, s, h, c] in a bshd or bhsd tensor of shape `shape`. */
function offset4(
  shape: readonly number[],
  bhsd: boolean,
  b: number,
  s: number,
  h: number,
  c: number,
): number {
  const [, a1, a2, a3] = shape;
  return bhsd ? ((b * a1 + h) * a2 + s) * a3 + c : ((b * a1 + s) * a2 + h) * a3 + c;
}

/** The inputs of a case (or of a bare spec). Every call builds fresh arrays, so callers may edit them. */
export function makeInputs(c: ConformanceCase | ProblemSpec): ConformanceInputs {
  const spec = 'kind' in c ? c.spec : c;
  if (!spec) throw new Error(`case ${(c as ConformanceCase).name} has no problem spec`);
  const uniform = mulberry32(spec.seed);
  const normal = gaussian(uniform);
  const shapes = shapesOf(spec);
  const mag = spec.magnitude ?? 1;
  const bhsd = spec.layout === 'bhsd';

  const qf = new Float32Array(numel(shapes.q));
  const kf = new Float32Array(numel(shapes.kv));
  const vf = new Float32Array(numel(shapes.kv));
  const df = new Float32Array(numel(shapes.q));
  if (spec.identityV) {
    // q = 0, so every allowed score is 0 and P is uniform; v's one-hot rows make out[i][c] = P~[i][c].
    for (let t = 0; t < kf.length; t++) kf[t] = normal();
    const d = spec.d;
    for (let row = 0; row < vf.length / d; row++) {
      const j = spec.layout === 'bhsd' ? row % spec.sk : Math.floor(row / spec.hk) % spec.sk;
      if (j < d) vf[row * d + j] = 1;
    }
  } else {
    for (let t = 0; t < qf.length; t++) qf[t] = normal() * mag;
    for (let t = 0; t < kf.length; t++) kf[t] = normal() * mag;
    for (let t = 0; t < vf.length; t++) vf[t] = normal();
  }
  for (let t = 0; t < df.length; t++) df[t] = normal();
  if (spec.nan) {
    const n = spec.nan;
    const target = n.tensor === 'q' ? qf : n.tensor === 'k' ? kf : vf;
    const shape = n.tensor === 'q' ? shapes.q : shapes.kv;
    target[offset4(shape, bhsd, n.b, n.s, n.h, n.c)] = Number.NaN;
  }

  const options: AttentionOptions = {};
  if (spec.layout) options.layout = spec.layout;
  if (spec.scale !== undefined) options.scale = spec.scale;
  if (spec.causal) options.causal = true;
  if (spec.window) options.window = [spec.window[0], spec.window[1]];
  if (spec.softcap) options.softcap = spec.softcap;
  if (spec.alibi === 'heads') options.alibiSlopes = alibiSlopesFor(spec.hq);
  if (spec.alibi === 'batch') {
    const s = new Float32Array(shapes.batch * spec.hq);
    for (let t = 0; t < s.length; t++) s[t] = 0.05 + 0.5 * uniform();
    options.alibiSlopes = s;
  }
  if (spec.bias) {
    const shape = spec.bias.shape;
    const bf = new Float32Array(numel(shape));
    for (let t = 0; t < bf.length; t++) bf[t] = normal();
    const last = shape[shape.length - 1];
    if (spec.bias.maskTail) {
      for (let t = 0; t < bf.length; t++)
        if (t % last >= last - spec.bias.maskTail) bf[t] = Number.NEGATIVE_INFINITY;
    }
    if (spec.bias.maskBatch !== undefined && shape.length === 4) {
      const per = bf.length / shape[0];
      bf.fill(Number.NEGATIVE_INFINITY, spec.bias.maskBatch * per, (spec.bias.maskBatch + 1) * per);
    }
    options.bias = fromFloat32(bf, spec.dtype, shape);
  }
  if (spec.seqlensK) options.seqlensK = Int32Array.from(spec.seqlensK);
  if (spec.varlen) {
    options.cuSeqlensQ = prefixSums(spec.varlen.q);
    options.cuSeqlensK = prefixSums(spec.varlen.k);
  }
  if (spec.paged) {
    const { pageSize } = spec.paged;
    const maxPages = Math.ceil(spec.sk / pageSize);
    const numPages = shapes.kv[0];
    const perm = permutation(numPages, uniform);
    const table = new Int32Array(spec.batch * maxPages);
    for (let t = 0; t < table.length; t++) table[t] = perm[t];
    if (spec.paged.padTable) {
      for (let b = 0; b < spec.batch; b++) {
        const len = spec.seqlensK ? spec.seqlensK[b] : spec.sk;
        for (let p = Math.ceil(len / pageSize); p < maxPages; p++) table[b * maxPages + p] = -1;
      }
    }
    // Pages no sequence reaches hold large finite junk: reading them shows, without NaN harshness.
    const used = new Set<number>();
    for (let b = 0; b < spec.batch; b++) {
      const len = spec.seqlensK ? spec.seqlensK[b] : spec.sk;
      for (let p = 0; p < Math.ceil(len / pageSize); p++) used.add(table[b * maxPages + p]);
    }
    const pageElems = numel(shapes.kv.slice(1));
    for (let page = 0; page < numPages; page++) {
      if (used.has(page)) continue;
      kf.fill(37, page * pageElems, (page + 1) * pageElems);
      vf.fill(-53, page * pageElems, (page + 1) * pageElems);
    }
    options.blockTable = table;
    options.pageSize = pageSize;
  }
  if (spec.dropout) options.dropout = { ...spec.dropout };
  if (spec.lse === 'always') options.returnLse = true;

  return {
    q: fromFloat32(qf, spec.dtype, shapes.q),
    k: fromFloat32(kf, spec.dtype, shapes.kv),
    v: fromFloat32(vf, spec.dtype, shapes.kv),
    dout: fromFloat32(df, spec.dtype, shapes.q),
    options,
  };
}

/** The features a spec's call uses, as core's resolveProblem would list them (without 'backward'). */
export function specFeatures(spec: ProblemSpec): Feature[] {
  const f: Feature[] = [];
  if (spec.causal) f.push('causal');
  if (spec.window && (spec.window[0] >= 0 || spec.window[1] >= 0)) f.push('window');
  if (spec.softcap && spec.softcap > 0) f.push('softcap');
  if (spec.alibi) f.push('alibi');
  if (spec.bias) f.push('bias');
  if (spec.dropout && spec.dropout.p > 0) f.push('dropout');
  if (spec.hq !== spec.hk) f.push('gqa');
  if (spec.varlen) f.push('varlen');
  if (spec.seqlensK) f.push('kvcache');
  if (spec.paged) f.push('paged');
  if (spec.lse === 'always') f.push('lse');
  return f;
}

/** Entries of lse for a spec: b·hq·sq, or hq·totalQ with varlen. */
export function lseLengthOf(spec: ProblemSpec): number {
  if (spec.varlen) return spec.hq * spec.varlen.q.reduce((a, b) => a + b, 0);
  return spec.batch * spec.hq * spec.sq;
}
