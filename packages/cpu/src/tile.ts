/**
 * Helpers shared by the forward and backward kernels: decoding rows of a tensor into the tiles,
 * the score modifiers of SPEC §3 on one row of a tile, dropout weights, and a fast exp.
 */
import {
  bf16BitsToF32,
  type DType,
  decodeInto,
  dropoutKeep,
  encodeInto,
  f16ToF32Table,
  type HostTensor,
  type Problem,
} from '@flashattn/core';
import type { Data } from './job.js';
import { dtypeCode, F16, F32, type Scratch, type Tile } from './scratch.js';

// exp(x) = 2^(-n/256) · exp(r), n = round(-256x / ln 2), |r| <= ln2/512; 2^(-n/256) from two tables.
const N256_LOG2E = 256 / Math.LN2;
// ln2/256 split so that n·LN2_256_HI is exact for n < 2^21 (fdlibm's ln2 split, divided by 256).
const LN2_256_HI = 0.6931471803691238 / 256;
const LN2_256_LO = 1.9082149292705877e-10 / 256;
// Plain arrays of doubles, like the tiles (see Tile in scratch.ts).
const POW2_NEG: number[] = [];
for (let k = 0; k < 1024; k++) POW2_NEG.push(2 ** -k);
const POW2_FRAC: number[] = [];
for (let k = 0; k < 256; k++) POW2_FRAC.push(2 ** (-k / 256));

/**
 * exp(x). For -700 < x <= 0 (every softmax exponent s - max) it reduces x = -n·ln2/256 + r with
 * |r| <= ln2/512, takes 2^(-n/256) from two small tables (8 KiB and 2 KiB) and exp(r) from
 * 1 + r + r²/2 + r³/6: relative error below 1e-11, far under float32's 6e-8, in a fraction of
 * Math.exp's time (PERF.md). Anything else (NaN, x > 0, underflow territory) goes to Math.exp.
 */
export function expFast(x: number): number {
  if (x <= 0 && x > -700) {
    const n = (0.5 - x * N256_LOG2E) | 0;
    const r = x + n * LN2_256_HI + n * LN2_256_LO;
    return (1 + r * (1 + r * (0.5 + r * 0.16666666666666666))) * POW2_NEG[n >> 8] * POW2_FRAC[n & 255];
  }
  return Math.exp(x);
}

/** Reads d values of a tensor at `off` into `row`. */
export function readRow(src: Data, dtype: DType, off: number, d: number, row: Tile, s: Scratch): void {
  if (dtype === 'float32') {
    const f = src as Float32Array;
    for (let c = 0; c < d; c++) row[c] = f[off + c];
  } else {
    const r32 = s.row32;
    decodeInto(src, dtype, off, r32, 0, d);
    for (let c = 0; c < d; c++) row[c] = r32[c];
  }
}

/**
 * Column r of a transposed tile: T[c·ldT + r] = scale·x[c] for the d values of a tensor at `off`
 * (16-bit rows decoded through decodeInto, one row at a time).
 */
export function loadT(
  src: Data,
  dtype: DType,
  off: number,
  d: number,
  scale: number,
  T: Tile,
  ldT: number,
  r: number,
  s: Scratch,
): void {
  if (dtype === 'float32') {
    const f = src as Float32Array;
    for (let c = 0; c < d; c++) T[c * ldT + r] = f[off + c] * scale;
  } else {
    const r32 = s.row32;
    decodeInto(src, dtype, off, r32, 0, d);
    for (let c = 0; c < d; c++) T[c * ldT + r] = r32[c] * scale;
  }
}

/**
 * Row r of a row-major tile: R[r·ld + c] = scale·x[c]. Returns 0 when every value is finite, NaN
 * otherwise (x - x is 0 exactly for finite x): blocks holding a NaN or an infinity take the
 * zero-skipping product.
 */
export function loadR(
  src: Data,
  dtype: DType,
  off: number,
  d: number,
  scale: number,
  R: Tile,
  ld: number,
  r: number,
  s: Scratch,
): number {
  let fin = 0;
  const base = r * ld;
  if (dtype === 'float32') {
    const f = src as Float32Array;
    for (let c = 0; c < d; c++) {
      const x = f[off + c] * scale;
      R[base + c] = x;
      fin += x - x;
    }
  } else {
    const r32 = s.row32;
    decodeInto(src, dtype, off, r32, 0, d);
    for (let c = 0; c < d; c++) {
      const x = r32[c] * scale;
      R[base + c] = x;
      fin += x - x;
    }
  }
  return fin;
}

/** Both layouts of one row at once (loadR and loadT); returns loadR's finiteness. */
export function loadRT(
  src: Data,
  dtype: DType,
  off: number,
  d: number,
  scale: number,
  R: Tile,
  ld: number,
  T: Tile,
  ldT: number,
  r: number,
  s: Scratch,
): number {
  let f: Float32Array = s.row32;
  let o = 0;
  if (dtype === 'float32') {
    f = src as Float32Array;
    o = off;
  } else decodeInto(src, dtype, off, f, 0, d);
  let fin = 0;
  const base = r * ld;
  for (let c = 0; c < d; c++) {
    const x = f[o + c] * scale;
    R[base + c] = x;
    T[c * ldT + r] = x;
    fin += x - x;
  }
  return fin;
}

/** Writes d float64 values times `mul` to a tensor at `off`, rounding to its dtype. */
export function writeRow(
  acc: Tile | Float64Array,
  accOff: number,
  mul: number,
  dst: Data,
  dtype: DType,
  off: number,
  d: number,
  s: Scratch,
): void {
  if (dtype === 'float32') {
    const f = dst as Float32Array;
    for (let c = 0; c < d; c++) f[off + c] = acc[accOff + c] * mul;
  } else {
    const r32 = s.row32;
    for (let c = 0; c < d; c++) r32[c] = acc[accOff + c] * mul;
    encodeInto(r32, 0, dst, dtype, off, d);
  }
}

/** The per-(b, h) constants of the score modifiers of SPEC §3. */
export interface Modifiers {
  any: boolean;
  softcap: number;
  slope: number;
  bias: Data | null;
  biasCode: number;
  biasF16: Float32Array | null;
  /** Offset of bias[b, h, 0, 0] and the i and j strides. */
  biasBase: number;
  biasSi: number;
  biasSj: number;
}

export function modifiersFor(p: Problem, b: number, h: number, slope: number): Modifiers {
  const bias = p.bias;
  let data: Data | null = null;
  let code = F32;
  let base = 0;
  let si = 0;
  let sj = 0;
  if (bias) {
    const t = bias.tensor as HostTensor;
    data = t.data;
    code = dtypeCode(t.dtype);
    base = b * bias.strides[0] + h * bias.strides[1];
    si = bias.strides[2];
    sj = bias.strides[3];
  }
  return {
    any: p.softcap > 0 || slope !== 0 || bias !== null,
    softcap: p.softcap,
    slope,
    bias: data,
    biasCode: code,
    biasF16: code === F16 ? f16ToF32Table() : null,
    biasBase: base,
    biasSi: si,
    biasSj: sj,
  };
}

function biasAt(mod: Modifiers, idx: number): number {
  const data = mod.bias as Data;
  if (mod.biasCode === F32) return (data as Float32Array)[idx];
  if (mod.biasCode === F16) return (mod.biasF16 as Float32Array)[data[idx]];
  return bf16BitsToF32(data[idx]);
}

/**
 * Applies softcap, ALiBi and bias to S[so + t] for t in [a, e) of query row i (keys j0 + t), in the
 * order of SPEC §3. When `slopeOut` is given, it receives the softcap's derivative 1 - tanh² there
 * (for the backward), else nothing.
 */
export function modifyRow(
  S: Tile,
  so: number,
  a: number,
  e: number,
  mod: Modifiers,
  i: number,
  j0: number,
  off: number,
  slopeOut: Tile | null,
): void {
  const cap = mod.softcap;
  const slope = mod.slope;
  const diag = i + off - j0;
  const hasBias = mod.bias !== null;
  const bRow = mod.biasBase + i * mod.biasSi + j0 * mod.biasSj;
  const bj = mod.biasSj;
  for (let t = a; t < e; t++) {
    let x = S[so + t];
    if (cap > 0) {
      const th = Math.tanh(x / cap);
      x = cap * th;
      if (slopeOut) slopeOut[so + t] = 1 - th * th;
    }
    if (slope !== 0) x -= slope * Math.abs(diag - t);
    if (hasBias) x += biasAt(mod, bRow + t * bj);
    S[so + t] = x;
  }
}

/** Dropout parameters of a call, or null. */
export interface Dropout {
  key0: number;
  key1: number;
  offset: number;
  p: number;
  keepScale: number;
}

/** keep/(1 - p) for element (i, j) of row bh (SPEC §5), 0 when dropped. */
export function dropWeight(dr: Dropout, j: number, i: number, bh: number): number {
  return dropoutKeep(dr.key0, dr.key1, j, i, bh, dr.offset, dr.p) ? dr.keepScale : 0;
}
