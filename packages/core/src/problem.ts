/**
 * resolveProblem: the one place where the inputs of an attention call are validated and turned into
 * the plain descriptor every backend reads (SPEC §2, §3, §6). Backends never re-validate; they read
 * sizes, strides and the mask parameters from the Problem and index with the helpers below.
 */
import { describe, fail } from './errors.js';
import {
  type AttentionOptions,
  type Capabilities,
  type DeviceTensor,
  DTYPES,
  type DType,
  type Feature,
  type HostTensor,
  isDeviceTensor,
  type Layout,
  type Tensor,
} from './types.js';

export const MAX_HEAD_DIM = 256;

/** Element strides of a q/k/v-like tensor, per token (seq position) and per head. The head dim is contiguous. */
export interface Strides {
  batch: number;
  seq: number;
  head: number;
}

export interface BiasInfo {
  tensor: Tensor;
  /** Element strides over the broadcast [b, hq, sq, sk] index; 0 on a broadcast dimension. */
  strides: [number, number, number, number];
  shape: readonly number[];
}

export interface DropoutInfo {
  p: number;
  /** Philox key words: (seed mod 2^32, floor(seed / 2^32)). */
  key0: number;
  key1: number;
  offset: number;
  /** 1 / (1 - p): the scale of a kept element. */
  keepScale: number;
}

export interface Problem {
  dtype: DType;
  layout: Layout;
  batch: number;
  /** Query rows per sequence: the padded length, or the longest sequence with varlen. */
  seqQ: number;
  /** Key rows per sequence before seqlensK: the padded length, longest varlen sequence, or maxPages*pageSize. */
  seqK: number;
  headsQ: number;
  headsK: number;
  headDim: number;
  /** hq / hk: query head h reads key head floor(h / groupSize). */
  groupSize: number;
  scale: number;
  causal: boolean;
  windowLeft: number;
  windowRight: number;
  softcap: number;
  /** Per (b, h) slopes, or null. Index with alibiSlope(). */
  alibiSlopes: Float32Array | null;
  alibiPerBatch: boolean;
  bias: BiasInfo | null;
  seqlensK: Int32Array | null;
  cuSeqlensQ: Int32Array | null;
  cuSeqlensK: Int32Array | null;
  /** Total rows of q (and of out) for varlen, else batch*seqQ. */
  totalQ: number;
  /** Rows of k/v: varlen totalK, paged pages*pageSize, else batch*seqK. */
  totalK: number;
  blockTable: Int32Array | null;
  pageSize: number;
  maxPages: number;
  numPages: number;
  dropout: DropoutInfo | null;
  returnLse: boolean;
  qStrides: Strides;
  kvStrides: Strides;
  /** Shape of out (= q's shape) and of lse. */
  outShape: readonly number[];
  lseShape: readonly number[];
  lseLength: number;
  /** The features this call uses: checked against the backend's capabilities. */
  features: Feature[];
}

const OPTION_KEYS = new Set([
  'layout',
  'scale',
  'causal',
  'window',
  'softcap',
  'alibiSlopes',
  'bias',
  'seqlensK',
  'cuSeqlensQ',
  'cuSeqlensK',
  'blockTable',
  'pageSize',
  'dropout',
  'returnLse',
]);

export interface ResolveContext {
  /** What the backend supports; omitted = everything (the references). */
  capabilities?: Capabilities;
  /** Name used in messages. */
  backend?: string;
  /** Extra option keys the backend accepts (e.g. 'threads'). */
  extraOptionKeys?: readonly string[];
  /** True for backward calls: the 'backward' feature is required. */
  backward?: boolean;
}

function checkTensor(name: string, t: unknown): asserts t is Tensor {
  if (typeof t !== 'object' || t === null)
    fail('INVALID_SHAPE', `${name} must be a tensor object, got ${describe(t)}`);
  const x = t as Partial<HostTensor>;
  if (typeof x.dtype !== 'string' || !DTYPES.includes(x.dtype as DType)) {
    fail('INVALID_DTYPE', `${name}.dtype must be one of ${DTYPES.join(', ')}, got ${describe(x.dtype)}`);
  }
  if (!Array.isArray(x.shape))
    fail('INVALID_SHAPE', `${name}.shape must be an array, got ${describe(x.shape)}`);
  for (const s of x.shape) {
    if (!Number.isSafeInteger(s) || s < 0) {
      fail('INVALID_SHAPE', `${name}.shape must hold non-negative integers, got ${describe(x.shape)}`);
    }
  }
  if (isDeviceTensor(t)) return;
  const expectFloat = x.dtype === 'float32';
  if (expectFloat ? !(x.data instanceof Float32Array) : !(x.data instanceof Uint16Array)) {
    fail(
      'INVALID_DTYPE',
      `${name}.data must be a ${expectFloat ? 'Float32Array' : 'Uint16Array (bit patterns)'} for dtype ${x.dtype}, got ${describe(x.data)}`,
    );
  }
  const n = numel(x.shape);
  if ((x.data as Float32Array | Uint16Array).length !== n) {
    fail(
      'INVALID_SHAPE',
      `${name}.data has ${(x.data as Float32Array).length} elements but shape ${describe(x.shape)} needs ${n}`,
    );
  }
}

export function numel(shape: readonly number[]): number {
  let n = 1;
  for (const s of shape) n *= s;
  return n;
}

function checkInt32Array(name: string, a: unknown, length: number | null): Int32Array {
  if (!(a instanceof Int32Array)) fail('INVALID_OPTION', `${name} must be an Int32Array, got ${describe(a)}`);
  if (length !== null && a.length !== length) {
    fail('INVALID_OPTION', `${name} must have ${length} entries, got ${a.length}`);
  }
  return a;
}

function checkCuSeqlens(name: string, cu: Int32Array, total: number, what: string): number {
  if (cu.length < 2) fail('INVALID_OPTION', `${name} needs batch + 1 >= 2 entries, got ${cu.length}`);
  if (cu[0] !== 0) fail('INVALID_OPTION', `${name}[0] must be 0, got ${cu[0]}`);
  let longest = 0;
  for (let b = 0; b + 1 < cu.length; b++) {
    const len = cu[b + 1] - cu[b];
    if (len < 0)
      fail(
        'INVALID_OPTION',
        `${name} must be non-decreasing, but ${name}[${b + 1}] = ${cu[b + 1]} < ${cu[b]}`,
      );
    longest = Math.max(longest, len);
  }
  if (cu[cu.length - 1] > total) {
    fail('INVALID_OPTION', `${name}[last] = ${cu[cu.length - 1]} exceeds the ${total} ${what}`);
  }
  return longest;
}

function isInt(x: unknown): x is number {
  return typeof x === 'number' && Number.isSafeInteger(x);
}

/**
 * Validates q, k, v and options against SPEC §2/§3/§6 (and the backend's capabilities) and returns the
 * descriptor. Throws FlashAttentionError before any work.
 */
export function resolveProblem(
  q: Tensor,
  k: Tensor,
  v: Tensor,
  options: AttentionOptions = {},
  ctx: ResolveContext = {},
): Problem {
  checkTensor('q', q);
  checkTensor('k', k);
  checkTensor('v', v);
  if (typeof options !== 'object' || options === null) {
    fail('INVALID_OPTION', `options must be an object, got ${describe(options)}`);
  }
  const extra = new Set(ctx.extraOptionKeys ?? []);
  for (const key of Object.keys(options)) {
    if (!OPTION_KEYS.has(key) && !extra.has(key)) {
      fail(
        'INVALID_OPTION',
        `unknown option ${JSON.stringify(key)}; known options: ${[...OPTION_KEYS, ...extra].join(', ')}`,
      );
    }
  }
  if (k.dtype !== q.dtype || v.dtype !== q.dtype) {
    fail('DTYPE_MISMATCH', `q, k and v must share one dtype, got q=${q.dtype}, k=${k.dtype}, v=${v.dtype}`);
  }
  const dtype = q.dtype;
  const layout = options.layout ?? 'bshd';
  if (layout !== 'bshd' && layout !== 'bhsd') {
    fail('INVALID_OPTION', `layout must be 'bshd' or 'bhsd', got ${describe(layout)}`);
  }

  const varlenQ = options.cuSeqlensQ !== undefined;
  const varlenK = options.cuSeqlensK !== undefined;
  const paged = options.blockTable !== undefined || options.pageSize !== undefined;
  if (varlenQ !== varlenK) {
    fail(
      'INVALID_OPTION',
      'cuSeqlensQ and cuSeqlensK go together: give both or neither (use seqlensK for key padding alone)',
    );
  }
  const varlen = varlenQ;
  if ((varlen || paged) && layout !== 'bshd') {
    fail('INVALID_OPTION', `varlen and paged KV need layout 'bshd', got ${describe(layout)}`);
  }
  if (varlen && paged) fail('INVALID_OPTION', 'cuSeqlensQ/cuSeqlensK cannot be combined with a blockTable');

  // Shapes. Non-varlen q is 4-D; varlen q is [totalQ, hq, d]. k/v follow q, or are pages.
  const qRank = varlen ? 3 : 4;
  const kRank = varlen ? 3 : 4;
  const qDesc = varlen ? '[totalQ, hq, d]' : layout === 'bshd' ? '[b, sq, hq, d]' : '[b, hq, sq, d]';
  const kDesc = varlen
    ? '[totalK, hk, d]'
    : paged
      ? '[pages, pageSize, hk, d]'
      : layout === 'bshd'
        ? '[b, sk, hk, d]'
        : '[b, hk, sk, d]';
  if (q.shape.length !== qRank) fail('INVALID_SHAPE', `q must be ${qDesc}, got shape ${describe(q.shape)}`);
  if (k.shape.length !== kRank) fail('INVALID_SHAPE', `k must be ${kDesc}, got shape ${describe(k.shape)}`);
  if (v.shape.length !== kRank) fail('INVALID_SHAPE', `v must be ${kDesc}, got shape ${describe(v.shape)}`);
  for (let a = 0; a < kRank; a++) {
    if (k.shape[a] !== v.shape[a]) {
      fail(
        'SHAPE_MISMATCH',
        `k and v must have one shape, got k ${describe(k.shape)} and v ${describe(v.shape)}`,
      );
    }
  }

  let batch: number;
  let seqQ: number;
  let seqK: number;
  let headsQ: number;
  let headsK: number;
  const headDim = q.shape[qRank - 1];
  let totalQ: number;
  let totalK: number;
  if (varlen) {
    totalQ = q.shape[0];
    headsQ = q.shape[1];
    totalK = k.shape[0];
    headsK = k.shape[1];
    const cuQ = checkInt32Array('cuSeqlensQ', options.cuSeqlensQ, null);
    batch = cuQ.length - 1;
    const cuK = checkInt32Array('cuSeqlensK', options.cuSeqlensK, batch + 1);
    seqQ = checkCuSeqlens('cuSeqlensQ', cuQ, totalQ, 'rows of q');
    if (cuQ[batch] !== totalQ) {
      fail('INVALID_OPTION', `cuSeqlensQ[${batch}] must equal q's ${totalQ} rows, got ${cuQ[batch]}`);
    }
    seqK = checkCuSeqlens('cuSeqlensK', cuK, totalK, 'rows of k');
  } else {
    batch = q.shape[0];
    if (layout === 'bshd') {
      seqQ = q.shape[1];
      headsQ = q.shape[2];
    } else {
      headsQ = q.shape[1];
      seqQ = q.shape[2];
    }
    totalQ = batch * seqQ;
    if (paged) {
      headsK = k.shape[2];
      seqK = 0;
      totalK = k.shape[0] * k.shape[1];
    } else {
      if (k.shape[0] !== batch) {
        fail(
          'SHAPE_MISMATCH',
          `q and k must have one batch size, got q ${describe(q.shape)} and k ${describe(k.shape)}`,
        );
      }
      if (layout === 'bshd') {
        seqK = k.shape[1];
        headsK = k.shape[2];
      } else {
        headsK = k.shape[1];
        seqK = k.shape[2];
      }
      totalK = batch * seqK;
    }
  }
  if (k.shape[kRank - 1] !== headDim) {
    fail(
      'SHAPE_MISMATCH',
      `q and k must have one head dim, got q ${describe(q.shape)} and k ${describe(k.shape)}`,
    );
  }
  if (headsQ < 1 || headsK < 1)
    fail('INVALID_SHAPE', `head counts must be >= 1, got hq=${headsQ}, hk=${headsK}`);
  if (headsQ % headsK !== 0) {
    fail('HEADS_NOT_DIVISIBLE', `hq must be a multiple of hk (GQA/MQA), got hq=${headsQ}, hk=${headsK}`);
  }
  const maxHeadDim = Math.min(MAX_HEAD_DIM, ctx.capabilities?.maxHeadDim ?? MAX_HEAD_DIM);
  if (headDim < 1 || headDim > maxHeadDim) {
    fail(
      'HEAD_DIM_UNSUPPORTED',
      `head dim must be in 1..${maxHeadDim}${ctx.backend ? ` on ${ctx.backend}` : ''}, got ${headDim}`,
    );
  }

  // Paged KV.
  let blockTable: Int32Array | null = null;
  let pageSize = 0;
  let maxPages = 0;
  let numPages = 0;
  if (paged) {
    if (options.blockTable === undefined || options.pageSize === undefined) {
      fail('INVALID_OPTION', 'paged KV needs both blockTable and pageSize');
    }
    pageSize = options.pageSize;
    if (!isInt(pageSize) || pageSize < 1)
      fail('INVALID_OPTION', `pageSize must be a positive integer, got ${describe(pageSize)}`);
    if (k.shape[1] !== pageSize) {
      fail(
        'SHAPE_MISMATCH',
        `paged k must be [pages, pageSize=${pageSize}, hk, d], got ${describe(k.shape)}`,
      );
    }
    numPages = k.shape[0];
    blockTable = checkInt32Array('blockTable', options.blockTable, null);
    if (batch === 0 ? blockTable.length !== 0 : blockTable.length % batch !== 0) {
      fail(
        'INVALID_OPTION',
        `blockTable must be [batch=${batch}, maxPages] flattened, got ${blockTable.length} entries`,
      );
    }
    maxPages = batch === 0 ? 0 : blockTable.length / batch;
    seqK = maxPages * pageSize;
  }

  // Key lengths.
  let seqlensK: Int32Array | null = null;
  if (options.seqlensK !== undefined) {
    if (varlen)
      fail(
        'INVALID_OPTION',
        'seqlensK cannot be combined with cuSeqlensK: the prefix sums already give each length',
      );
    seqlensK = checkInt32Array('seqlensK', options.seqlensK, batch);
    for (let b = 0; b < batch; b++) {
      if (seqlensK[b] < 0 || seqlensK[b] > seqK) {
        fail('INVALID_OPTION', `seqlensK[${b}] must be in 0..${seqK}, got ${seqlensK[b]}`);
      }
    }
  }
  if (blockTable) {
    // Only the pages a sequence reaches must be valid.
    for (let b = 0; b < batch; b++) {
      const len = seqlensK ? seqlensK[b] : seqK;
      const pages = Math.ceil(len / pageSize);
      for (let p = 0; p < pages; p++) {
        const page = blockTable[b * maxPages + p];
        if (page < 0 || page >= numPages) {
          fail('INVALID_OPTION', `blockTable[${b}][${p}] = ${page} is not a page of k (0..${numPages - 1})`);
        }
      }
    }
  }

  // Scalars.
  const scale = options.scale ?? 1 / Math.sqrt(headDim);
  if (typeof scale !== 'number' || !Number.isFinite(scale)) {
    fail('INVALID_OPTION', `scale must be a finite number, got ${describe(options.scale)}`);
  }
  const causal = options.causal ?? false;
  if (typeof causal !== 'boolean')
    fail('INVALID_OPTION', `causal must be a boolean, got ${describe(causal)}`);
  let windowLeft = -1;
  let windowRight = -1;
  if (options.window !== undefined) {
    const w = options.window as unknown;
    if (!Array.isArray(w) || w.length !== 2 || !w.every((x) => isInt(x) && x >= -1)) {
      fail(
        'INVALID_OPTION',
        `window must be [left, right] with integers >= -1 (-1 = unbounded), got ${describe(w)}`,
      );
    }
    [windowLeft, windowRight] = w as [number, number];
  }
  const softcap = options.softcap ?? 0;
  if (typeof softcap !== 'number' || !Number.isFinite(softcap) || softcap < 0) {
    fail(
      'INVALID_OPTION',
      `softcap must be a finite number >= 0 (0 = off), got ${describe(options.softcap)}`,
    );
  }
  let alibiSlopes: Float32Array | null = null;
  let alibiPerBatch = false;
  if (options.alibiSlopes !== undefined) {
    const a = options.alibiSlopes as unknown;
    if (!(a instanceof Float32Array))
      fail('INVALID_OPTION', `alibiSlopes must be a Float32Array, got ${describe(a)}`);
    if (a.length === batch * headsQ && a.length !== headsQ) alibiPerBatch = true;
    else if (a.length !== headsQ) {
      fail(
        'INVALID_OPTION',
        `alibiSlopes must have hq=${headsQ} or batch*hq=${batch * headsQ} entries, got ${a.length}`,
      );
    }
    for (let i = 0; i < a.length; i++) {
      if (!Number.isFinite(a[i])) fail('INVALID_OPTION', `alibiSlopes[${i}] must be finite, got ${a[i]}`);
    }
    alibiSlopes = a;
  }

  let bias: BiasInfo | null = null;
  if (options.bias !== undefined) {
    if (varlen) fail('INVALID_OPTION', 'bias cannot be combined with varlen (cuSeqlensQ/cuSeqlensK)');
    const t = options.bias as unknown;
    checkTensor('bias', t);
    if (t.shape.length > 4 || t.shape.length < 1) {
      fail(
        'INVALID_SHAPE',
        `bias must have 1 to 4 dimensions broadcastable to [b, hq, sq, sk], got ${describe(t.shape)}`,
      );
    }
    const full = [batch, headsQ, seqQ, seqK];
    const shape4 = [...new Array(4 - t.shape.length).fill(1), ...t.shape];
    const strides: [number, number, number, number] = [0, 0, 0, 0];
    let stride = 1;
    for (let a = 3; a >= 0; a--) {
      if (shape4[a] !== 1 && shape4[a] !== full[a]) {
        fail(
          'SHAPE_MISMATCH',
          `bias shape ${describe(t.shape)} does not broadcast to [b, hq, sq, sk] = ${describe(full)} (dimension ${a})`,
        );
      }
      strides[a] = shape4[a] === 1 ? 0 : stride;
      stride *= shape4[a];
    }
    bias = { tensor: t, strides, shape: t.shape };
  }

  let dropout: DropoutInfo | null = null;
  if (options.dropout !== undefined) {
    const d = options.dropout as unknown as Record<string, unknown>;
    if (typeof d !== 'object' || d === null)
      fail('INVALID_OPTION', `dropout must be { p, seed, offset? }, got ${describe(d)}`);
    const p = d.p;
    if (typeof p !== 'number' || !(p >= 0 && p < 1))
      fail('INVALID_OPTION', `dropout.p must be in [0, 1), got ${describe(p)}`);
    const seed = d.seed;
    if (!isInt(seed) || seed < 0) {
      fail('INVALID_OPTION', `dropout.seed must be a non-negative integer below 2^53, got ${describe(seed)}`);
    }
    const offset = d.offset ?? 0;
    if (!isInt(offset) || offset < 0 || offset >= 2 ** 32) {
      fail('INVALID_OPTION', `dropout.offset must be an integer in [0, 2^32), got ${describe(offset)}`);
    }
    if (p > 0) {
      dropout = { p, key0: seed % 2 ** 32, key1: Math.floor(seed / 2 ** 32), offset, keepScale: 1 / (1 - p) };
    }
  }
  const returnLse = options.returnLse ?? false;
  if (typeof returnLse !== 'boolean')
    fail('INVALID_OPTION', `returnLse must be a boolean, got ${describe(returnLse)}`);

  const features: Feature[] = [];
  if (causal) features.push('causal');
  if (windowLeft >= 0 || windowRight >= 0) features.push('window');
  if (softcap > 0) features.push('softcap');
  if (alibiSlopes) features.push('alibi');
  if (bias) features.push('bias');
  if (dropout) features.push('dropout');
  if (headsQ !== headsK) features.push('gqa');
  if (varlen) features.push('varlen');
  if (seqlensK) features.push('kvcache');
  if (paged) features.push('paged');
  if (returnLse) features.push('lse');
  if (ctx.backward) features.push('backward');
  if (ctx.capabilities) {
    const caps = ctx.capabilities;
    if (!caps.dtypes.includes(dtype)) {
      fail(
        'UNSUPPORTED_FEATURE',
        `${ctx.backend ?? 'this backend'} does not support dtype ${dtype} (it has ${caps.dtypes.join(', ')})`,
      );
    }
    for (const f of features) {
      if (!caps.features.includes(f))
        fail('UNSUPPORTED_FEATURE', `${ctx.backend ?? 'this backend'} does not support '${f}'`);
    }
    if (bias && !caps.dtypes.includes(bias.tensor.dtype)) {
      fail(
        'UNSUPPORTED_FEATURE',
        `${ctx.backend ?? 'this backend'} does not support a ${bias.tensor.dtype} bias`,
      );
    }
  }

  const qStrides: Strides = varlen
    ? { batch: 0, seq: headsQ * headDim, head: headDim }
    : layout === 'bshd'
      ? { batch: seqQ * headsQ * headDim, seq: headsQ * headDim, head: headDim }
      : { batch: headsQ * seqQ * headDim, seq: headDim, head: seqQ * headDim };
  const kvStrides: Strides =
    varlen || paged
      ? { batch: 0, seq: headsK * headDim, head: headDim }
      : layout === 'bshd'
        ? { batch: seqK * headsK * headDim, seq: headsK * headDim, head: headDim }
        : { batch: headsK * seqK * headDim, seq: headDim, head: seqK * headDim };

  const lseShape = varlen ? [headsQ, totalQ] : [batch, headsQ, seqQ];
  return {
    dtype,
    layout,
    batch,
    seqQ,
    seqK,
    headsQ,
    headsK,
    headDim,
    groupSize: headsQ / headsK,
    scale,
    causal,
    windowLeft,
    windowRight,
    softcap,
    alibiSlopes,
    alibiPerBatch,
    bias,
    seqlensK,
    cuSeqlensQ: varlen ? (options.cuSeqlensQ as Int32Array) : null,
    cuSeqlensK: varlen ? (options.cuSeqlensK as Int32Array) : null,
    totalQ,
    totalK,
    blockTable,
    pageSize,
    maxPages,
    numPages,
    dropout,
    returnLse,
    qStrides,
    kvStrides,
    outShape: [...q.shape],
    lseShape,
    lseLength: numel(lseShape),
    features,
  };
}

/**
 * Validates the extra inputs of a backward call (dout, out, lse must match the forward) and returns the
 * forward's Problem with the 'backward' feature required.
 */
export function resolveBackwardProblem(
  dout: Tensor,
  q: Tensor,
  k: Tensor,
  v: Tensor,
  out: Tensor,
  lse: Float32Array | DeviceTensor,
  options: AttentionOptions = {},
  ctx: ResolveContext = {},
): Problem {
  const problem = resolveProblem(q, k, v, options, { ...ctx, backward: true });
  checkTensor('dout', dout);
  checkTensor('out', out);
  for (const [name, t] of [
    ['dout', dout],
    ['out', out],
  ] as const) {
    if (t.dtype !== problem.dtype)
      fail('DTYPE_MISMATCH', `${name} must be ${problem.dtype} like q, got ${t.dtype}`);
    if (t.shape.length !== q.shape.length || t.shape.some((s, a) => s !== q.shape[a])) {
      fail('SHAPE_MISMATCH', `${name} must have q's shape ${describe(q.shape)}, got ${describe(t.shape)}`);
    }
  }
  if (isDeviceTensor(lse)) {
    if (lse.dtype !== 'float32') fail('DTYPE_MISMATCH', `lse must be float32, got ${lse.dtype}`);
    if (numel(lse.shape) !== problem.lseLength) {
      fail(
        'SHAPE_MISMATCH',
        `lse must have ${describe(problem.lseShape)} elements, got shape ${describe(lse.shape)}`,
      );
    }
  } else {
    if (!(lse instanceof Float32Array))
      fail('INVALID_DTYPE', `lse must be a Float32Array, got ${describe(lse)}`);
    if (lse.length !== problem.lseLength) {
      fail(
        'SHAPE_MISMATCH',
        `lse must have ${problem.lseLength} entries (${describe(problem.lseShape)}), got ${lse.length}`,
      );
    }
  }
  return problem;
}

// ---------------------------------------------------------------------------------------------
// Indexing. All offsets are in elements; each names the first element of a head-dim row.

/** Query rows of sequence b. */
export function seqLenQ(p: Problem, b: number): number {
  return p.cuSeqlensQ ? p.cuSeqlensQ[b + 1] - p.cuSeqlensQ[b] : p.seqQ;
}

/** Keys of sequence b (those with j >= seqLenK do not exist). */
export function seqLenK(p: Problem, b: number): number {
  if (p.cuSeqlensK) return p.cuSeqlensK[b + 1] - p.cuSeqlensK[b];
  return p.seqlensK ? p.seqlensK[b] : p.seqK;
}

/** Offset of q[b, i, h, :] (and of out, dout, dq). */
export function qOffset(p: Problem, b: number, i: number, h: number): number {
  const s = p.qStrides;
  const row = p.cuSeqlensQ ? p.cuSeqlensQ[b] + i : i;
  return b * s.batch + row * s.seq + h * s.head;
}

/** Offset of k[b, j, hk, :] (and of v, dk, dv), following the page table when there is one. */
export function kvOffset(p: Problem, b: number, j: number, hk: number): number {
  const s = p.kvStrides;
  if (p.blockTable) {
    const page = p.blockTable[b * p.maxPages + Math.floor(j / p.pageSize)];
    return (page * p.pageSize + (j % p.pageSize)) * s.seq + hk * s.head;
  }
  const row = p.cuSeqlensK ? p.cuSeqlensK[b] + j : j;
  return b * s.batch + row * s.seq + hk * s.head;
}

/** Index of lse[b, h, i] ([b, hq, sq], or [hq, totalQ] for varlen). */
export function lseIndex(p: Problem, b: number, h: number, i: number): number {
  return p.cuSeqlensQ ? h * p.totalQ + p.cuSeqlensQ[b] + i : (b * p.headsQ + h) * p.seqQ + i;
}

/** The key head that query head h reads. */
export function kvHead(p: Problem, h: number): number {
  return Math.floor(h / p.groupSize);
}

export function alibiSlope(p: Problem, b: number, h: number): number {
  if (!p.alibiSlopes) return 0;
  return p.alibiSlopes[p.alibiPerBatch ? b * p.headsQ + h : h];
}

/** Offset into the bias tensor's data of bias[b, h, i, j] after broadcasting. */
export function biasOffset(p: Problem, b: number, h: number, i: number, j: number): number {
  const s = (p.bias as BiasInfo).strides;
  return b * s[0] + h * s[1] + i * s[2] + j * s[3];
}
