/**
 * Conversions between float32 and the two 16-bit storage formats of SPEC §2.
 *
 * float16 and bfloat16 tensors hold bit patterns in a Uint16Array; every conversion to them rounds
 * to nearest, ties to even, keeps subnormals, signed zeros and ±Inf, and turns any NaN into a quiet
 * NaN of the same sign. The scalar functions are called once per element by the cpu backend, so they
 * work through one shared scratch word and never allocate.
 */

import { describe, fail } from './errors.js';
import type { DType, HostTensor } from './types.js';

// One scratch float32 aliased as a uint32: the only allocation-free way to reach a float's bits in JS.
const scratchF32 = new Float32Array(1);
const scratchU32 = new Uint32Array(scratchF32.buffer);

/** 2^-24, the value of the float16 subnormal with mantissa 1. */
const F16_MIN_SUBNORMAL = 2 ** -24;

/**
 * float32 → float16 bits. `x` is first narrowed to float32 (storing it in a Float32Array does exactly
 * what Math.fround does), and the rounding to float16 then works on those float32 bits: rounding a
 * double straight to float16 could give a different answer than the float32 tensor value it stands for.
 */
export function f32ToF16Bits(x: number): number {
  scratchF32[0] = x;
  const bits = scratchU32[0];
  const sign = (bits >>> 16) & 0x8000;
  const exp = (bits >>> 23) & 0xff;
  const mant = bits & 0x7fffff;

  if (exp === 0xff) return mant !== 0 ? sign | 0x7e00 : sign | 0x7c00;

  // Re-bias from 127 to 15.
  const e = exp - 112;
  // exp >= 143 means |x| >= 2^16, beyond float16 range whatever the rounding.
  if (e >= 0x1f) return sign | 0x7c00;

  if (e <= 0) {
    // Below half the smallest subnormal (2^-25) everything rounds to zero; exactly 2^-25 is handled
    // below, where the tie goes to the even neighbour, zero.
    if (e < -10) return sign;
    // The result is a float16 subnormal m·2^-24 with m = significand·2^(exp-126): shift right by
    // 14 - e (14..24 places) and round on the bits shifted out.
    const full = mant | 0x800000;
    const shift = 14 - e;
    let m = full >>> shift;
    const rest = full & ((1 << shift) - 1);
    const half = 1 << (shift - 1);
    if (rest > half || (rest === half && (m & 1) !== 0)) m++;
    // m may carry to 0x400, which is exactly the encoding of the smallest normal: no special case.
    return sign | m;
  }

  let h = (e << 10) | (mant >>> 13);
  const rest = mant & 0x1fff;
  // A carry out of the mantissa bumps the exponent, and from the largest finite value lands on
  // 0x7c00 (Inf): exactly the IEEE overflow behaviour, so it needs no separate test.
  if (rest > 0x1000 || (rest === 0x1000 && (h & 1) !== 0)) h++;
  return sign | h;
}

/** float16 bits → the float32 value they encode (exact: every float16 is a float32). */
export function f16BitsToF32(h: number): number {
  const sign = (h & 0x8000) << 16;
  const exp = (h >>> 10) & 0x1f;
  const mant = h & 0x3ff;
  if (exp === 0) {
    // Subnormals and zeros are small integers times 2^-24; the product is exact in float64.
    const v = mant * F16_MIN_SUBNORMAL;
    return sign !== 0 ? -v : v;
  }
  scratchU32[0] = exp === 0x1f ? sign | 0x7f800000 | (mant << 13) : sign | ((exp + 112) << 23) | (mant << 13);
  return scratchF32[0];
}

let f16Table: Float32Array | undefined;

/**
 * A table of all 65,536 float16 values indexed by bit pattern, built on first use (256 KiB). Bulk
 * decoding reads it instead of rebuilding each float's bits.
 */
export function f16ToF32Table(): Float32Array {
  if (f16Table === undefined) {
    const t = new Float32Array(65536);
    for (let h = 0; h < 65536; h++) t[h] = f16BitsToF32(h);
    f16Table = t;
  }
  return f16Table;
}

/**
 * float32 → bfloat16 bits: the upper half of the float32 bits, rounded to nearest even on the lower
 * half. NaN is tested first because adding the rounding bias to a NaN with a large payload would carry
 * into the exponent and produce Inf.
 */
export function f32ToBf16Bits(x: number): number {
  scratchF32[0] = x;
  const bits = scratchU32[0];
  if ((bits & 0x7fffffff) > 0x7f800000) return ((bits >>> 16) & 0x8000) | 0x7fc0;
  // Largest non-NaN input is 0xff800000, so the sum stays below 2^32 and >>> cannot wrap.
  return ((bits + 0x7fff + ((bits >>> 16) & 1)) >>> 16) & 0xffff;
}

/** bfloat16 bits → the float32 value they encode (exact). */
export function bf16BitsToF32(h: number): number {
  scratchU32[0] = (h & 0xffff) << 16;
  return scratchF32[0];
}

function unknownDType(dtype: unknown): never {
  return fail('INVALID_DTYPE', `dtype must be 'float32', 'float16' or 'bfloat16'; got ${describe(dtype)}`);
}

/** Bytes per element of a dtype. */
export function byteSize(dtype: DType): number {
  switch (dtype) {
    case 'float32':
      return 4;
    case 'float16':
    case 'bfloat16':
      return 2;
    default:
      return unknownDType(dtype);
  }
}

/** A zero-filled storage array of the kind SPEC §2 prescribes for `dtype`. */
export function dataArrayFor(dtype: DType, length: number): Float32Array | Uint16Array {
  switch (dtype) {
    case 'float32':
      return new Float32Array(length);
    case 'float16':
    case 'bfloat16':
      return new Uint16Array(length);
    default:
      return unknownDType(dtype);
  }
}

// A Float32Array read as bit patterns (or the reverse) would give garbage silently; this check is once
// per call, not per element.
function expectStorage(arr: Float32Array | Uint16Array, dtype: DType, what: string): void {
  const ok = dtype === 'float32' ? arr instanceof Float32Array : arr instanceof Uint16Array;
  if (!ok) {
    fail(
      'INVALID_DTYPE',
      `${what} is a ${describe(arr)} but dtype ${describe(dtype)} is stored in a ${
        dtype === 'float32' ? 'Float32Array' : 'Uint16Array'
      }`,
    );
  }
}

/**
 * Decodes `count` elements of `src` (storage of `dtype`) starting at `srcOffset` into float32 values
 * at `dst[dstOffset…]`. Made for block-at-a-time use, so it neither allocates nor creates views.
 */
export function decodeInto(
  src: Float32Array | Uint16Array,
  dtype: DType,
  srcOffset: number,
  dst: Float32Array,
  dstOffset: number,
  count: number,
): void {
  if (dtype !== 'float32' && dtype !== 'float16' && dtype !== 'bfloat16') unknownDType(dtype);
  expectStorage(src, dtype, 'source');
  if (dtype === 'float32') {
    for (let n = 0; n < count; n++) dst[dstOffset + n] = src[srcOffset + n];
  } else if (dtype === 'float16') {
    const table = f16ToF32Table();
    for (let n = 0; n < count; n++) dst[dstOffset + n] = table[src[srcOffset + n]];
  } else {
    for (let n = 0; n < count; n++) dst[dstOffset + n] = bf16BitsToF32(src[srcOffset + n]);
  }
}

/**
 * Encodes `count` float32 values from `src[srcOffset…]` into `dst[dstOffset…]`, storage of `dtype`,
 * rounding to nearest even. The counterpart of `decodeInto`, equally allocation-free.
 */
export function encodeInto(
  src: Float32Array,
  srcOffset: number,
  dst: Float32Array | Uint16Array,
  dtype: DType,
  dstOffset: number,
  count: number,
): void {
  if (dtype !== 'float32' && dtype !== 'float16' && dtype !== 'bfloat16') unknownDType(dtype);
  expectStorage(dst, dtype, 'destination');
  if (dtype === 'float32') {
    for (let n = 0; n < count; n++) dst[dstOffset + n] = src[srcOffset + n];
  } else if (dtype === 'float16') {
    for (let n = 0; n < count; n++) dst[dstOffset + n] = f32ToF16Bits(src[srcOffset + n]);
  } else {
    for (let n = 0; n < count; n++) dst[dstOffset + n] = f32ToBf16Bits(src[srcOffset + n]);
  }
}

/** The values of `t` as a new Float32Array (a copy even for float32, so callers may write to it). */
export function toFloat32(t: HostTensor): Float32Array {
  const out = new Float32Array(t.data.length);
  decodeInto(t.data, t.dtype, 0, out, 0, t.data.length);
  return out;
}

/**
 * A tensor of `dtype` holding `data` rounded to that dtype. The data is always copied, float32 too, so
 * the tensor never aliases an array the caller may reuse.
 */
export function fromFloat32(data: Float32Array, dtype: DType, shape: readonly number[]): HostTensor {
  const out = dataArrayFor(dtype, data.length);
  encodeInto(data, 0, out, dtype, 0, data.length);
  return { dtype, shape: [...shape], data: out };
}

/**
 * Rounds every value of `data` to `dtype` and back, in place, and returns `data`. References use it
 * to see float32 intermediates as a 16-bit kernel would store them; for float32 it changes nothing.
 */
export function roundToDType(data: Float32Array, dtype: DType): Float32Array {
  switch (dtype) {
    case 'float32':
      return data;
    case 'float16': {
      const table = f16ToF32Table();
      for (let n = 0; n < data.length; n++) data[n] = table[f32ToF16Bits(data[n])];
      return data;
    }
    case 'bfloat16':
      for (let n = 0; n < data.length; n++) data[n] = bf16BitsToF32(f32ToBf16Bits(data[n]));
      return data;
    default:
      return unknownDType(dtype);
  }
}

/**
 * A tensor of `dtype` from plain numbers. Each value is narrowed to float32 first and then rounded to
 * the 16-bit format, as PyTorch does when it builds a half tensor from Python floats. The shape is not
 * checked against the length here; validation of whole problems lives in problem.ts.
 */
export function tensorFromArray(
  values: ArrayLike<number>,
  shape: readonly number[],
  dtype: DType = 'float32',
): HostTensor {
  const n = values.length;
  const data = dataArrayFor(dtype, n);
  if (dtype === 'float32') {
    for (let i = 0; i < n; i++) data[i] = values[i];
  } else if (dtype === 'float16') {
    for (let i = 0; i < n; i++) data[i] = f32ToF16Bits(values[i]);
  } else {
    for (let i = 0; i < n; i++) data[i] = f32ToBf16Bits(values[i]);
  }
  return { dtype, shape: [...shape], data };
}
