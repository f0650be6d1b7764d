/**
 * Philox4x32-10, the counter-based generator of Random123 (Salmon et al., SC'11), which SPEC §5 makes
 * the one source of dropout randomness on every backend. Being a pure function of (counter, key), it
 * lets any backend, in any tile order, decide keep/drop for element (i, j) and get the same answer.
 */

const M0 = 0xd2511f53;
const M1 = 0xcd9e8d57;
const W0 = 0x9e3779b9;
const W1 = 0xbb67ae85;

// The multipliers are constants, so their 16-bit halves are split once here rather than per product.
const M0_LO = M0 & 0xffff;
const M0_HI = M0 >>> 16;
const M1_LO = M1 & 0xffff;
const M1_HI = M1 >>> 16;

/**
 * High 32 bits of the 64-bit product a·m, m given by its 16-bit halves. Every partial product is below
 * 2^32 and every sum below 2^34, so float64 arithmetic is exact: no BigInt on the hot path.
 */
function mulhi(a: number, mLo: number, mHi: number): number {
  const aLo = a & 0xffff;
  const aHi = a >>> 16;
  const ll = aLo * mLo;
  const lh = aLo * mHi;
  const hl = aHi * mLo;
  const mid = (ll >>> 16) + (lh & 0xffff) + (hl & 0xffff);
  return (aHi * mHi + (lh >>> 16) + (hl >>> 16) + (mid >>> 16)) >>> 0;
}

// Results go through a module-level scratch so that the dropout path, which needs only word 0, does
// not allocate a 4-word array per element.
const scratch = new Uint32Array(4);

function rounds10(c0: number, c1: number, c2: number, c3: number, k0: number, k1: number): void {
  let x0 = c0 >>> 0;
  let x1 = c1 >>> 0;
  let x2 = c2 >>> 0;
  let x3 = c3 >>> 0;
  k0 >>>= 0;
  k1 >>>= 0;
  for (let r = 0; r < 10; r++) {
    // Random123 bumps the key before every round but the first.
    if (r > 0) {
      k0 = (k0 + W0) >>> 0;
      k1 = (k1 + W1) >>> 0;
    }
    const hi0 = mulhi(x0, M0_LO, M0_HI);
    const lo0 = Math.imul(x0, M0) >>> 0;
    const hi1 = mulhi(x2, M1_LO, M1_HI);
    const lo1 = Math.imul(x2, M1) >>> 0;
    const y0 = (hi1 ^ x1 ^ k0) >>> 0;
    const y2 = (hi0 ^ x3 ^ k1) >>> 0;
    x0 = y0;
    x1 = lo1;
    x2 = y2;
    x3 = lo0;
  }
  scratch[0] = x0;
  scratch[1] = x1;
  scratch[2] = x2;
  scratch[3] = x3;
}

/**
 * Philox4x32-10 of counter (c0, c1, c2, c3) under key (k0, k1); all arguments are taken mod 2^32.
 * Writes the 4 output words into `out` (allocated when omitted) and returns it.
 */
export function philox4x32(
  c0: number,
  c1: number,
  c2: number,
  c3: number,
  k0: number,
  k1: number,
  out: Uint32Array = new Uint32Array(4),
): Uint32Array {
  rounds10(c0, c1, c2, c3, k0, k1);
  out[0] = scratch[0];
  out[1] = scratch[1];
  out[2] = scratch[2];
  out[3] = scratch[3];
  return out;
}

const TWO_32 = 4294967296;

/** SPEC §5 key of a dropout seed (a non-negative integer below 2^53): [seed mod 2^32, floor(seed / 2^32)]. */
export function philoxKey(seed: number): [number, number] {
  const hi = Math.floor(seed / TWO_32);
  return [seed - hi * TWO_32, hi];
}

/**
 * The uniform in [0, 1) that decides dropout for query i, key j, row bh = b·hq + h: word 0 of
 * Philox4x32-10 with counter (j, i, bh, offset) and key (k0, k1), divided by 2^32 (SPEC §5).
 * Exact in float64, so every backend that compares in float64 or integers agrees.
 */
export function dropoutUniform(
  k0: number,
  k1: number,
  j: number,
  i: number,
  bh: number,
  offset: number,
): number {
  rounds10(j, i, bh, offset, k0, k1);
  return scratch[0] / TWO_32;
}

/** Whether element (i, j) of row bh is kept under dropout probability p: u >= p (SPEC §5). */
export function dropoutKeep(
  k0: number,
  k1: number,
  j: number,
  i: number,
  bh: number,
  offset: number,
  p: number,
): boolean {
  return dropoutUniform(k0, k1, j, i, bh, offset) >= p;
}
