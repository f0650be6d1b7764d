/**
 * The cases of SPEC §8. Each is plain data plus, for error cases, a small mutation: a backend's test
 * file runs them all through defineConformance, and `flashattn verify` through runCase.
 */
import { type DType, fromFloat32, type HostTensor } from '@flashattn/core';
import fc from 'fast-check';
import type { CaseKind, ConformanceCase, ErrorCaseSpec, ErrorInputs, ProblemSpec } from './types.js';

export interface CaseListOptions {
  /** A smaller list for slow backends and CI: drops the ~1000-long cases and most random draws. */
  quick?: boolean;
}

const DTYPE_SHORT: Record<DType, string> = { float32: 'f32', float16: 'f16', bfloat16: 'bf16' };

/** FNV-1a: a stable seed from a case's tag, so reordering the list changes no inputs. */
function seedOf(text: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) {
    h ^= text.charCodeAt(i);
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h;
}

/** "b2 sq17 sk23 h4/2 d64 f32 causal ..." */
export function describeSpec(s: ProblemSpec): string {
  const parts: string[] = [];
  if (s.varlen) parts.push(`varlen q[${s.varlen.q.join(',')}] k[${s.varlen.k.join(',')}]`);
  else parts.push(`b${s.batch} sq${s.sq} sk${s.sk}`);
  parts.push(`h${s.hq}/${s.hk} d${s.d} ${DTYPE_SHORT[s.dtype]}`);
  if (s.layout === 'bhsd') parts.push('bhsd');
  if (s.causal) parts.push('causal');
  if (s.window) parts.push(`window[${s.window[0]},${s.window[1]}]`);
  if (s.softcap) parts.push(`softcap${s.softcap}`);
  if (s.alibi) parts.push(s.alibi === 'heads' ? 'alibi[hq]' : 'alibi[b*hq]');
  if (s.bias) {
    parts.push(
      `bias[${s.bias.shape.join(',')}]${s.bias.maskTail || s.bias.maskBatch !== undefined ? '(-inf)' : ''}`,
    );
  }
  if (s.seqlensK) parts.push(`seqlensK[${s.seqlensK.join(',')}]`);
  if (s.paged) parts.push(`paged${s.paged.pageSize}${s.paged.padTable ? '(padded table)' : ''}`);
  if (s.dropout) parts.push(`dropout${s.dropout.p}`);
  if (s.scale !== undefined) parts.push(`scale${s.scale}`);
  if (s.magnitude && s.magnitude !== 1) parts.push(`|q|,|k|~${s.magnitude}`);
  if (s.nan) parts.push(`NaN@${s.nan.tensor}[${s.nan.b},${s.nan.s},${s.nan.h},${s.nan.c}]`);
  if (s.lse === 'always') parts.push('lse');
  return parts.join(' ');
}

/** Tags from what a spec uses (Feature names, dtype, layout), for picking cases. */
function tagsOf(s: ProblemSpec): string[] {
  const t: string[] = [s.dtype, s.layout ?? 'bshd'];
  if (s.causal) t.push('causal');
  if (s.window) t.push('window');
  if (s.softcap) t.push('softcap');
  if (s.alibi) t.push('alibi');
  if (s.bias) t.push('bias');
  if (s.dropout && s.dropout.p > 0) t.push('dropout');
  if (s.hq !== s.hk) t.push('gqa');
  if (s.varlen) t.push('varlen');
  if (s.seqlensK) t.push('kvcache');
  if (s.paged) t.push('paged');
  if (s.lse === 'always') t.push('lse');
  if (s.nan) t.push('nan');
  if ((s.magnitude ?? 1) > 10) t.push('large');
  return t;
}

type SpecIn = Partial<ProblemSpec>;

function spec(tag: string, over: SpecIn): ProblemSpec {
  return { batch: 1, sq: 17, sk: 23, hq: 2, hk: 2, d: 32, dtype: 'float32', seed: seedOf(tag), ...over };
}

function problemCase(kind: CaseKind, tag: string, over: SpecIn, extraTags: string[] = []): ConformanceCase {
  const s = spec(`${kind}:${tag}`, over);
  const word = kind === 'backward' ? 'backward' : kind === 'forward' ? 'forward' : kind;
  return { name: `${word} · ${tag} · ${describeSpec(s)}`, kind, tags: [...tagsOf(s), ...extraTags], spec: s };
}

const fwd = (tag: string, over: SpecIn, tags: string[] = []) => problemCase('forward', tag, over, tags);
const bwd = (tag: string, over: SpecIn, tags: string[] = []) =>
  problemCase('backward', tag, over, ['backward', ...tags]);

function errorCase(tag: string, e: Omit<ErrorCaseSpec, 'base'> & { base?: SpecIn }): ConformanceCase {
  const base = spec(`error:${tag}`, { batch: 2, sq: 5, sk: 7, hq: 2, hk: 1, d: 8, ...e.base });
  return {
    name: `error ${e.expect} · ${tag}`,
    kind: 'error',
    tags: ['error', e.expect, ...(e.features ?? [])],
    error: { ...e, base },
  };
}

/** Replace one tensor's shape (and data length) keeping its dtype. */
function reshaped(t: HostTensor, shape: number[]): HostTensor {
  const n = shape.reduce((a, b) => a * b, 1);
  return fromFloat32(new Float32Array(n).fill(0.25), t.dtype, shape);
}

function errorCases(): ConformanceCase[] {
  const set = (x: ErrorInputs, key: string, value: unknown) => {
    (x.options as Record<string, unknown>)[key] = value;
  };
  return [
    errorCase('q of rank 3 without varlen', {
      expect: 'INVALID_SHAPE',
      call: 'forward',
      mutate: (x) => {
        x.q = reshaped(x.q, [2 * 5, 2, 8]);
      },
    }),
    errorCase('q.data shorter than its shape', {
      expect: 'INVALID_SHAPE',
      call: 'forward',
      mutate: (x) => {
        x.q = { ...x.q, data: x.q.data.slice(0, x.q.data.length - 3) };
      },
    }),
    errorCase('negative dimension', {
      expect: 'INVALID_SHAPE',
      call: 'forward',
      mutate: (x) => {
        x.k = { ...x.k, shape: [2, -7, 1, 8] };
      },
    }),
    errorCase('k and v of different lengths', {
      expect: 'SHAPE_MISMATCH',
      call: 'forward',
      mutate: (x) => {
        x.v = reshaped(x.v, [2, 6, 1, 8]);
      },
    }),
    errorCase('q and k head dims differ', {
      expect: 'SHAPE_MISMATCH',
      call: 'forward',
      mutate: (x) => {
        x.k = reshaped(x.k, [2, 7, 1, 16]);
        x.v = reshaped(x.v, [2, 7, 1, 16]);
      },
    }),
    errorCase('q and k batch sizes differ', {
      expect: 'SHAPE_MISMATCH',
      call: 'forward',
      mutate: (x) => {
        x.k = reshaped(x.k, [3, 7, 1, 8]);
        x.v = reshaped(x.v, [3, 7, 1, 8]);
      },
    }),
    errorCase('bias not broadcastable', {
      expect: 'SHAPE_MISMATCH',
      call: 'forward',
      features: ['bias'],
      mutate: (x) => {
        set(x, 'bias', fromFloat32(new Float32Array(2 * 3 * 5 * 7), x.q.dtype, [2, 3, 5, 7]));
      },
      mentions: 'bias',
    }),
    errorCase('dtype float64', {
      expect: 'INVALID_DTYPE',
      call: 'forward',
      mutate: (x) => {
        x.q = { ...x.q, dtype: 'float64' as DType };
      },
    }),
    errorCase('float16 tensor holding a Float32Array', {
      expect: 'INVALID_DTYPE',
      call: 'forward',
      dtypes: ['float16'],
      mutate: (x) => {
        x.q = { ...x.q, dtype: 'float16' };
        x.k = { ...x.k, dtype: 'float16' };
        x.v = { ...x.v, dtype: 'float16' };
      },
    }),
    errorCase('q float32 with k, v float16', {
      expect: 'DTYPE_MISMATCH',
      call: 'forward',
      dtypes: ['float16'],
      mutate: (x) => {
        x.k = fromFloat32(new Float32Array(x.k.data.length), 'float16', x.k.shape);
        x.v = fromFloat32(new Float32Array(x.v.data.length), 'float16', x.v.shape);
      },
    }),
    errorCase('hq=3, hk=2', {
      expect: 'HEADS_NOT_DIVISIBLE',
      call: 'forward',
      base: { hq: 3, hk: 2 },
      features: ['gqa'],
      mutate: () => {},
    }),
    errorCase('head dim 257', {
      expect: 'HEAD_DIM_UNSUPPORTED',
      call: 'forward',
      base: { d: 257, hk: 2 },
      mutate: () => {},
    }),
    errorCase('head dim 0', {
      expect: 'HEAD_DIM_UNSUPPORTED',
      call: 'forward',
      base: { d: 0, hk: 2 },
      mutate: () => {},
    }),
    errorCase('window [-2, 0]', {
      expect: 'INVALID_OPTION',
      call: 'forward',
      features: ['window'],
      mutate: (x) => set(x, 'window', [-2, 0]),
      mentions: 'window',
    }),
    errorCase('window [1.5, 3]', {
      expect: 'INVALID_OPTION',
      call: 'forward',
      features: ['window'],
      mutate: (x) => set(x, 'window', [1.5, 3]),
      mentions: 'window',
    }),
    errorCase('window of 3 entries', {
      expect: 'INVALID_OPTION',
      call: 'forward',
      features: ['window'],
      mutate: (x) => set(x, 'window', [1, 2, 3]),
      mentions: 'window',
    }),
    errorCase('dropout p = 1', {
      expect: 'INVALID_OPTION',
      call: 'forward',
      features: ['dropout'],
      mutate: (x) => set(x, 'dropout', { p: 1, seed: 1 }),
      mentions: 'dropout',
    }),
    errorCase('dropout p = -0.1', {
      expect: 'INVALID_OPTION',
      call: 'forward',
      features: ['dropout'],
      mutate: (x) => set(x, 'dropout', { p: -0.1, seed: 1 }),
      mentions: 'dropout',
    }),
    errorCase('dropout seed -1', {
      expect: 'INVALID_OPTION',
      call: 'forward',
      features: ['dropout'],
      mutate: (x) => set(x, 'dropout', { p: 0.1, seed: -1 }),
      mentions: 'seed',
    }),
    errorCase('unknown option key', {
      expect: 'INVALID_OPTION',
      call: 'forward',
      mutate: (x) => set(x, 'notAnOption', 1),
      mentions: 'notAnOption',
    }),
    errorCase("layout 'sbhd'", {
      expect: 'INVALID_OPTION',
      call: 'forward',
      mutate: (x) => set(x, 'layout', 'sbhd'),
      mentions: 'layout',
    }),
    errorCase('scale NaN', {
      expect: 'INVALID_OPTION',
      call: 'forward',
      mutate: (x) => set(x, 'scale', Number.NaN),
      mentions: 'scale',
    }),
    errorCase('softcap -1', {
      expect: 'INVALID_OPTION',
      call: 'forward',
      features: ['softcap'],
      mutate: (x) => set(x, 'softcap', -1),
      mentions: 'softcap',
    }),
    errorCase('causal "yes"', {
      expect: 'INVALID_OPTION',
      call: 'forward',
      features: ['causal'],
      mutate: (x) => set(x, 'causal', 'yes'),
      mentions: 'causal',
    }),
    errorCase('alibiSlopes of the wrong length', {
      expect: 'INVALID_OPTION',
      call: 'forward',
      features: ['alibi'],
      mutate: (x) => set(x, 'alibiSlopes', new Float32Array(3)),
      mentions: 'alibi',
    }),
    errorCase('seqlensK past sk', {
      expect: 'INVALID_OPTION',
      call: 'forward',
      features: ['kvcache'],
      mutate: (x) => set(x, 'seqlensK', Int32Array.from([7, 8])),
      mentions: 'seqlensK',
    }),
    errorCase('seqlensK as a plain array', {
      expect: 'INVALID_OPTION',
      call: 'forward',
      features: ['kvcache'],
      mutate: (x) => set(x, 'seqlensK', [7, 7]),
      mentions: 'seqlensK',
    }),
    errorCase('cuSeqlensQ not starting at 0', {
      expect: 'INVALID_OPTION',
      call: 'forward',
      base: { varlen: { q: [3, 4], k: [5, 2] } },
      features: ['varlen'],
      mutate: (x) => set(x, 'cuSeqlensQ', Int32Array.from([1, 4, 7])),
      mentions: 'cuSeqlensQ',
    }),
    errorCase('cuSeqlensK decreasing', {
      expect: 'INVALID_OPTION',
      call: 'forward',
      base: { varlen: { q: [3, 4], k: [5, 2] } },
      features: ['varlen'],
      mutate: (x) => set(x, 'cuSeqlensK', Int32Array.from([0, 5, 4])),
      mentions: 'cuSeqlensK',
    }),
    errorCase('cuSeqlensQ total differs from q rows', {
      expect: 'INVALID_OPTION',
      call: 'forward',
      base: { varlen: { q: [3, 4], k: [5, 2] } },
      features: ['varlen'],
      mutate: (x) => set(x, 'cuSeqlensQ', Int32Array.from([0, 3, 6])),
      mentions: 'cuSeqlensQ',
    }),
    errorCase('cuSeqlensQ without cuSeqlensK', {
      expect: 'INVALID_OPTION',
      call: 'forward',
      base: { varlen: { q: [3, 4], k: [5, 2] } },
      features: ['varlen'],
      mutate: (x) => set(x, 'cuSeqlensK', undefined),
      mentions: 'cuSeqlens',
    }),
    errorCase('blockTable naming a missing page', {
      expect: 'INVALID_OPTION',
      call: 'forward',
      base: { sk: 8, paged: { pageSize: 4 }, seqlensK: [8, 5] },
      features: ['paged', 'kvcache'],
      mutate: (x) => {
        (x.options.blockTable as Int32Array)[1] = 99;
      },
      mentions: 'blockTable',
    }),
    errorCase('pageSize without blockTable', {
      expect: 'INVALID_OPTION',
      call: 'forward',
      base: { sk: 8, paged: { pageSize: 4 }, seqlensK: [8, 5] },
      features: ['paged', 'kvcache'],
      mutate: (x) => set(x, 'blockTable', undefined),
      mentions: 'blockTable',
    }),
    errorCase('backward: dout of another shape', {
      expect: 'SHAPE_MISMATCH',
      call: 'backward',
      mutate: (x) => {
        x.dout = reshaped(x.dout, [2, 4, 2, 8]);
      },
      mentions: 'dout',
    }),
    errorCase('backward: lse of the wrong length', {
      expect: 'SHAPE_MISMATCH',
      call: 'backward',
      mutate: (x) => {
        x.lse = new Float32Array(x.lse.length - 1);
      },
      mentions: 'lse',
    }),
    errorCase('backward: out float16 for float32 inputs', {
      expect: 'DTYPE_MISMATCH',
      call: 'backward',
      dtypes: ['float16'],
      mutate: (x) => {
        x.out = fromFloat32(new Float32Array(x.out.data.length), 'float16', x.out.shape);
      },
      mentions: 'out',
    }),
  ];
}

function randomCases(quick: boolean): ConformanceCase[] {
  const arb = fc.record({
    batch: fc.integer({ min: 1, max: 2 }),
    sq: fc.integer({ min: 1, max: 40 }),
    sk: fc.integer({ min: 1, max: 40 }),
    heads: fc.constantFrom([1, 1], [2, 1], [2, 2], [3, 1], [4, 2], [6, 3]),
    d: fc.oneof(fc.constantFrom(1, 8, 16, 32, 64), fc.integer({ min: 1, max: 96 })),
    causal: fc.boolean(),
    window: fc.option(fc.tuple(fc.integer({ min: -1, max: 12 }), fc.integer({ min: -1, max: 12 })), {
      freq: 3,
    }),
    softcap: fc.constantFrom(0, 0, 0, 4, 20),
    dtype: fc.constantFrom<DType>('float32', 'float32', 'float16', 'bfloat16'),
    layout: fc.constantFrom<'bshd' | 'bhsd'>('bshd', 'bshd', 'bhsd'),
    seed: fc.integer({ min: 0, max: 0x7fffffff }),
  });
  const draw = (seed: number, numRuns: number) => fc.sample(arb, { seed, numRuns });
  const toSpec = (r: ReturnType<typeof draw>[number]): SpecIn => ({
    batch: r.batch,
    sq: r.sq,
    sk: r.sk,
    hq: r.heads[0],
    hk: r.heads[1],
    d: r.d,
    causal: r.causal || undefined,
    window: r.window && (r.window[0] >= 0 || r.window[1] >= 0) ? [r.window[0], r.window[1]] : undefined,
    softcap: r.softcap || undefined,
    dtype: r.dtype,
    layout: r.layout === 'bhsd' ? 'bhsd' : undefined,
    magnitude: r.softcap ? 2 : 1,
    seed: r.seed,
  });
  const forwards = draw(20240601, quick ? 5 : 14).map((r, n) =>
    fwd(`random #${n + 1}`, toSpec(r), ['random']),
  );
  const backwards = draw(20240602, quick ? 2 : 5).map((r, n) =>
    bwd(`random #${n + 1}`, toSpec(r), ['random']),
  );
  return [...forwards, ...backwards];
}

/** The case list of SPEC §8 (quick: the subset for slow backends). Names are unique. */
export function conformanceCases(options: CaseListOptions = {}): ConformanceCase[] {
  const quick = options.quick ?? false;
  const full = !quick;
  const cases: ConformanceCase[] = [];
  const add = (...c: ConformanceCase[]) => cases.push(...c);

  // Head dims.
  for (const d of [1, 8, 31, 64, 80, 128, 256])
    add(fwd(`head dim ${d}`, { batch: 2, sq: 17, sk: 23, hq: 2, hk: 2, d }));
  for (const d of [1, 31, 64, 128, 256]) add(bwd(`head dim ${d}`, { sq: 13, sk: 19, hq: 2, hk: 1, d }));
  // Head dims above 128 across several blocks of every tile, with the mask's edges and the per-pair
  // extras (a tensor-core backward pads them to 256 and may split its work differently there).
  add(
    fwd('head dim 256, several blocks, causal GQA', { sq: 150, sk: 170, hq: 4, hk: 2, d: 256, causal: true }),
    fwd('head dim 192, several blocks, window', { sq: 140, sk: 130, hq: 2, hk: 1, d: 192, window: [40, 9] }),
    bwd('head dim 256, several blocks, causal GQA', { sq: 90, sk: 110, hq: 4, hk: 2, d: 256, causal: true }),
    bwd('head dim 160, several blocks, softcap and dropout', {
      sq: 70,
      sk: 83,
      hq: 2,
      hk: 1,
      d: 160,
      softcap: 5,
      magnitude: 3,
      dropout: { p: 0.1, seed: 31 },
    }),
  );

  // Lengths: 1, 17, 113, ~1000; sq != sk both ways.
  add(
    fwd('length 1', { sq: 1, sk: 1, d: 16 }),
    fwd('decode sq=1', { sq: 1, sk: 113, hq: 8, hk: 2, d: 64 }),
    fwd('sq > sk', { batch: 2, sq: 113, sk: 17, d: 32 }),
    fwd('sq < sk', { batch: 2, sq: 17, sk: 113, d: 32 }),
    fwd('sq = sk = 113 causal', { sq: 113, sk: 113, hq: 4, hk: 4, d: 64, causal: true }),
    fwd('single key per row', { sq: 17, sk: 1, d: 8 }),
    fwd('decode sk~1000', { sq: 1, sk: 1000, hq: 4, hk: 1, d: 128 }),
  );
  if (full) {
    add(
      fwd('long causal', { sq: 1000, sk: 1000, hq: 2, hk: 1, d: 64, causal: true }, ['long']),
      fwd('long sq != sk', { sq: 937, sk: 1031, hq: 1, hk: 1, d: 32 }, ['long']),
    );
  }

  // MHA / GQA / MQA.
  add(
    fwd('MHA', { batch: 2, sq: 19, sk: 29, hq: 4, hk: 4, d: 32 }),
    fwd('GQA', { batch: 2, sq: 19, sk: 29, hq: 8, hk: 2, d: 32 }),
    fwd('MQA', { batch: 2, sq: 19, sk: 29, hq: 6, hk: 1, d: 32 }),
    bwd('GQA', { batch: 2, sq: 11, sk: 15, hq: 8, hk: 2, d: 16 }),
    bwd('MQA', { sq: 11, sk: 15, hq: 6, hk: 1, d: 16 }),
  );

  // Causal, bottom-right aligned.
  add(
    fwd('causal sq < sk', { batch: 2, sq: 17, sk: 40, hq: 2, hk: 1, d: 32, causal: true }),
    fwd('causal sq > sk', { batch: 2, sq: 40, sk: 17, hq: 2, hk: 1, d: 32, causal: true }, ['masked']),
    fwd('causal sq = sk', { sq: 33, sk: 33, d: 40, causal: true }),
    bwd('causal sq < sk', { sq: 9, sk: 20, hq: 2, hk: 1, d: 16, causal: true }),
    bwd('causal sq > sk', { sq: 20, sk: 9, hq: 2, hk: 1, d: 16, causal: true }, ['masked']),
  );

  // Windows.
  add(
    fwd('window left only', { sq: 40, sk: 40, d: 32, window: [8, -1] }),
    fwd('window right only', { sq: 40, sk: 40, d: 32, window: [-1, 4] }),
    fwd('window both sides', { sq: 30, sk: 45, d: 32, window: [3, 2] }),
    fwd('window [0,0]', { sq: 20, sk: 20, d: 16, window: [0, 0] }),
    fwd('causal + left window', { sq: 64, sk: 80, hq: 4, hk: 2, d: 32, causal: true, window: [16, -1] }),
    fwd('right window, sq > sk', { sq: 40, sk: 20, d: 16, window: [-1, 2] }, ['masked']),
    bwd('window both sides', { sq: 18, sk: 24, d: 16, window: [4, 3] }),
  );

  // Softcap, ALiBi, bias.
  add(
    fwd('softcap', { batch: 2, sq: 24, sk: 31, d: 32, softcap: 5, magnitude: 3 }),
    bwd('softcap', { sq: 12, sk: 17, d: 16, softcap: 5, magnitude: 3 }),
    fwd('ALiBi [hq]', { batch: 2, sq: 24, sk: 40, hq: 4, hk: 2, d: 32, alibi: 'heads', causal: true }),
    fwd('ALiBi [b*hq]', { batch: 2, sq: 24, sk: 31, hq: 4, hk: 4, d: 32, alibi: 'batch' }),
    bwd('ALiBi [hq]', { sq: 12, sk: 17, hq: 2, hk: 1, d: 16, alibi: 'heads' }),
    fwd('bias full', { batch: 2, sq: 13, sk: 21, hq: 2, hk: 1, d: 32, bias: { shape: [2, 2, 13, 21] } }),
    fwd('bias [1,1,sq,sk]', {
      batch: 2,
      sq: 13,
      sk: 21,
      hq: 2,
      hk: 2,
      d: 32,
      bias: { shape: [1, 1, 13, 21] },
    }),
    fwd('bias [sk]', { batch: 2, sq: 13, sk: 21, hq: 2, hk: 2, d: 32, bias: { shape: [21] } }),
    fwd(
      'bias key padding mask',
      {
        batch: 3,
        sq: 9,
        sk: 21,
        hq: 2,
        hk: 2,
        d: 16,
        bias: { shape: [3, 1, 1, 21], maskTail: 5, maskBatch: 2 },
      },
      ['masked'],
    ),
    bwd('bias full', { batch: 2, sq: 9, sk: 14, hq: 2, hk: 1, d: 16, bias: { shape: [2, 2, 9, 14] } }),
  );

  // Key padding / KV cache.
  add(
    fwd('key padding, a 0 length', { batch: 3, sq: 9, sk: 17, d: 16, seqlensK: [17, 0, 5] }, ['masked']),
    fwd(
      'key padding + causal',
      { batch: 3, sq: 6, sk: 20, hq: 4, hk: 2, d: 16, seqlensK: [20, 9, 3], causal: true },
      ['masked'],
    ),
    fwd('KV cache decode', { batch: 3, sq: 1, sk: 64, hq: 8, hk: 2, d: 64, seqlensK: [64, 33, 1] }),
    bwd('key padding', { batch: 2, sq: 7, sk: 15, hq: 2, hk: 1, d: 16, seqlensK: [11, 0], causal: true }, [
      'masked',
    ]),
  );

  // Varlen.
  add(
    fwd('varlen with an empty sequence', {
      hq: 4,
      hk: 2,
      d: 32,
      varlen: { q: [5, 0, 17, 1], k: [9, 0, 13, 4] },
    }),
    fwd('varlen causal', { hq: 2, hk: 1, d: 32, causal: true, varlen: { q: [7, 3, 12], k: [3, 11, 12] } }, [
      'masked',
    ]),
    fwd('varlen keys empty', { hq: 2, hk: 2, d: 16, varlen: { q: [4, 3], k: [6, 0] } }, ['masked']),
    bwd('varlen', { hq: 2, hk: 1, d: 16, causal: true, varlen: { q: [6, 0, 9], k: [8, 0, 5] } }),
  );

  // Paged KV.
  add(
    fwd(
      'paged KV',
      {
        batch: 3,
        sq: 5,
        sk: 50,
        hq: 4,
        hk: 2,
        d: 32,
        paged: { pageSize: 16, extraPages: 3 },
        seqlensK: [50, 17, 0],
      },
      ['masked'],
    ),
    fwd('paged KV causal, odd page size, padded table', {
      batch: 2,
      sq: 9,
      sk: 40,
      hq: 2,
      hk: 1,
      d: 16,
      causal: true,
      paged: { pageSize: 7, extraPages: 2, padTable: true },
      seqlensK: [40, 12],
    }),
    fwd('paged KV decode, page size 1', {
      batch: 2,
      sq: 1,
      sk: 9,
      hq: 2,
      hk: 2,
      d: 8,
      paged: { pageSize: 1, extraPages: 1 },
      seqlensK: [9, 4],
    }),
    bwd('paged KV', {
      batch: 2,
      sq: 5,
      sk: 20,
      hq: 2,
      hk: 1,
      d: 16,
      causal: true,
      paged: { pageSize: 8, extraPages: 1 },
      seqlensK: [20, 11],
    }),
  );

  // Dropout: exact keep mask (the same Philox stream), and the kept fraction.
  add(
    fwd('dropout', { batch: 2, sq: 17, sk: 29, hq: 2, hk: 2, d: 32, dropout: { p: 0.17, seed: 1234 } }),
    fwd('dropout seed > 2^32, offset, causal GQA', {
      batch: 2,
      sq: 21,
      sk: 30,
      hq: 4,
      hk: 2,
      d: 16,
      causal: true,
      dropout: { p: 0.5, seed: 2 ** 32 + 99, offset: 3 },
    }),
    fwd('dropout varlen', {
      hq: 2,
      hk: 2,
      d: 16,
      varlen: { q: [5, 9], k: [11, 4] },
      dropout: { p: 0.3, seed: 77 },
    }),
    fwd('dropout p = 0', { sq: 9, sk: 13, d: 16, dropout: { p: 0, seed: 5 } }),
    bwd('dropout', {
      batch: 2,
      sq: 9,
      sk: 14,
      hq: 2,
      hk: 1,
      d: 16,
      dropout: { p: 0.2, seed: 4242, offset: 1 },
    }),
  );
  {
    const s = spec('dropout-stats', {
      batch: 1,
      sq: 256,
      sk: 128,
      hq: 4,
      hk: 4,
      d: 128,
      identityV: true,
      dropout: { p: 0.3, seed: 90210 },
    });
    add({
      name: `dropout kept fraction · within 0.01 of 1-p · ${describeSpec(s)}`,
      kind: 'dropout-stats',
      tags: ['dropout', 'float32'],
      spec: s,
    });
  }

  // Layout, dtypes, lse.
  add(
    fwd("layout 'bhsd'", { batch: 2, sq: 19, sk: 27, hq: 4, hk: 2, d: 32, layout: 'bhsd', causal: true }),
    bwd("layout 'bhsd'", { batch: 2, sq: 9, sk: 13, hq: 4, hk: 2, d: 16, layout: 'bhsd' }),
    fwd('returnLse', { batch: 2, sq: 17, sk: 23, hq: 2, hk: 1, d: 32, lse: 'always', causal: true }),
  );
  for (const dtype of ['float16', 'bfloat16'] as const) {
    add(
      fwd(dtype, { batch: 2, sq: 33, sk: 47, hq: 2, hk: 2, d: 64, dtype }),
      fwd(`${dtype} GQA causal`, { batch: 1, sq: 40, sk: 40, hq: 4, hk: 1, d: 128, dtype, causal: true }),
      fwd(
        `${dtype} varlen window`,
        { hq: 2, hk: 2, d: 32, dtype, window: [6, 6], varlen: { q: [9, 14], k: [20, 5] } },
        ['masked'],
      ),
      bwd(dtype, { sq: 13, sk: 21, hq: 2, hk: 2, d: 64, dtype, causal: true }),
      bwd(`${dtype} GQA`, { batch: 2, sq: 9, sk: 12, hq: 4, hk: 2, d: 32, dtype }),
    );
  }

  // Fully masked rows, large magnitudes, NaN.
  add(
    fwd('masked rows (causal sq > sk) in bf16', { sq: 30, sk: 10, d: 16, dtype: 'bfloat16', causal: true }, [
      'masked',
    ]),
    fwd('large magnitude (|q·k| ~ 1e4)', { batch: 2, sq: 29, sk: 37, hq: 2, hk: 1, d: 64, magnitude: 35 }),
    fwd('large magnitude causal f16', {
      sq: 29,
      sk: 37,
      hq: 2,
      hk: 2,
      d: 64,
      magnitude: 35,
      dtype: 'float16',
      causal: true,
    }),
    fwd('large magnitude, scale 1', { sq: 17, sk: 25, d: 32, magnitude: 20, scale: 1 }),
    // The backward stays at |s| up to ~15: see the README (a float32 flash backward recomputes P from a
    // float32 lse, so the rounding of a large dominant score does not cancel as it does in refLow).
    bwd('larger magnitude', { sq: 11, sk: 16, d: 32, magnitude: 2 }),
    fwd('NaN in q', {
      batch: 2,
      sq: 12,
      sk: 18,
      hq: 2,
      hk: 1,
      d: 16,
      nan: { tensor: 'q', b: 1, s: 3, h: 1, c: 5 },
    }),
    fwd('NaN in k, causal', {
      batch: 2,
      sq: 12,
      sk: 18,
      hq: 4,
      hk: 2,
      d: 16,
      causal: true,
      nan: { tensor: 'k', b: 0, s: 10, h: 1, c: 0 },
    }),
    fwd('NaN in v', { sq: 12, sk: 18, hq: 2, hk: 2, d: 16, nan: { tensor: 'v', b: 0, s: 4, h: 0, c: 7 } }),
    fwd('NaN in q, f16', {
      sq: 12,
      sk: 18,
      hq: 2,
      hk: 2,
      d: 16,
      dtype: 'float16',
      nan: { tensor: 'q', b: 0, s: 0, h: 0, c: 0 },
    }),
  );

  // Errors.
  add(...errorCases());
  add({
    name: 'error DISPOSED · a disposed instance refuses forward and backward',
    kind: 'disposed',
    tags: ['error', 'DISPOSED'],
  });
  add({
    name: 'error UNSUPPORTED_FEATURE · every feature and dtype the capabilities leave out is refused',
    kind: 'unsupported-features',
    tags: ['error', 'UNSUPPORTED_FEATURE'],
  });

  // Behaviour: inputs untouched, concurrency, device round trip.
  {
    const s = spec('immutability', {
      batch: 2,
      sq: 9,
      sk: 14,
      hq: 2,
      hk: 1,
      d: 16,
      causal: true,
      alibi: 'heads',
      bias: { shape: [1, 1, 9, 14] },
      seqlensK: [14, 6],
      dropout: { p: 0.1, seed: 3 },
      window: [8, 2],
    });
    add({
      name: 'never writes into its inputs · forward and backward, every option array',
      kind: 'immutability',
      tags: ['behaviour'],
      spec: s,
    });
  }
  {
    const specs: ProblemSpec[] = [];
    for (let n = 0; n < 10; n++) {
      specs.push(
        spec(`concurrency ${n}`, {
          batch: 1 + (n % 2),
          sq: 5 + 3 * n,
          sk: 40 - 2 * n,
          hq: 2,
          hk: n % 3 === 0 ? 1 : 2,
          d: [16, 32, 8, 64][n % 4],
          causal: n % 2 === 0 || undefined,
          dtype: n % 5 === 4 ? 'float16' : 'float32',
        }),
      );
    }
    add({
      name: 'concurrency · 10 calls at once equal the same calls in sequence, bit for bit',
      kind: 'concurrency',
      tags: ['behaviour'],
      specs,
    });
  }
  add({
    name: `device round trip · upload → forward → download · ${describeSpec(spec('device fwd', { batch: 2, sq: 17, sk: 23, hq: 4, hk: 2, d: 32, causal: true }))}`,
    kind: 'device',
    tags: ['behaviour', 'device'],
    spec: spec('device fwd', { batch: 2, sq: 17, sk: 23, hq: 4, hk: 2, d: 32, causal: true }),
  });
  add({
    name: `device round trip · upload → backward → download · ${describeSpec(spec('device bwd', { batch: 1, sq: 9, sk: 12, hq: 2, hk: 1, d: 16 }))}`,
    kind: 'device',
    tags: ['behaviour', 'device', 'backward'],
    spec: spec('device bwd', { batch: 1, sq: 9, sk: 12, hq: 2, hk: 1, d: 16 }),
  });

  add(...randomCases(quick));

  const seen = new Set<string>();
  for (const c of cases) {
    if (seen.has(c.name)) throw new Error(`duplicate conformance case name: ${c.name}`);
    seen.add(c.name);
  }
  return cases;
}
