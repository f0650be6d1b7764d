import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { dropoutKeep, dropoutUniform, philox4x32, philoxKey } from '../src/philox.js';

/**
 * Known answers from Random123's tests/kat_vectors (github.com/DEShawResearch/random123, commit
 * 9545ff6413f258be2f04c1d319d99aaef7521150, lines 27-29, the "philox4x32 10" lines). Columns there:
 * counter (4 words), key (2 words), expected output (4 words).
 */
const KAT: { counter: number[]; key: number[]; expected: number[] }[] = [
  {
    counter: [0x00000000, 0x00000000, 0x00000000, 0x00000000],
    key: [0x00000000, 0x00000000],
    expected: [0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8],
  },
  {
    counter: [0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff],
    key: [0xffffffff, 0xffffffff],
    expected: [0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd],
  },
  {
    counter: [0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344],
    key: [0xa4093822, 0x299f31d0],
    expected: [0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1],
  },
];

/**
 * A deliberately plain BigInt Philox4x32-10 from the published description: full 64-bit products,
 * and the key bumped after each round (one bump too many at the end, which is never used).
 */
function slowPhilox(counter: readonly number[], key: readonly number[]): number[] {
  const mask = 0xffffffffn;
  let x = counter.map((c) => BigInt(c >>> 0));
  let k0 = BigInt(key[0] >>> 0);
  let k1 = BigInt(key[1] >>> 0);
  for (let round = 0; round < 10; round++) {
    const p0 = 0xd2511f53n * x[0];
    const p1 = 0xcd9e8d57n * x[2];
    x = [(p1 >> 32n) ^ x[1] ^ k0, p1 & mask, (p0 >> 32n) ^ x[3] ^ k1, p0 & mask];
    k0 = (k0 + 0x9e3779b9n) & mask;
    k1 = (k1 + 0xbb67ae85n) & mask;
  }
  return x.map((w) => Number(w));
}

const u32 = fc.integer({ min: 0, max: 0xffffffff });

describe('philox4x32', () => {
  it.each(KAT)('matches Random123 kat_vectors for counter $counter', ({ counter, key, expected }) => {
    const [c0, c1, c2, c3] = counter;
    const [k0, k1] = key;
    expect(Array.from(philox4x32(c0, c1, c2, c3, k0, k1))).toEqual(expected);
    expect(slowPhilox(counter, key)).toEqual(expected);
  });

  it('takes its arguments mod 2^32', () => {
    expect(Array.from(philox4x32(-1, -1, -1, -1, -1, -1))).toEqual(KAT[1].expected);
    expect(Array.from(philox4x32(2 ** 32, 0, 0, 0, 0, 0))).toEqual(KAT[0].expected);
  });

  it('writes into and returns the given array', () => {
    const out = new Uint32Array(4);
    expect(philox4x32(0, 0, 0, 0, 0, 0, out)).toBe(out);
    expect(Array.from(out)).toEqual(KAT[0].expected);
    // A second call overwrites all four words.
    philox4x32(0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344, 0xa4093822, 0x299f31d0, out);
    expect(Array.from(out)).toEqual(KAT[2].expected);
  });

  it('agrees with a BigInt implementation on thousands of random counters and keys', () => {
    const out = new Uint32Array(4);
    fc.assert(
      fc.property(fc.tuple(u32, u32, u32, u32), fc.tuple(u32, u32), (c, k) => {
        philox4x32(c[0], c[1], c[2], c[3], k[0], k[1], out);
        expect(Array.from(out)).toEqual(slowPhilox(c, k));
      }),
      { numRuns: 5000 },
    );
  });

  it('agrees with the BigInt implementation on words with extreme 16-bit halves', () => {
    // These stress the carries of the split 32x32 -> 64 multiply.
    const edges = [
      0, 1, 0xffff, 0x10000, 0xffff0000, 0x8000ffff, 0x7fffffff, 0x80000000, 0xfffffffe, 0xffffffff,
    ];
    for (const a of edges) {
      for (const b of edges) {
        const c = [a, b, b, a];
        const k = [b, a];
        expect(Array.from(philox4x32(c[0], c[1], c[2], c[3], k[0], k[1]))).toEqual(slowPhilox(c, k));
      }
    }
  });
});

describe('philoxKey', () => {
  it('splits a seed into (seed mod 2^32, floor(seed / 2^32))', () => {
    expect(philoxKey(0)).toEqual([0, 0]);
    expect(philoxKey(42)).toEqual([42, 0]);
    expect(philoxKey(0xffffffff)).toEqual([0xffffffff, 0]);
    expect(philoxKey(2 ** 32)).toEqual([0, 1]);
    expect(philoxKey(2 ** 32 + 5)).toEqual([5, 1]);
    expect(philoxKey(Number.MAX_SAFE_INTEGER)).toEqual([0xffffffff, 0x1fffff]);
  });

  it('round-trips every safe integer seed', () => {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: Number.MAX_SAFE_INTEGER }), (seed) => {
        const [lo, hi] = philoxKey(seed);
        return (
          Number.isInteger(lo) &&
          lo >= 0 &&
          lo < 2 ** 32 &&
          hi >= 0 &&
          hi < 2 ** 21 &&
          hi * 2 ** 32 + lo === seed
        );
      }),
    );
  });
});

describe('dropout randomness (SPEC §5)', () => {
  it('is word 0 of Philox with counter (j, i, bh, offset) over 2^32', () => {
    fc.assert(
      fc.property(u32, u32, u32, u32, u32, u32, (k0, k1, j, i, bh, offset) => {
        const u = dropoutUniform(k0, k1, j, i, bh, offset);
        expect(u).toBe(slowPhilox([j, i, bh, offset], [k0, k1])[0] / 2 ** 32);
        expect(u).toBeGreaterThanOrEqual(0);
        expect(u).toBeLessThan(1);
      }),
      { numRuns: 2000 },
    );
  });

  it('pins the counter order with a known answer', () => {
    // Counter (j, i, bh, offset) = the third Random123 vector's counter, so word 0 is 0xd16cfe09.
    expect(dropoutUniform(0xa4093822, 0x299f31d0, 0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344)).toBe(
      0xd16cfe09 / 2 ** 32,
    );
  });

  it('keeps iff u >= p', () => {
    fc.assert(
      fc.property(
        u32,
        u32,
        fc.nat(4096),
        fc.nat(4096),
        fc.nat(64),
        fc.double({ min: 0, max: 1, noNaN: true }),
        (k0, k1, j, i, bh, p) => {
          return dropoutKeep(k0, k1, j, i, bh, 0, p) === dropoutUniform(k0, k1, j, i, bh, 0) >= p;
        },
      ),
      { numRuns: 2000 },
    );
  });

  it('keeps everything at p = 0 and about 1 - p otherwise', () => {
    const [k0, k1] = philoxKey(1234567890123);
    for (const p of [0, 0.1, 0.5, 0.9]) {
      let kept = 0;
      const n = 256;
      for (let i = 0; i < n; i++) {
        for (let j = 0; j < n; j++) if (dropoutKeep(k0, k1, j, i, 3, 7, p)) kept++;
      }
      const frac = kept / (n * n);
      if (p === 0) expect(frac).toBe(1);
      else expect(Math.abs(frac - (1 - p))).toBeLessThan(0.01);
    }
  });

  it('gives different streams for different rows, heads, offsets and seeds', () => {
    const base = dropoutUniform(1, 0, 5, 6, 7, 0);
    expect(dropoutUniform(1, 0, 6, 5, 7, 0)).not.toBe(base);
    expect(dropoutUniform(1, 0, 5, 6, 8, 0)).not.toBe(base);
    expect(dropoutUniform(1, 0, 5, 6, 7, 1)).not.toBe(base);
    expect(dropoutUniform(1, 1, 5, 6, 7, 0)).not.toBe(base);
    expect(dropoutUniform(2, 0, 5, 6, 7, 0)).not.toBe(base);
  });
});
