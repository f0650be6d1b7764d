import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  bf16BitsToF32,
  byteSize,
  dataArrayFor,
  decodeInto,
  encodeInto,
  f16BitsToF32,
  f16ToF32Table,
  f32ToBf16Bits,
  f32ToF16Bits,
  fromFloat32,
  roundToDType,
  tensorFromArray,
  toFloat32,
} from '../src/dtype.js';
import { FlashAttentionError } from '../src/errors.js';
import type { DType } from '../src/types.js';

// Bit access for building test inputs, kept apart from the implementation's own scratch.
const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);
function bitsToF32(bits: number): number {
  u32[0] = bits >>> 0;
  return f32[0];
}
function f32Bits(x: number): number {
  f32[0] = x;
  return u32[0];
}
/** The next float32 above a positive float32. */
function nextUp(x: number): number {
  return bitsToF32(f32Bits(x) + 1);
}
/** The next float32 below a positive, non-zero float32. */
function nextDown(x: number): number {
  return bitsToF32(f32Bits(x) - 1);
}

/**
 * An independent model of a binary format with `expBits` exponent and `mantBits` fraction bits,
 * written from the IEEE 754 definition rather than from bit manipulation.
 */
interface Format {
  name: string;
  expBits: number;
  mantBits: number;
  encode: (x: number) => number;
  decode: (h: number) => number;
}

function oracleDecode(fmt: Format, h: number): number {
  const bias = 2 ** (fmt.expBits - 1) - 1;
  const expMax = 2 ** fmt.expBits - 1;
  const sign = h & 0x8000 ? -1 : 1;
  const e = (h >> fmt.mantBits) & expMax;
  const m = h & (2 ** fmt.mantBits - 1);
  const scale = 2 ** fmt.mantBits;
  if (e === expMax) return m === 0 ? sign * Number.POSITIVE_INFINITY : Number.NaN;
  if (e === 0) return sign * 2 ** (1 - bias) * (m / scale);
  return sign * 2 ** (e - bias) * (1 + m / scale);
}

interface Grid {
  /** All non-negative finite values, increasing; index = bit pattern. */
  values: number[];
  infBits: number;
  /** Smallest magnitude that rounds to Inf: max finite + half its ulp (the tie goes to Inf). */
  overflow: number;
}

function grid(fmt: Format): Grid {
  const infBits = (2 ** fmt.expBits - 1) << fmt.mantBits;
  const values: number[] = [];
  for (let h = 0; h < infBits; h++) values.push(oracleDecode(fmt, h));
  const n = values.length;
  return { values, infBits, overflow: values[n - 1] + (values[n - 1] - values[n - 2]) / 2 };
}

/** Nearest representable value by binary search over the grid, ties to the even bit pattern. */
function oracleEncode(g: Grid, x: number): number {
  if (Number.isNaN(x)) return Number.NaN;
  const sign = x < 0 || Object.is(x, -0) ? 0x8000 : 0;
  const a = Math.abs(x);
  if (a >= g.overflow) return sign | g.infBits;
  const vals = g.values;
  let lo = 0;
  let hi = vals.length - 1;
  // Invariant: vals[lo] <= a, and a < vals[hi] unless a is the max.
  if (a >= vals[hi]) return sign | hi;
  while (hi - lo > 1) {
    const mid = (lo + hi) >> 1;
    if (vals[mid] <= a) lo = mid;
    else hi = mid;
  }
  const below = a - vals[lo];
  const above = vals[hi] - a;
  if (below < above) return sign | lo;
  if (above < below) return sign | hi;
  return sign | (lo % 2 === 0 ? lo : hi);
}

/** Half an ulp of the format at float32 x (finite, below the overflow threshold). */
function halfUlp(fmt: Format, x: number): number {
  const bias = 2 ** (fmt.expBits - 1) - 1;
  const e32 = ((f32Bits(x) >>> 23) & 0xff) - 127;
  const e = Math.max(e32, 1 - bias);
  return 2 ** (e - fmt.mantBits - 1);
}

const FORMATS: Format[] = [
  { name: 'float16', expBits: 5, mantBits: 10, encode: f32ToF16Bits, decode: f16BitsToF32 },
  { name: 'bfloat16', expBits: 8, mantBits: 7, encode: f32ToBf16Bits, decode: bf16BitsToF32 },
];

const float32Arb = fc.integer({ min: 0, max: 0xffffffff }).map(bitsToF32);

describe.each(FORMATS)('$name scalar conversions', (fmt) => {
  const g = grid(fmt);

  it('decodes all 65,536 bit patterns as the oracle does', () => {
    for (let h = 0; h < 65536; h++) {
      const want = oracleDecode(fmt, h);
      const got = fmt.decode(h);
      if (Number.isNaN(want)) {
        if (!Number.isNaN(got)) expect.fail(`${h.toString(16)}: got ${got}, want NaN`);
      } else if (!Object.is(got, want)) {
        expect.fail(`${h.toString(16)}: got ${got}, want ${want}`);
      }
    }
  });

  it('re-encodes every non-NaN pattern to itself', () => {
    for (let h = 0; h < 65536; h++) {
      const v = fmt.decode(h);
      if (Number.isNaN(v)) continue;
      const back = fmt.encode(v);
      if (back !== h) expect.fail(`${h.toString(16)} -> ${v} -> ${back.toString(16)}`);
    }
  });

  it('agrees with the oracle encoder on every decoded value', () => {
    for (let h = 0; h < 65536; h++) {
      const v = fmt.decode(h);
      if (Number.isNaN(v)) continue;
      const got = fmt.encode(v);
      const want = oracleEncode(g, v);
      if (got !== want) expect.fail(`${v}: got ${got.toString(16)}, want ${want.toString(16)}`);
    }
  });

  it('rounds midpoints to even and their float32 neighbours to the nearer value', () => {
    const vals = g.values;
    for (let k = 0; k + 1 < vals.length; k++) {
      const a = vals[k];
      const b = vals[k + 1];
      const mid = (a + b) / 2;
      // The midpoint needs one more bit than the format has, so float32 holds it exactly.
      if (Math.fround(mid) !== mid) expect.fail(`midpoint ${mid} not a float32`);
      const even = k % 2 === 0 ? k : k + 1;
      for (const sign of [0, 0x8000]) {
        const s = sign ? -1 : 1;
        const cases: [number, number][] = [
          [mid, even],
          [nextUp(mid), k + 1],
          [nextDown(mid), k],
        ];
        for (const [x, want] of cases) {
          const got = fmt.encode(s * x);
          if (got !== (sign | want)) {
            expect.fail(`${s * x}: got ${got.toString(16)}, want ${(sign | want).toString(16)}`);
          }
        }
      }
    }
  });

  it('overflows to Inf exactly from max + half an ulp', () => {
    const max = g.values[g.values.length - 1];
    const maxBits = g.values.length - 1;
    expect(Math.fround(g.overflow)).toBe(g.overflow);
    expect(fmt.encode(max)).toBe(maxBits);
    expect(fmt.encode(nextDown(g.overflow))).toBe(maxBits);
    expect(fmt.encode(g.overflow)).toBe(g.infBits);
    expect(fmt.encode(nextUp(g.overflow))).toBe(g.infBits);
    expect(fmt.encode(-g.overflow)).toBe(0x8000 | g.infBits);
    expect(fmt.encode(-nextDown(g.overflow))).toBe(0x8000 | maxBits);
    // The largest finite float32 lies beyond both formats' overflow thresholds.
    expect(fmt.encode(bitsToF32(0x7f7fffff))).toBe(g.infBits);
  });

  it('keeps ±Inf and ±0', () => {
    expect(fmt.encode(Number.POSITIVE_INFINITY)).toBe(g.infBits);
    expect(fmt.encode(Number.NEGATIVE_INFINITY)).toBe(0x8000 | g.infBits);
    expect(fmt.decode(g.infBits)).toBe(Number.POSITIVE_INFINITY);
    expect(fmt.decode(0x8000 | g.infBits)).toBe(Number.NEGATIVE_INFINITY);
    expect(fmt.encode(0)).toBe(0);
    expect(fmt.encode(-0)).toBe(0x8000);
    expect(Object.is(fmt.decode(0x8000), -0)).toBe(true);
    // float32 subnormals are far below half the smallest subnormal of either format.
    expect(fmt.encode(bitsToF32(1))).toBe(0);
    expect(fmt.encode(bitsToF32(0x80000001))).toBe(0x8000);
  });

  it('turns every NaN into a quiet NaN of the same sign, never Inf', () => {
    const quiet = g.infBits | (1 << (fmt.mantBits - 1));
    // Signalling, quiet, smallest and largest payloads, both signs.
    for (const bits of [0x7f800001, 0x7fc00000, 0x7fbfffff, 0x7fffffff, 0x7f802000]) {
      expect(fmt.encode(bitsToF32(bits))).toBe(quiet);
      expect(fmt.encode(bitsToF32(bits | 0x80000000))).toBe(0x8000 | quiet);
    }
    expect(fmt.encode(Number.NaN)).toBe(quiet);
    for (let m = 1; m < 1 << fmt.mantBits; m++) {
      expect(Number.isNaN(fmt.decode(g.infBits | m))).toBe(true);
      expect(Number.isNaN(fmt.decode(0x8000 | g.infBits | m))).toBe(true);
    }
  });

  it('matches the oracle encoder on random float32 values (all bit patterns equally likely)', () => {
    fc.assert(
      fc.property(float32Arb, (x) => {
        const want = oracleEncode(g, x);
        const got = fmt.encode(x);
        if (Number.isNaN(want)) return Number.isNaN(fmt.decode(got));
        return got === want;
      }),
      { numRuns: 20000 },
    );
  });

  it('stays within half an ulp of the target format', () => {
    const check = (x: number) => {
      const y = fmt.decode(fmt.encode(x));
      if (Math.abs(x) >= g.overflow) return y === Math.sign(x) * Number.POSITIVE_INFINITY;
      return Math.abs(y - x) <= halfUlp(fmt, x);
    };
    fc.assert(fc.property(fc.float({ noNaN: true, noDefaultInfinity: true }), check), { numRuns: 20000 });
    fc.assert(
      fc.property(
        float32Arb.filter((x) => Number.isFinite(x)),
        check,
      ),
      { numRuns: 20000 },
    );
  });
});

describe('float16 specifics', () => {
  it('narrows to float32 before rounding, so a double cannot double-round differently', () => {
    // 1 + 2^-11 is the midpoint between 1 and 1 + 2^-10. The extra 2^-40 is lost when the number is
    // narrowed to float32, after which the tie goes to the even neighbour, 1.0. Rounding the double
    // directly would have given 1 + 2^-10: the contract is the float32 path.
    expect(f32ToF16Bits(1 + 2 ** -11 + 2 ** -40)).toBe(0x3c00);
    expect(f32ToF16Bits(Math.fround(1 + 2 ** -11 + 2 ** -20))).toBe(0x3c01);
  });

  it('handles the subnormal edges', () => {
    expect(f32ToF16Bits(2 ** -24)).toBe(0x0001);
    expect(f32ToF16Bits(2 ** -25)).toBe(0x0000);
    expect(f32ToF16Bits(nextUp(2 ** -25))).toBe(0x0001);
    expect(f32ToF16Bits(1.5 * 2 ** -24)).toBe(0x0002);
    expect(f32ToF16Bits(2 ** -14)).toBe(0x0400);
    // Largest subnormal plus half an ulp carries into the smallest normal.
    expect(f32ToF16Bits(2 ** -14 - 2 ** -25)).toBe(0x0400);
    expect(f32ToF16Bits(65504)).toBe(0x7bff);
    expect(f16BitsToF32(0x7bff)).toBe(65504);
    expect(f16BitsToF32(0x3555)).toBe(0.333251953125);
  });

  it('has a lookup table equal to the scalar decoder', () => {
    const t = f16ToF32Table();
    expect(t).toBe(f16ToF32Table());
    for (let h = 0; h < 65536; h++) {
      const a = t[h];
      const b = f16BitsToF32(h);
      if (!(Object.is(a, b) || (Number.isNaN(a) && Number.isNaN(b)))) expect.fail(`table[${h}]`);
    }
  });
});

describe('bulk helpers', () => {
  const values = [0, -0, 1, -2.5, 1 / 3, 65504, 70000, 1e-8, Number.POSITIVE_INFINITY, Number.NaN, 3.25, 1e5];

  it('sizes and storage per dtype', () => {
    expect(byteSize('float32')).toBe(4);
    expect(byteSize('float16')).toBe(2);
    expect(byteSize('bfloat16')).toBe(2);
    expect(dataArrayFor('float32', 3)).toBeInstanceOf(Float32Array);
    expect(dataArrayFor('float16', 3)).toBeInstanceOf(Uint16Array);
    expect(dataArrayFor('bfloat16', 5).length).toBe(5);
  });

  it('rejects an unknown dtype with INVALID_DTYPE', () => {
    const bad = 'float64' as DType;
    const calls = [
      () => byteSize(bad),
      () => dataArrayFor(bad, 1),
      () => roundToDType(new Float32Array(1), bad),
      () => tensorFromArray([1], [1], bad),
      () => toFloat32({ dtype: bad, shape: [1], data: new Float32Array(1) }),
      () => fromFloat32(new Float32Array(1), bad, [1]),
      () => decodeInto(new Float32Array(1), bad, 0, new Float32Array(1), 0, 1),
      () => encodeInto(new Float32Array(1), 0, new Float32Array(1), bad, 0, 1),
    ];
    for (const call of calls) {
      expect(call).toThrow(FlashAttentionError);
      expect(call).toThrow(/INVALID_DTYPE/);
    }
  });

  it('rejects storage that does not match the dtype', () => {
    expect(() => decodeInto(new Float32Array(2), 'float16', 0, new Float32Array(2), 0, 2)).toThrow(
      /INVALID_DTYPE/,
    );
    expect(() => encodeInto(new Float32Array(2), 0, new Uint16Array(2), 'float32', 0, 2)).toThrow(
      /INVALID_DTYPE/,
    );
  });

  it.each<[DType, (x: number) => number]>([
    ['float32', (x) => Math.fround(x)],
    ['float16', (x) => f16BitsToF32(f32ToF16Bits(x))],
    ['bfloat16', (x) => bf16BitsToF32(f32ToBf16Bits(x))],
  ])('%s: tensorFromArray, toFloat32, fromFloat32 and roundToDType agree', (dtype, round) => {
    const want = values.map(round);
    const t = tensorFromArray(values, [values.length], dtype);
    expect(t.dtype).toBe(dtype);
    expect(t.shape).toEqual([values.length]);
    expect(t.data).toBeInstanceOf(dtype === 'float32' ? Float32Array : Uint16Array);
    const back = toFloat32(t);
    expect(Array.from(back)).toEqual(want);
    expect(back).not.toBe(t.data);

    const again = fromFloat32(back, dtype, t.shape);
    expect(Array.from(again.data)).toEqual(Array.from(t.data));
    expect(again.data).not.toBe(back);

    const r = Float32Array.from(values);
    expect(roundToDType(r, dtype)).toBe(r);
    expect(Array.from(r)).toEqual(want);
  });

  it('decodes and encodes runs at offsets, leaving the rest alone', () => {
    const src = new Uint16Array([0x3c00, 0x4000, 0x4200, 0x4400, 0xc000]);
    const dst = new Float32Array(6).fill(-7);
    decodeInto(src, 'float16', 1, dst, 2, 3);
    expect(Array.from(dst)).toEqual([-7, -7, 2, 3, 4, -7]);

    const bf = new Uint16Array(4).fill(0xffff);
    encodeInto(Float32Array.from([9, 1, -2, 0.5]), 1, bf, 'bfloat16', 1, 2);
    expect(Array.from(bf)).toEqual([0xffff, 0x3f80, 0xc000, 0xffff]);

    const f = new Float32Array(3);
    encodeInto(Float32Array.from([1, 2, 3]), 1, f, 'float32', 0, 2);
    expect(Array.from(f)).toEqual([2, 3, 0]);
    const g = new Float32Array(3);
    decodeInto(Float32Array.from([1, 2, 3]), 'float32', 2, g, 2, 1);
    expect(Array.from(g)).toEqual([0, 0, 3]);
  });

  it('round-trips random float32 runs through each dtype (decode(encode) is idempotent)', () => {
    fc.assert(
      fc.property(fc.array(float32Arb, { maxLength: 64 }), (xs) => {
        const src = Float32Array.from(xs);
        for (const dtype of ['float16', 'bfloat16'] as const) {
          const enc = new Uint16Array(xs.length);
          encodeInto(src, 0, enc, dtype, 0, xs.length);
          const dec = new Float32Array(xs.length);
          decodeInto(enc, dtype, 0, dec, 0, xs.length);
          const enc2 = new Uint16Array(xs.length);
          encodeInto(dec, 0, enc2, dtype, 0, xs.length);
          for (let i = 0; i < xs.length; i++) {
            if (Number.isNaN(dec[i])) {
              if (!Number.isNaN(src[i])) return false;
            } else if (enc2[i] !== enc[i]) return false;
          }
        }
        return true;
      }),
      { numRuns: 500 },
    );
  });
});
