// FlashAttention-2 forward and backward on 128-bit WebAssembly SIMD (f32x4), in AssemblyScript.
//
// The JS side owns all of memory: it writes a parameter block at PARAMS, the inputs, a work-item
// table and per-thread scratch, then calls fwd_run / bwd_run (one call per thread, all threads share
// one memory). Work items are taken from an atomic counter, so threads balance themselves.
// Nothing here allocates, uses strings or lookup tables: the module has no data segments, which
// matters because every worker instantiates it over the same shared memory.
//
// Built four ways (scripts/build-wasm.mjs): simd or simd+relaxed-simd (fused multiply-add), each
// with threads + shared imported memory or plain imported memory.

// ---------------------------------------------------------------------------------------------
// Parameter block (i32 slots unless noted). Keep in sync with src/layout.ts.

const COUNTER: usize = 512; // i32, the next work item
const PARAMS: usize = 1024;

const P_DTYPE = 0; // 0 float32, 1 float16, 2 bfloat16
const P_BATCH = 1;
const P_SEQQ = 2;
const P_SEQK = 3;
const P_HQ = 4;
const P_HK = 5;
const P_D = 6;
const P_DP = 7; // head dim padded to a multiple of 8
const P_GROUP = 8;
const P_CAUSAL = 9;
const P_WL = 10;
const P_WR = 11;
const P_SCALE = 12; // f32
const P_SOFTCAP = 13; // f32
const P_ALIBI = 14; // ptr to f32[batch*hq] or 0
const P_BIAS = 15; // ptr or 0
const P_BIASDT = 16;
const P_BSB = 17;
const P_BSH = 18;
const P_BSI = 19;
const P_BSJ = 20;
const P_SEQLENSK = 21; // ptr or 0
const P_CUQ = 22; // ptr or 0
const P_CUK = 23; // ptr or 0
const P_BTABLE = 24; // ptr or 0
const P_PAGESIZE = 25;
const P_MAXPAGES = 26;
const P_DROP = 27; // 1 when dropout is on
const P_KEY0 = 28;
const P_KEY1 = 29;
const P_DROPOFF = 30;
const P_KEEPSCALE = 31; // f32
const P_Q = 32;
const P_K = 33;
const P_V = 34;
const P_OUT = 35;
const P_M = 36; // f32 row max (forward) [lseLength]
const P_L = 37; // f32 row sum (forward) [lseLength]
const P_QSS = 38;
const P_QSH = 39;
const P_QSB = 40;
const P_KSS = 41;
const P_KSH = 42;
const P_KSB = 43;
const P_TOTALQ = 44;
const P_ITEMS = 45;
const P_NITEMS = 46;
const P_BR = 47;
const P_BC = 48;
const P_SCRATCH = 49;
const P_SCRATCHBYTES = 50;
const P_DO = 51;
const P_DQWS = 52;
const P_DKWS = 53;
const P_DVWS = 54;
const P_LSE = 55;
const P_DD = 56; // f32 D = rowsum(dO * O) [lseLength]
const P_NCHUNK = 57;
const P_DQCHUNK = 58; // floats per dQ chunk
const P_KPACK = 59; // packed K blocks: [b][hk][kb] of [BC/8][dp][8] floats
const P_VPACK = 60; // packed V blocks: [b][hk][kb] of [dp/8][BC][8] floats
const P_KBOFF = 61; // i32[batch + 1]: prefix sums of each sequence's key-block count (pack layout)
const P_ROWSQ = 59; // rows (head-dim vectors) of q
const P_ROWSK = 60; // rows of k
const P_LSELEN = 61;
const P_PTHRESH_F64 = 40; // f64 slot (byte offset 320): keep iff word0 >= p * 2^32

// ---------------------------------------------------------------------------------------------
// Parameters, copied into globals (per instance, so per thread) at the start of a run.

let dtype: i32 = 0;
let batch: i32 = 0;
let seqQ: i32 = 0;
let seqK: i32 = 0;
let hq: i32 = 0;
let hk: i32 = 0;
let d: i32 = 0;
let dp: i32 = 0;
let group: i32 = 1;
let causal: bool = false;
let wl: i32 = -1;
let wr: i32 = -1;
let scale: f32 = 1;
let softcap: f32 = 0;
let alibiPtr: usize = 0;
let biasPtr: usize = 0;
let biasDt: i32 = 0;
let bsb: i32 = 0;
let bsh: i32 = 0;
let bsi: i32 = 0;
let bsj: i32 = 0;
let seqlensKPtr: usize = 0;
let cuQPtr: usize = 0;
let cuKPtr: usize = 0;
let btPtr: usize = 0;
let pageSize: i32 = 0;
let maxPages: i32 = 0;
let dropOn: bool = false;
let key0: u32 = 0;
let key1: u32 = 0;
let dropOff: u32 = 0;
let keepScale: f32 = 1;
let pThresh: f64 = 0;
let qPtr: usize = 0;
let kPtr: usize = 0;
let vPtr: usize = 0;
let outPtr: usize = 0;
let mPtr: usize = 0;
let lPtr: usize = 0;
let qss: i32 = 0;
let qsh: i32 = 0;
let qsb: i32 = 0;
let kss: i32 = 0;
let ksh: i32 = 0;
let ksb: i32 = 0;
let totalQ: i32 = 0;
let itemsPtr: usize = 0;
let nItems: i32 = 0;
let BR: i32 = 64;
let BC: i32 = 64;
let doPtr: usize = 0;
let dqws: usize = 0;
let dkws: usize = 0;
let dvws: usize = 0;
let lsePtr: usize = 0;
let dDPtr: usize = 0;
let nChunk: i32 = 1;
let dqChunk: i32 = 0;
let kPack: usize = 0;
let vPack: usize = 0;
let kbOffPtr: usize = 0;

@inline function pi(slot: i32): i32 {
  return load<i32>(PARAMS + (<usize>slot << 2));
}
@inline function pf(slot: i32): f32 {
  return load<f32>(PARAMS + (<usize>slot << 2));
}

function loadParams(): void {
  dtype = pi(P_DTYPE);
  batch = pi(P_BATCH);
  seqQ = pi(P_SEQQ);
  seqK = pi(P_SEQK);
  hq = pi(P_HQ);
  hk = pi(P_HK);
  d = pi(P_D);
  dp = pi(P_DP);
  group = pi(P_GROUP);
  causal = pi(P_CAUSAL) != 0;
  wl = pi(P_WL);
  wr = pi(P_WR);
  scale = pf(P_SCALE);
  softcap = pf(P_SOFTCAP);
  alibiPtr = <usize>pi(P_ALIBI);
  biasPtr = <usize>pi(P_BIAS);
  biasDt = pi(P_BIASDT);
  bsb = pi(P_BSB);
  bsh = pi(P_BSH);
  bsi = pi(P_BSI);
  bsj = pi(P_BSJ);
  seqlensKPtr = <usize>pi(P_SEQLENSK);
  cuQPtr = <usize>pi(P_CUQ);
  cuKPtr = <usize>pi(P_CUK);
  btPtr = <usize>pi(P_BTABLE);
  pageSize = pi(P_PAGESIZE);
  maxPages = pi(P_MAXPAGES);
  dropOn = pi(P_DROP) != 0;
  key0 = <u32>pi(P_KEY0);
  key1 = <u32>pi(P_KEY1);
  dropOff = <u32>pi(P_DROPOFF);
  keepScale = pf(P_KEEPSCALE);
  pThresh = load<f64>(PARAMS + (<usize>P_PTHRESH_F64 << 3));
  qPtr = <usize>pi(P_Q);
  kPtr = <usize>pi(P_K);
  vPtr = <usize>pi(P_V);
  outPtr = <usize>pi(P_OUT);
  mPtr = <usize>pi(P_M);
  lPtr = <usize>pi(P_L);
  qss = pi(P_QSS);
  qsh = pi(P_QSH);
  qsb = pi(P_QSB);
  kss = pi(P_KSS);
  ksh = pi(P_KSH);
  ksb = pi(P_KSB);
  totalQ = pi(P_TOTALQ);
  itemsPtr = <usize>pi(P_ITEMS);
  nItems = pi(P_NITEMS);
  BR = pi(P_BR);
  BC = pi(P_BC);
  doPtr = <usize>pi(P_DO);
  dqws = <usize>pi(P_DQWS);
  dkws = <usize>pi(P_DKWS);
  dvws = <usize>pi(P_DVWS);
  lsePtr = <usize>pi(P_LSE);
  dDPtr = <usize>pi(P_DD);
  nChunk = pi(P_NCHUNK);
  dqChunk = pi(P_DQCHUNK);
  kPack = <usize>pi(P_KPACK);
  vPack = <usize>pi(P_VPACK);
  kbOffPtr = <usize>pi(P_KBOFF);
}

@inline function nextItem(): i32 {
  if (ASC_FEATURE_THREADS) {
    return atomic.add<i32>(COUNTER, 1);
  } else {
    const n = load<i32>(COUNTER);
    store<i32>(COUNTER, n + 1);
    return n;
  }
}

// ---------------------------------------------------------------------------------------------
// Indexing (SPEC §3; the same rules as core's problem.ts helpers). Offsets are in elements.

@inline function lenQ(b: i32): i32 {
  if (cuQPtr != 0) return load<i32>(cuQPtr + (<usize>(b + 1) << 2)) - load<i32>(cuQPtr + (<usize>b << 2));
  return seqQ;
}

@inline function lenK(b: i32): i32 {
  if (cuKPtr != 0) return load<i32>(cuKPtr + (<usize>(b + 1) << 2)) - load<i32>(cuKPtr + (<usize>b << 2));
  if (seqlensKPtr != 0) return load<i32>(seqlensKPtr + (<usize>b << 2));
  return seqK;
}

@inline function qOff(b: i32, i: i32, h: i32): u32 {
  const row = cuQPtr != 0 ? load<i32>(cuQPtr + (<usize>b << 2)) + i : i;
  return <u32>b * <u32>qsb + <u32>row * <u32>qss + <u32>h * <u32>qsh;
}

function kvOff(b: i32, j: i32, h: i32): u32 {
  if (btPtr != 0) {
    const page = load<i32>(btPtr + (<usize>(b * maxPages + j / pageSize) << 2));
    return (<u32>page * <u32>pageSize + <u32>(j % pageSize)) * <u32>kss + <u32>h * <u32>ksh;
  }
  const row = cuKPtr != 0 ? load<i32>(cuKPtr + (<usize>b << 2)) + j : j;
  return <u32>b * <u32>ksb + <u32>row * <u32>kss + <u32>h * <u32>ksh;
}

@inline function lseIdx(b: i32, h: i32, i: i32): u32 {
  if (cuQPtr != 0) return <u32>h * <u32>totalQ + <u32>load<i32>(cuQPtr + (<usize>b << 2)) + <u32>i;
  return (<u32>b * <u32>hq + <u32>h) * <u32>seqQ + <u32>i;
}

@inline function alibiSlope(b: i32, h: i32): f32 {
  if (alibiPtr == 0) return 0;
  return load<f32>(alibiPtr + (<usize>(b * hq + h) << 2));
}

// Allowed key range [lo, hi) of query i (SPEC §3), hi >= lo. Returned packed: lo in the low 32 bits.
@inline function keyRange(i: i32, off: i32, sk: i32): u64 {
  const diag = i + off;
  let lo = 0;
  let hi = sk;
  if (causal) hi = min(hi, diag + 1);
  if (wr >= 0) hi = min(hi, diag + wr + 1);
  if (wl >= 0) lo = max(lo, diag - wl);
  if (lo < 0) lo = 0;
  if (hi < lo) hi = lo;
  return (<u64>(<u32>hi) << 32) | <u64>(<u32>lo);
}

// ---------------------------------------------------------------------------------------------
// dtype conversion (round to nearest even, NaN/Inf/subnormals kept; as core/dtype.ts)

@inline function f16ToF32(h: u32): f32 {
  const o = (h & 0x7fff) << 13;
  let bits = reinterpret<u32>(reinterpret<f32>(o) * reinterpret<f32>(0x77800000));
  if ((h & 0x7c00) == 0x7c00) bits = o | 0x7f800000;
  return reinterpret<f32>(bits | ((h & 0x8000) << 16));
}

@inline function bf16ToF32(h: u32): f32 {
  return reinterpret<f32>(h << 16);
}

function f32ToF16(x: f32): u32 {
  const bits = reinterpret<u32>(x);
  const sign = (bits >>> 16) & 0x8000;
  const exp = (bits >>> 23) & 0xff;
  const mant = bits & 0x7fffff;
  if (exp == 0xff) return mant != 0 ? sign | 0x7e00 : sign | 0x7c00;
  const e = <i32>exp - 112;
  if (e >= 0x1f) return sign | 0x7c00;
  if (e <= 0) {
    if (e < -10) return sign;
    const full = mant | 0x800000;
    const shift = <u32>(14 - e);
    let m = full >>> shift;
    const rest = full & ((<u32>1 << shift) - 1);
    const half = <u32>1 << (shift - 1);
    if (rest > half || (rest == half && (m & 1) != 0)) m++;
    return sign | m;
  }
  let h = (<u32>e << 10) | (mant >>> 13);
  const rest = mant & 0x1fff;
  if (rest > 0x1000 || (rest == 0x1000 && (h & 1) != 0)) h++;
  return sign | h;
}

@inline function f32ToBf16(x: f32): u32 {
  const bits = reinterpret<u32>(x);
  if ((bits & 0x7fffffff) > 0x7f800000) return ((bits >>> 16) & 0x8000) | 0x7fc0;
  return ((bits + 0x7fff + ((bits >>> 16) & 1)) >>> 16) & 0xffff;
}

@inline function loadEl(base: usize, idx: u32, dt: i32): f32 {
  if (dt == 0) return load<f32>(base + (<usize>idx << 2));
  const h = <u32>load<u16>(base + (<usize>idx << 1));
  return dt == 1 ? f16ToF32(h) : bf16ToF32(h);
}

@inline function storeEl(base: usize, idx: u32, dt: i32, x: f32): void {
  if (dt == 0) store<f32>(base + (<usize>idx << 2), x);
  else if (dt == 1) store<u16>(base + (<usize>idx << 1), <u16>f32ToF16(x));
  else store<u16>(base + (<usize>idx << 1), <u16>f32ToBf16(x));
}

// A head-dim row of d elements at element offset `off` of `src` into dst[0..dp), times mul, zero-padded.
function loadRow(dst: usize, src: usize, off: u32, mul: f32): void {
  const dt = dtype;
  if (dt == 0) {
    const s = src + (<usize>off << 2);
    let c = 0;
    const m4 = f32x4.splat(mul);
    for (; c + 4 <= d; c += 4) {
      v128.store(dst + (<usize>c << 2), f32x4.mul(v128.load(s + (<usize>c << 2)), m4));
    }
    for (; c < d; c++) store<f32>(dst + (<usize>c << 2), load<f32>(s + (<usize>c << 2)) * mul);
  } else if (dt == 1) {
    const s = src + (<usize>off << 1);
    for (let c = 0; c < d; c++) store<f32>(dst + (<usize>c << 2), f16ToF32(<u32>load<u16>(s + (<usize>c << 1))) * mul);
  } else {
    const s = src + (<usize>off << 1);
    for (let c = 0; c < d; c++) store<f32>(dst + (<usize>c << 2), bf16ToF32(<u32>load<u16>(s + (<usize>c << 1))) * mul);
  }
  for (let c = d; c < dp; c++) store<f32>(dst + (<usize>c << 2), 0);
}

// A head-dim row as column `col` of a [dp][ld] transposed block (rows d..dp are zeroed once elsewhere).
function loadRowT(dst: usize, ld: i32, col: i32, src: usize, off: u32): void {
  const dt = dtype;
  const step = <usize>ld << 2;
  let p = dst + (<usize>col << 2);
  if (dt == 0) {
    const s = src + (<usize>off << 2);
    for (let c = 0; c < d; c++) {
      store<f32>(p, load<f32>(s + (<usize>c << 2)));
      p += step;
    }
  } else {
    const s = src + (<usize>off << 1);
    for (let c = 0; c < d; c++) {
      const h = <u32>load<u16>(s + (<usize>c << 1));
      store<f32>(p, dt == 1 ? f16ToF32(h) : bf16ToF32(h));
      p += step;
    }
  }
}

function zeroF32(p: usize, n: i32): void {
  memory.fill(p, 0, <usize>n << 2);
}

// ---------------------------------------------------------------------------------------------
// Vector math

@inline function madd(a: v128, b: v128, c: v128): v128 {
  if (ASC_FEATURE_RELAXED_SIMD) {
    return f32x4.relaxed_madd(a, b, c);
  } else {
    return f32x4.add(c, f32x4.mul(a, b));
  }
}

// exp on f32x4: Cephes range reduction x = n·ln2 + r, degree-6 polynomial, 2^n through the exponent
// bits. Relative error about 2 ulp; exp(x <= -88) is 0, -Inf gives 0, NaN stays NaN.
@inline function vexp(x: v128): v128 {
  // pmin/pmax with x first keep a NaN x.
  x = f32x4.pmax(f32x4.pmin(x, f32x4.splat(88.0)), f32x4.splat(-88.0));
  // n = round(x·log2e) by the 1.5·2^23 trick: the integer lands in the low mantissa bits of t.
  const magic = f32x4.splat(12582912.0);
  const t = madd(x, f32x4.splat(1.44269504088896341), magic);
  const fx = f32x4.sub(t, magic);
  let r = f32x4.sub(x, f32x4.mul(fx, f32x4.splat(0.693359375)));
  r = f32x4.sub(r, f32x4.mul(fx, f32x4.splat(-2.12194440e-4)));
  let p = f32x4.splat(1.9875691500e-4);
  p = madd(p, r, f32x4.splat(1.3981999507e-3));
  p = madd(p, r, f32x4.splat(8.3334519073e-3));
  p = madd(p, r, f32x4.splat(4.1665795894e-2));
  p = madd(p, r, f32x4.splat(1.6666665459e-1));
  p = madd(p, r, f32x4.splat(5.0000001201e-1));
  const r2 = f32x4.mul(r, r);
  p = madd(p, r2, f32x4.add(r, f32x4.splat(1.0)));
  // 2^n: (bits(t) - bits(magic) + 127) << 23 ; NaN lanes give garbage here but p is NaN.
  const pow2 = i32x4.shl(i32x4.add(t, i32x4.splat(127 - 0x4b400000)), 23);
  return f32x4.mul(p, pow2);
}

// 2^x on f32x4 for x <= 0 (the forward's softmax, whose scores are first multiplied by log2 e): no
// Cody-Waite split is needed, because in base 2 the reduction f = x - round(x) is exact, and no upper
// clamp, because the argument is never positive. That leaves ten constants, few enough that V8 keeps
// them in registers through the softmax loop (vexp's thirteen were rebuilt or reloaded every
// iteration). Degree-6 polynomial fitted for relative error on [-1/2, 1/2]: 1.3 ulp with fused
// multiply-add, 1.6 without. 2^x below -126.5 is 0, -Inf gives 0, NaN stays NaN.
@inline function vexp2(x: v128): v128 {
  // pmax with x first keeps a NaN x.
  x = f32x4.pmax(x, f32x4.splat(-127.0));
  // n = round(x) by the 1.5·2^23 trick: the integer lands in the low mantissa bits of t.
  const magic = f32x4.splat(12582912.0);
  const t = f32x4.add(x, magic);
  const f = f32x4.sub(x, f32x4.sub(t, magic));
  let p = f32x4.splat(1.5353357593994588e-4);
  p = madd(p, f, f32x4.splat(1.3398876180872321e-3));
  p = madd(p, f, f32x4.splat(9.618437848985195e-3));
  p = madd(p, f, f32x4.splat(5.5503323674201965e-2));
  p = madd(p, f, f32x4.splat(2.4022647738456726e-1));
  p = madd(p, f, f32x4.splat(6.931471824645996e-1));
  p = madd(p, f, f32x4.splat(1.0));
  // 2^n: bits(t) = bits(magic) + n, whose low 9 bits shifted to the exponent field are n; + 127 there
  // is + bits(1.0). n = -127 gives exactly 0. NaN lanes give garbage here but p is NaN.
  const pow2 = i32x4.add(i32x4.shl(t, 23), i32x4.splat(0x3f800000));
  return f32x4.mul(p, pow2);
}

@inline function sexp(x: f32): f32 {
  return f32x4.extract_lane(vexp(f32x4.splat(x)), 0);
}

// tanh on f32x4: odd Taylor series below 0.3, 1 - 2/(exp(2|x|) + 1) above; sign restored.
@inline function vtanh(x: v128): v128 {
  const ax = f32x4.abs(x);
  const e = vexp(f32x4.add(ax, ax));
  const big = f32x4.sub(f32x4.splat(1.0), f32x4.div(f32x4.splat(2.0), f32x4.add(e, f32x4.splat(1.0))));
  const x2 = f32x4.mul(ax, ax);
  let p = f32x4.splat(-0.008863235529902197); // -1382/155925
  p = madd(p, x2, f32x4.splat(0.021869488536155203)); // 62/2835
  p = madd(p, x2, f32x4.splat(-0.05396825396825397)); // -17/315
  p = madd(p, x2, f32x4.splat(0.13333333333333333)); // 2/15
  p = madd(p, x2, f32x4.splat(-0.3333333333333333));
  p = madd(p, x2, f32x4.splat(1.0));
  const small = f32x4.mul(p, ax);
  const t = v128.bitselect(small, big, f32x4.lt(ax, f32x4.splat(0.3)));
  // copy the sign of x
  const signMask = i32x4.splat(0x80000000);
  return v128.or(v128.andnot(t, signMask), v128.and(x, signMask));
}

@inline function hmax(v: v128): f32 {
  const a = f32x4.max(v, i32x4.shuffle(v, v, 2, 3, 0, 1));
  const b = f32x4.max(a, i32x4.shuffle(a, a, 1, 0, 3, 2));
  return f32x4.extract_lane(b, 0);
}

@inline function hsum(v: v128): f32 {
  const a = f32x4.add(v, i32x4.shuffle(v, v, 2, 3, 0, 1));
  const b = f32x4.add(a, i32x4.shuffle(a, a, 1, 0, 3, 2));
  return f32x4.extract_lane(b, 0);
}

// ---------------------------------------------------------------------------------------------
// The one matrix product: C[M][N] (=, or += when acc) A·B, with A(m, k) at A + (m·ars + k·aks)·4,
// B(k, n) at B + (k·ldb + n)·4, C(m, n) at C + (m·ldc + n)·4. N % 8 == 0; any M and K.
// A 4×8 register tile: per k, 4 broadcasts of A, 2 vector loads of B, 8 multiply-adds.

function gemm(
  C: usize,
  A: usize,
  B: usize,
  M: i32,
  K: i32,
  N: i32,
  ars: i32,
  aks: i32,
  ldb: i32,
  ldc: i32,
  acc: bool,
): void {
  const ars4 = <usize>ars << 2;
  const ars8 = ars4 << 1;
  const ars12 = ars4 + ars8;
  const aks4 = <usize>aks << 2;
  const ldb4 = <usize>ldb << 2;
  const ldc4 = <usize>ldc << 2;
  const M4 = M & ~3;
  for (let m = M4; m < M; m++) {
    const abase = A + <usize>m * ars4;
    const c0 = C + <usize>m * ldc4;
    for (let n = 0; n < N; n += 8) {
      const no = <usize>n << 2;
      let x0 = f32x4.splat(0);
      let x1 = x0;
      if (acc) {
        x0 = v128.load(c0 + no);
        x1 = v128.load(c0 + no, 16);
      }
      let ap = abase;
      let bp = B + no;
      for (let k = 0; k < K; k++) {
        const a0 = v128.load32_splat(ap);
        x0 = madd(a0, v128.load(bp), x0);
        x1 = madd(a0, v128.load(bp, 16), x1);
        ap += aks4;
        bp += ldb4;
      }
      v128.store(c0 + no, x0);
      v128.store(c0 + no, x1, 16);
    }
  }
  for (let m = 0; m < M4; m += 4) {
    const abase = A + <usize>m * ars4;
    const c0 = C + <usize>m * ldc4;
    const c1 = c0 + ldc4;
    const c2 = c1 + ldc4;
    const c3 = c2 + ldc4;
    for (let n = 0; n < N; n += 8) {
      const no = <usize>n << 2;
      let x00 = f32x4.splat(0);
      let x01 = x00;
      let x10 = x00;
      let x11 = x00;
      let x20 = x00;
      let x21 = x00;
      let x30 = x00;
      let x31 = x00;
      if (acc) {
        x00 = v128.load(c0 + no);
        x01 = v128.load(c0 + no, 16);
        x10 = v128.load(c1 + no);
        x11 = v128.load(c1 + no, 16);
        x20 = v128.load(c2 + no);
        x21 = v128.load(c2 + no, 16);
        x30 = v128.load(c3 + no);
        x31 = v128.load(c3 + no, 16);
      }
      let ap = abase;
      let bp = B + no;
      for (let k = 0; k < K; k++) {
        const b0 = v128.load(bp);
        const b1 = v128.load(bp, 16);
        const a0 = v128.load32_splat(ap);
        const a1 = v128.load32_splat(ap + ars4);
        const a2 = v128.load32_splat(ap + ars8);
        const a3 = v128.load32_splat(ap + ars12);
        x00 = madd(a0, b0, x00);
        x01 = madd(a0, b1, x01);
        x10 = madd(a1, b0, x10);
        x11 = madd(a1, b1, x11);
        x20 = madd(a2, b0, x20);
        x21 = madd(a2, b1, x21);
        x30 = madd(a3, b0, x30);
        x31 = madd(a3, b1, x31);
        ap += aks4;
        bp += ldb4;
      }
      v128.store(c0 + no, x00);
      v128.store(c0 + no, x01, 16);
      v128.store(c1 + no, x10);
      v128.store(c1 + no, x11, 16);
      v128.store(c2 + no, x20);
      v128.store(c2 + no, x21, 16);
      v128.store(c3 + no, x30);
      v128.store(c3 + no, x31, 16);
    }
  }
}

// The forward's product, in "panel" layout: 4 query rows share a vector (one lane each).
//   C[p][n] (=, or += when acc) Σ_k A[p][k] ⊙ B(k, n)
// A: P panels of K vectors (panel p at A + p·aPanel bytes, vector k at +16k);
// B: strips of 4 columns (column n at strip n >> 2, B + (n >> 2)·bStrip + 16k + 4(n & 3));
// C: P panels of N vectors (panel p at C + p·cPanel, vector n at +16n). N % 4 == 0.
// A 2-panel × 4-column register tile: per k, 2 vector loads, 4 broadcasts, 8 multiply-adds, and
// every address is a pointer plus an immediate offset.
function gemmT(C: usize, A: usize, B: usize, P: i32, K: i32, N: i32, aPanel: usize, bStrip: usize, cPanel: usize, acc: bool): void {
  let p = 0;
  for (; p + 2 <= P; p += 2) {
    const a0 = A + <usize>p * aPanel;
    const a1 = a0 + aPanel;
    const c0 = C + <usize>p * cPanel;
    const c1 = c0 + cPanel;
    let bs = B;
    for (let n = 0; n < N; n += 4) {
      const no = <usize>n << 4;
      let x00 = f32x4.splat(0);
      let x01 = x00;
      let x02 = x00;
      let x03 = x00;
      let x10 = x00;
      let x11 = x00;
      let x12 = x00;
      let x13 = x00;
      if (acc) {
        x00 = v128.load(c0 + no);
        x01 = v128.load(c0 + no, 16);
        x02 = v128.load(c0 + no, 32);
        x03 = v128.load(c0 + no, 48);
        x10 = v128.load(c1 + no);
        x11 = v128.load(c1 + no, 16);
        x12 = v128.load(c1 + no, 32);
        x13 = v128.load(c1 + no, 48);
      }
      let ap0 = a0;
      let ap1 = a1;
      let bp = bs;
      // The A pointer is the loop variable: no separate counter to keep in a register.
      const aEnd = a0 + (<usize>K << 4);
      while (ap0 < aEnd) {
        const b0 = v128.load32_splat(bp);
        const b1 = v128.load32_splat(bp, 4);
        const b2 = v128.load32_splat(bp, 8);
        const b3 = v128.load32_splat(bp, 12);
        const u = v128.load(ap0);
        x00 = madd(u, b0, x00);
        x01 = madd(u, b1, x01);
        x02 = madd(u, b2, x02);
        x03 = madd(u, b3, x03);
        const w = v128.load(ap1);
        x10 = madd(w, b0, x10);
        x11 = madd(w, b1, x11);
        x12 = madd(w, b2, x12);
        x13 = madd(w, b3, x13);
        ap0 += 16;
        ap1 += 16;
        bp += 16;
      }
      v128.store(c0 + no, x00);
      v128.store(c0 + no, x01, 16);
      v128.store(c0 + no, x02, 32);
      v128.store(c0 + no, x03, 48);
      v128.store(c1 + no, x10);
      v128.store(c1 + no, x11, 16);
      v128.store(c1 + no, x12, 32);
      v128.store(c1 + no, x13, 48);
      bs += bStrip;
    }
  }
  if (p < P) {
    const a0 = A + <usize>p * aPanel;
    const c0 = C + <usize>p * cPanel;
    let bs = B;
    for (let n = 0; n < N; n += 4) {
      const no = <usize>n << 4;
      let x00 = f32x4.splat(0);
      let x01 = x00;
      let x02 = x00;
      let x03 = x00;
      if (acc) {
        x00 = v128.load(c0 + no);
        x01 = v128.load(c0 + no, 16);
        x02 = v128.load(c0 + no, 32);
        x03 = v128.load(c0 + no, 48);
      }
      let ap0 = a0;
      let bp = bs;
      const aEnd = a0 + (<usize>K << 4);
      while (ap0 < aEnd) {
        const u = v128.load(ap0);
        x00 = madd(u, v128.load32_splat(bp), x00);
        x01 = madd(u, v128.load32_splat(bp, 4), x01);
        x02 = madd(u, v128.load32_splat(bp, 8), x02);
        x03 = madd(u, v128.load32_splat(bp, 12), x03);
        ap0 += 16;
        bp += 16;
      }
      v128.store(c0 + no, x00);
      v128.store(c0 + no, x01, 16);
      v128.store(c0 + no, x02, 32);
      v128.store(c0 + no, x03, 48);
      bs += bStrip;
    }
  }
}

// Packs key block kb of (b, key head kh), float32: K as [BC/4][dp][4] (strips of 4 keys: the B of
// Sᵀ-panels = Q·Kᵀ) and V as [dp/4][BC][4] (strips of 4 dims: the B of O += P·V). The pack areas are
// zeroed by the caller, so keys past the sequence and head-dim padding stay zero.
// The first pack block of (b, key head kh): sequences take only the blocks their keys need.
@inline function packBlockIndex(b: i32, kh: i32): usize {
  const o0 = load<i32>(kbOffPtr + (<usize>b << 2));
  const o1 = load<i32>(kbOffPtr + (<usize>(b + 1) << 2));
  return <usize>o0 * <usize>hk + <usize>kh * <usize>(o1 - o0);
}

function packBlock(b: i32, kh: i32, kb: i32): void {
  const sk = lenK(b);
  const j0 = kb * BC;
  const cols = min(BC, sk - j0);
  const blk = packBlockIndex(b, kh) * <usize>(BC * dp) << 2;
  const blkKb = <usize>kb * <usize>(BC * dp) << 2;
  const kp = kPack + blk + blkKb;
  const vp = vPack + blk + blkKb;
  const dt = dtype;
  const vstrip = <usize>(BC * 4) << 2;
  // Zero what the loop below leaves out: keys past the sequence, head-dim padding.
  if (cols < BC || dp > d) {
    zeroF32(kp, BC * dp);
    zeroF32(vp, BC * dp);
  }
  for (let c = 0; c < cols; c++) {
    const off = kvOff(b, j0 + c, kh);
    const kcol = kp + (<usize>((c >> 2) * dp * 4 + (c & 3)) << 2);
    const vrow = vp + (<usize>(c * 4) << 2);
    if (dt == 0) {
      const src = kPtr + (<usize>off << 2);
      const vsrc = vPtr + (<usize>off << 2);
      for (let t = 0; t < d; t++) {
        store<f32>(kcol + (<usize>t << 4), load<f32>(src + (<usize>t << 2)));
        store<f32>(vrow + <usize>(t >> 2) * vstrip + (<usize>(t & 3) << 2), load<f32>(vsrc + (<usize>t << 2)));
      }
    } else {
      for (let t = 0; t < d; t++) {
        store<f32>(kcol + (<usize>t << 4), loadEl(kPtr, off + <u32>t, dt));
        store<f32>(vrow + <usize>(t >> 2) * vstrip + (<usize>(t & 3) << 2), loadEl(vPtr, off + <u32>t, dt));
      }
    }
  }
}

export function pack_run(worker: i32): void {
  loadParams();
  while (true) {
    const it = nextItem();
    if (it >= nItems) break;
    const p = itemsPtr + (<usize>it * 12);
    packBlock(load<i32>(p), load<i32>(p, 4), load<i32>(p, 8));
  }
}

// ---------------------------------------------------------------------------------------------
// Dropout: Philox4x32-10 word 0 of counter (j, i, bh, offset), key (key0, key1) (SPEC §5).

function philoxWord0(j: u32, i: u32, bh: u32): u32 {
  let x0 = j;
  let x1 = i;
  let x2 = bh;
  let x3 = dropOff;
  let k0 = key0;
  let k1 = key1;
  for (let r = 0; r < 10; r++) {
    if (r > 0) {
      k0 += 0x9e3779b9;
      k1 += 0xbb67ae85;
    }
    const p0 = <u64>x0 * <u64>0xd2511f53;
    const p1 = <u64>x2 * <u64>0xcd9e8d57;
    const y0 = <u32>(p1 >>> 32) ^ x1 ^ k0;
    const y2 = <u32>(p0 >>> 32) ^ x3 ^ k1;
    x0 = y0;
    x1 = <u32>p1;
    x2 = y2;
    x3 = <u32>p0;
  }
  return x0;
}

@inline function keep(j: i32, i: i32, bh: i32): bool {
  return <f64>philoxWord0(<u32>j, <u32>i, <u32>bh) >= pThresh;
}

// ---------------------------------------------------------------------------------------------
// Score modifiers on a row of the S tile: softcap, ALiBi (vector), bias (scalar). `slopeOut`
// receives the softcap derivative 1 - tanh² when non-zero (backward).

function modifyRow(srow: usize, ncols: i32, b: i32, h: i32, i: i32, j0: i32, off: i32, cols: i32, slopeOut: usize): void {
  if (softcap > 0) {
    const cap = f32x4.splat(softcap);
    for (let c = 0; c < ncols; c += 4) {
      const p = srow + (<usize>c << 2);
      const t = vtanh(f32x4.div(v128.load(p), cap));
      v128.store(p, f32x4.mul(cap, t));
      if (slopeOut != 0) v128.store(slopeOut + (<usize>c << 2), f32x4.sub(f32x4.splat(1.0), f32x4.mul(t, t)));
    }
  }
  if (alibiPtr != 0) {
    const slope = alibiSlope(b, h);
    if (slope != 0) {
      const sl = f32x4.splat(slope);
      const diag = i32x4.splat(i + off - j0);
      let cv = i32x4(0, 1, 2, 3);
      const four = i32x4.splat(4);
      for (let c = 0; c < ncols; c += 4) {
        const p = srow + (<usize>c << 2);
        const dist = f32x4.convert_i32x4_s(i32x4.abs(i32x4.sub(diag, cv)));
        v128.store(p, f32x4.sub(v128.load(p), f32x4.mul(sl, dist)));
        cv = i32x4.add(cv, four);
      }
    }
  }
  if (biasPtr != 0) {
    const base = <u32>b * <u32>bsb + <u32>h * <u32>bsh + <u32>i * <u32>bsi;
    const dt = biasDt;
    for (let c = 0; c < cols; c++) {
      const p = srow + (<usize>c << 2);
      store<f32>(p, load<f32>(p) + loadEl(biasPtr, base + <u32>(j0 + c) * <u32>bsj, dt));
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Forward. Work item (b, h, query block of BR rows). Rows sit in panels of 4 (a vector holds one
// column of 4 rows), so the online softmax runs on 4 rows at once with no transposes.
// Scratch (floats): Qp[BR/4][dp][4] Sp[BR/4][BC][4] Op[BR/4][dp][4] m[BR] l[BR] lo[BR] hi[BR];
// K and V come from the packs (pack_run).

export function scratch_floats(br: i32, bc: i32, dpad: i32): i32 {
  const fwd = br * dpad * 2 + br * bc + 4 * br;
  const bwd = br * dpad * 2 + bc * dpad * 4 + dpad * bc * 2 + br * bc * 3 + 4 * br;
  return max(fwd, bwd) + 64;
}

function fwdItem(scratch: usize, b: i32, h: i32, qb: i32): void {
  const sq = lenQ(b);
  const sk = lenK(b);
  const off = sk - sq;
  const i0 = qb * BR;
  const rows = min(BR, sq - i0);
  if (rows <= 0) return;
  const kh = h / group;
  const bh = b * hq + h;
  const panels = (rows + 3) >> 2;
  const qPanel = <usize>dp << 4;
  const sPanel = <usize>BC << 4;

  const Qp = scratch;
  const Sp = Qp + <usize>(BR >> 2) * qPanel;
  const Op = Sp + <usize>(BR >> 2) * sPanel;
  const mArr = Op + <usize>(BR >> 2) * qPanel;
  const lArr = mArr + (<usize>BR << 2);
  const loArr = lArr + (<usize>BR << 2);
  const hiArr = loArr + (<usize>BR << 2);

  // Rows: key ranges, Q (times scale) into panels, state. Padding rows see no key.
  let klo = sk;
  let khi = 0;
  const dt = dtype;
  for (let r = 0; r < panels * 4; r++) {
    let lo = 0;
    let hi = 0;
    const qrow = Qp + <usize>(r >> 2) * qPanel + (<usize>(r & 3) << 2);
    if (r < rows) {
      const i = i0 + r;
      const rg = keyRange(i, off, sk);
      lo = <i32>(<u32>rg);
      hi = <i32>(<u32>(rg >>> 32));
      const qo = qOff(b, i, h);
      for (let t = 0; t < d; t++) store<f32>(qrow + (<usize>t << 4), loadEl(qPtr, qo + <u32>t, dt) * scale);
      for (let t = d; t < dp; t++) store<f32>(qrow + (<usize>t << 4), 0);
    } else {
      for (let t = 0; t < dp; t++) store<f32>(qrow + (<usize>t << 4), 0);
    }
    store<i32>(loArr + (<usize>r << 2), lo);
    store<i32>(hiArr + (<usize>r << 2), hi);
    if (hi > lo) {
      klo = min(klo, lo);
      khi = max(khi, hi);
    }
    store<f32>(mArr + (<usize>r << 2), -Infinity);
    store<f32>(lArr + (<usize>r << 2), 0);
  }
  zeroF32(Op, panels * 4 * dp);

  const blockBytes = <usize>(BC * dp) << 2;
  const packBase = packBlockIndex(b, kh) * blockBytes;
  const kb1 = (khi + BC - 1) / BC;
  const negInf = f32x4.splat(-Infinity);
  const zero = f32x4.splat(0);
  const slope = alibiSlope(b, h);
  const capOn = softcap > 0;
  const capV = f32x4.splat(softcap);
  const log2e = f32x4.splat(1.4426950408889634);
  for (let kb = klo / BC; kb < kb1; kb++) {
    const j0 = kb * BC;
    const cols = min(BC, sk - j0);
    const colsPad = (cols + 3) & ~3;
    const kp = kPack + packBase + <usize>kb * blockBytes;
    const vp = vPack + packBase + <usize>kb * blockBytes;
    gemmT(Sp, Qp, kp, panels, dp, colsPad, qPanel, qPanel, sPanel, false);

    for (let pn = 0; pn < panels; pn++) {
      const sp = Sp + <usize>pn * sPanel;
      const loV = v128.load(loArr + (<usize>pn << 4));
      const hiV = v128.load(hiArr + (<usize>pn << 4));
      // The largest lo of the four rows (lanes 0/2 and 1/3, then the two): every lane counts, since a
      // block that only row 3's left window cuts still needs the mask.
      const loPairs = i32x4.max_s(loV, i32x4.shuffle(loV, loV, 2, 3, 0, 1));
      const loMax = i32x4.extract_lane(i32x4.max_s(loPairs, i32x4.shuffle(loPairs, loPairs, 1, 0, 3, 2)), 0);
      const hiMin = min(
        min(i32x4.extract_lane(hiV, 0), i32x4.extract_lane(hiV, 1)),
        min(i32x4.extract_lane(hiV, 2), i32x4.extract_lane(hiV, 3)),
      );
      const loMin = min(
        min(i32x4.extract_lane(loV, 0), i32x4.extract_lane(loV, 1)),
        min(i32x4.extract_lane(loV, 2), i32x4.extract_lane(loV, 3)),
      );
      const hiMax = max(
        max(i32x4.extract_lane(hiV, 0), i32x4.extract_lane(hiV, 1)),
        max(i32x4.extract_lane(hiV, 2), i32x4.extract_lane(hiV, 3)),
      );
      const mOld = v128.load(mArr + (<usize>pn << 4));
      if (hiMax <= j0 || loMin >= j0 + cols || hiMax <= loMin) {
        // no row of the panel sees a key of this block
        zeroF32(sp, colsPad * 4);
        continue;
      }
      const iBase = i0 + pn * 4;
      // Score modifiers (softcap, ALiBi, bias) and the mask.
      if (capOn) {
        for (let c = 0; c < colsPad; c++) {
          const q = sp + (<usize>c << 4);
          v128.store(q, f32x4.mul(capV, vtanh(f32x4.div(v128.load(q), capV))));
        }
      }
      if (slope != 0) {
        const sl = f32x4.splat(slope);
        let dv = i32x4.sub(i32x4.add(i32x4.splat(iBase + off - j0), i32x4(0, 1, 2, 3)), i32x4.splat(0));
        const one = i32x4.splat(1);
        for (let c = 0; c < colsPad; c++) {
          const q = sp + (<usize>c << 4);
          v128.store(q, f32x4.sub(v128.load(q), f32x4.mul(sl, f32x4.convert_i32x4_s(i32x4.abs(dv)))));
          dv = i32x4.sub(dv, one);
        }
      }
      if (biasPtr != 0) {
        const bdt = biasDt;
        for (let r = 0; r < 4; r++) {
          const i = iBase + r;
          if (i - i0 >= rows) break;
          const base = <u32>b * <u32>bsb + <u32>h * <u32>bsh + <u32>i * <u32>bsi;
          for (let c = 0; c < cols; c++) {
            const q = sp + (<usize>c << 4) + (<usize>r << 2);
            store<f32>(q, load<f32>(q) + loadEl(biasPtr, base + <u32>(j0 + c) * <u32>bsj, bdt));
          }
        }
      }
      const full = loMax <= j0 && hiMin >= j0 + cols;
      if (full) {
        for (let c = cols; c < colsPad; c++) v128.store(sp + (<usize>c << 4), negInf);
      } else {
        let jv = i32x4.splat(j0);
        const one = i32x4.splat(1);
        for (let c = 0; c < colsPad; c++) {
          const q = sp + (<usize>c << 4);
          const ok = v128.and(i32x4.ge_s(jv, loV), i32x4.lt_s(jv, hiV));
          v128.store(q, v128.bitselect(v128.load(q), negInf, ok));
          jv = i32x4.add(jv, one);
        }
      }
      // Online softmax on the 4 rows. The row max: four chains (one would wait out the max latency
      // at every column); pmax is one instruction where max is eight (NaN propagation, which the
      // exponentials below provide anyway: a NaN score makes its row's sum NaN).
      let mx0 = v128.load(sp);
      let mx1 = v128.load(sp, 16);
      let mx2 = v128.load(sp, 32);
      let mx3 = v128.load(sp, 48);
      for (let c = 4; c < colsPad; c += 4) {
        const q = sp + (<usize>c << 4);
        mx0 = f32x4.pmax(v128.load(q), mx0);
        mx1 = f32x4.pmax(v128.load(q, 16), mx1);
        mx2 = f32x4.pmax(v128.load(q, 32), mx2);
        mx3 = f32x4.pmax(v128.load(q, 48), mx3);
      }
      const mNew = f32x4.max(mOld, f32x4.max(f32x4.max(mx0, mx1), f32x4.max(mx2, mx3)));
      // Rows with nothing allowed yet keep m = -Inf; subtract 0 there so exp gives 0, not NaN.
      const mUse = v128.bitselect(zero, mNew, f32x4.eq(mNew, negInf));
      // exp(s - m) = 2^(s·log2e - M) with M = m·log2e rounded once per block: every probability and
      // alpha of a row use the same M, so its rounding cancels in O / l.
      const mL = f32x4.mul(mUse, log2e);
      const nmL = f32x4.neg(mL);
      const alpha = vexp2(f32x4.sub(f32x4.mul(mOld, log2e), mL));
      let sum = zero;
      for (let c = 0; c < colsPad; c++) {
        const q = sp + (<usize>c << 4);
        const e = vexp2(madd(v128.load(q), log2e, nmL));
        v128.store(q, e);
        sum = f32x4.add(sum, e);
      }
      const lp = lArr + (<usize>pn << 4);
      v128.store(lp, madd(v128.load(lp), alpha, sum));
      v128.store(mArr + (<usize>pn << 4), mNew);
      if (!i32x4.all_true(f32x4.eq(alpha, f32x4.splat(1.0)))) {
        const op = Op + <usize>pn * qPanel;
        for (let t = 0; t < dp; t++) {
          const q = op + (<usize>t << 4);
          v128.store(q, f32x4.mul(v128.load(q), alpha));
        }
      }
      if (dropOn) {
        for (let r = 0; r < 4; r++) {
          const i = iBase + r;
          if (i - i0 >= rows) break;
          for (let c = 0; c < cols; c++) {
            const q = sp + (<usize>c << 4) + (<usize>r << 2);
            store<f32>(q, keep(j0 + c, i, bh) ? load<f32>(q) * keepScale : 0);
          }
        }
      }
    }
    gemmT(Op, Sp, vp, panels, cols, dp, sPanel, <usize>(BC * 16), qPanel, true);
  }

  // Finalize: out = O / l; m and l out for the lse.
  for (let r = 0; r < rows; r++) {
    const i = i0 + r;
    const l = load<f32>(lArr + (<usize>r << 2));
    const m = load<f32>(mArr + (<usize>r << 2));
    const li = lseIdx(b, h, i);
    store<f32>(mPtr + (<usize>li << 2), m);
    store<f32>(lPtr + (<usize>li << 2), l);
    const oo = qOff(b, i, h);
    const orow = Op + <usize>(r >> 2) * qPanel + (<usize>(r & 3) << 2);
    const inv: f32 = l == 0 ? 0 : 1.0 / l;
    if (l == 0 && m == m) {
      // no allowed key (or all scores -Inf): out = 0
      for (let c = 0; c < d; c++) storeEl(outPtr, oo + <u32>c, dt, 0);
    } else if (dt == 0) {
      for (let c = 0; c < d; c++) store<f32>(outPtr + (<usize>(oo + <u32>c) << 2), load<f32>(orow + (<usize>c << 4)) * inv);
    } else {
      for (let c = 0; c < d; c++) storeEl(outPtr, oo + <u32>c, dt, load<f32>(orow + (<usize>c << 4)) * inv);
    }
  }
}

export function fwd_run(worker: i32): void {
  loadParams();
  const scratch = <usize>pi(P_SCRATCH) + <usize>worker * <usize>pi(P_SCRATCHBYTES);
  while (true) {
    const it = nextItem();
    if (it >= nItems) break;
    const p = itemsPtr + (<usize>it * 12);
    fwdItem(scratch, load<i32>(p), load<i32>(p, 4), load<i32>(p, 8));
  }
}

// ---------------------------------------------------------------------------------------------
// Backward (FlashAttention-2 order: outer loop over K/V blocks, inner over Q blocks; dK, dV in
// registers of the tile, dQ accumulated per key chunk in a float32 workspace and reduced in a fixed
// order, so the result is deterministic). Work item: (b, key head, key chunk); b = -1 for paged KV
// (pages may be shared between sequences, so one item does every sequence of a key head).
//
// Scratch (floats): Qs[BR][dp] dOs[BR][dp] Ks[BC][dp] dKa[BC][dp] dVa[BC][dp] (spare)[BC][dp]
// KT[dp][BC] VT[dp][BC] S[BR][BC] dP[BR][BC] SL[BR][BC] lse[BR] D[BR] lo[BR] hi[BR]

// D_i = dO_i · O_i for every row (run once, before bwd_run).
export function bwd_prep(): void {
  loadParams();
  const dt = dtype;
  for (let b = 0; b < batch; b++) {
    const sq = lenQ(b);
    for (let h = 0; h < hq; h++) {
      for (let i = 0; i < sq; i++) {
        const o = qOff(b, i, h);
        let s: f32 = 0;
        for (let c = 0; c < d; c++) s += loadEl(doPtr, o + <u32>c, dt) * loadEl(outPtr, o + <u32>c, dt);
        store<f32>(dDPtr + (<usize>lseIdx(b, h, i) << 2), s);
      }
    }
  }
}

function bwdBlock(scratch: usize, b: i32, kh: i32, kb: i32, chunk: i32): void {
  const sq = lenQ(b);
  const sk = lenK(b);
  const off = sk - sq;
  const j0 = kb * BC;
  const cols = min(BC, sk - j0);
  if (cols <= 0) return;
  const colsPad = (cols + 7) & ~7;

  const Qs = scratch;
  const dOs = Qs + (<usize>(BR * dp) << 2);
  const Ks = dOs + (<usize>(BR * dp) << 2);
  const dKa = Ks + (<usize>(BC * dp) << 2);
  const dVa = dKa + (<usize>(BC * dp) << 2);
  const KT = dVa + (<usize>(BC * dp * 2) << 2);
  const VT = KT + (<usize>(dp * BC) << 2);
  const S = VT + (<usize>(dp * BC) << 2);
  const dP = S + (<usize>(BR * BC) << 2);
  const SL = dP + (<usize>(BR * BC) << 2);
  const lseA = SL + (<usize>(BR * BC) << 2);
  const dA = lseA + (<usize>BR << 2);
  const loArr = dA + (<usize>BR << 2);
  const hiArr = loArr + (<usize>BR << 2);

  if (dp > d) {
    zeroF32(KT + (<usize>(d * BC) << 2), (dp - d) * BC);
    zeroF32(VT + (<usize>(d * BC) << 2), (dp - d) * BC);
  }
  for (let c = 0; c < cols; c++) {
    const ko = kvOff(b, j0 + c, kh);
    loadRow(Ks + (<usize>(c * dp) << 2), kPtr, ko, 1.0);
    loadRowT(KT, BC, c, kPtr, ko);
    loadRowT(VT, BC, c, vPtr, ko);
  }
  zeroF32(dKa, BC * dp);
  zeroF32(dVa, BC * dp);

  // Query rows that can see any key of [j0, j0 + cols).
  let iLo = 0;
  let iHi = sq;
  if (causal || wr >= 0) {
    const R = causal ? (wr >= 0 ? min(0, wr) : 0) : wr;
    iLo = max(0, j0 - off - R);
  }
  if (wl >= 0) iHi = min(sq, j0 + cols - 1 - off + wl + 1);

  const dqBase = dqws + (<usize>chunk * <usize>dqChunk << 2);
  const qRowStride = qss / d; // rows between query i and i + 1 in the row-indexed workspace
  for (let h = kh * group; h < kh * group + group; h++) {
    const bh = b * hq + h;
    for (let i0 = iLo; i0 < iHi; i0 += BR) {
      const rows = min(BR, iHi - i0);
      for (let r = 0; r < rows; r++) {
        const i = i0 + r;
        const rg = keyRange(i, off, sk);
        store<i32>(loArr + (<usize>r << 2), <i32>(<u32>rg));
        store<i32>(hiArr + (<usize>r << 2), <i32>(<u32>(rg >>> 32)));
        const o = qOff(b, i, h);
        loadRow(Qs + (<usize>(r * dp) << 2), qPtr, o, scale);
        loadRow(dOs + (<usize>(r * dp) << 2), doPtr, o, 1.0);
        const li = lseIdx(b, h, i);
        store<f32>(lseA + (<usize>r << 2), load<f32>(lsePtr + (<usize>li << 2)));
        store<f32>(dA + (<usize>r << 2), load<f32>(dDPtr + (<usize>li << 2)));
      }
      gemm(S, Qs, KT, rows, dp, colsPad, dp, 1, BC, BC, false);
      gemm(dP, dOs, VT, rows, dp, colsPad, dp, 1, BC, BC, false);

      for (let r = 0; r < rows; r++) {
        const i = i0 + r;
        const srow = S + (<usize>(r * BC) << 2);
        const grow = dP + (<usize>(r * BC) << 2);
        const slrow = SL + (<usize>(r * BC) << 2);
        const lo = load<i32>(loArr + (<usize>r << 2));
        const hi = load<i32>(hiArr + (<usize>r << 2));
        const clo = max(0, lo - j0);
        const chi = min(colsPad, hi - j0);
        const L = load<f32>(lseA + (<usize>r << 2));
        if (chi <= clo || L == -Infinity) {
          zeroF32(srow, colsPad);
          zeroF32(grow, colsPad);
          continue;
        }
        modifyRow(srow, colsPad, b, h, i, j0, off, cols, softcap > 0 ? slrow : 0);
        for (let c = 0; c < clo; c++) store<f32>(srow + (<usize>c << 2), -Infinity);
        for (let c = chi; c < colsPad; c++) store<f32>(srow + (<usize>c << 2), -Infinity);
        const Lv = f32x4.splat(L);
        const Dv = f32x4.splat(load<f32>(dA + (<usize>r << 2)));
        const capOn = softcap > 0;
        for (let c = 0; c < colsPad; c += 4) {
          const co = <usize>c << 2;
          const pv = vexp(f32x4.sub(v128.load(srow + co), Lv));
          v128.store(srow + co, pv);
          if (!dropOn) {
            let g = f32x4.mul(pv, f32x4.sub(v128.load(grow + co), Dv));
            if (capOn) g = f32x4.mul(g, v128.load(slrow + co));
            v128.store(grow + co, g);
          }
        }
        if (dropOn) {
          const Ds = load<f32>(dA + (<usize>r << 2));
          for (let c = 0; c < colsPad; c++) {
            const co = <usize>c << 2;
            const pij = load<f32>(srow + co);
            const w: f32 = c >= clo && c < chi && keep(j0 + c, i, bh) ? keepScale : 0;
            let g = pij * (load<f32>(grow + co) * w - Ds);
            if (capOn) g *= load<f32>(slrow + co);
            store<f32>(srow + co, pij * w);
            store<f32>(grow + co, g);
          }
        }
      }
      // dV += P~ᵀ dO ; dK += Gᵀ (scale·Q) ; dQ += G K (times scale at the end)
      gemm(dVa, S, dOs, cols, rows, dp, 1, BC, dp, dp, true);
      gemm(dKa, dP, Qs, cols, rows, dp, 1, BC, dp, dp, true);
      const dqRow0 = dqBase + (<usize>(qOff(b, i0, h) / <u32>d) * <usize>dp << 2);
      gemm(dqRow0, dP, Ks, rows, cols, dp, BC, 1, dp, qRowStride * dp, true);
    }
  }
  // Add the tile's dK, dV to the row-indexed workspaces.
  for (let c = 0; c < cols; c++) {
    const row = <usize>(kvOff(b, j0 + c, kh) / <u32>d) * <usize>dp;
    const pk = dkws + (row << 2);
    const pv = dvws + (row << 2);
    const sk4 = dKa + (<usize>(c * dp) << 2);
    const sv4 = dVa + (<usize>(c * dp) << 2);
    for (let t = 0; t < dp; t += 4) {
      const to = <usize>t << 2;
      v128.store(pk + to, f32x4.add(v128.load(pk + to), v128.load(sk4 + to)));
      v128.store(pv + to, f32x4.add(v128.load(pv + to), v128.load(sv4 + to)));
    }
  }
}

function bwdItem(scratch: usize, b: i32, kh: i32, chunk: i32): void {
  const nkb = (lenK(b) + BC - 1) / BC;
  const per = (nkb + nChunk - 1) / nChunk;
  const kb1 = min(nkb, (chunk + 1) * per);
  for (let kb = chunk * per; kb < kb1; kb++) bwdBlock(scratch, b, kh, kb, chunk);
}

export function bwd_run(worker: i32): void {
  loadParams();
  const scratch = <usize>pi(P_SCRATCH) + <usize>worker * <usize>pi(P_SCRATCHBYTES);
  while (true) {
    const it = nextItem();
    if (it >= nItems) break;
    const p = itemsPtr + (<usize>it * 12);
    const b = load<i32>(p);
    const kh = load<i32>(p, 4);
    const chunk = load<i32>(p, 8);
    if (b < 0) {
      for (let bb = 0; bb < batch; bb++) bwdItem(scratch, bb, kh, chunk);
    } else {
      bwdItem(scratch, b, kh, chunk);
    }
  }
}

// Workspace rows (float32, dp wide, `chunks` copies `chunkFloats` apart) summed in chunk order, times
// mul, rounded to the dtype into dst (rows of d elements).
export function finish_rows(dst: usize, src: usize, nrows: i32, chunks: i32, chunkFloats: i32, mul: f32): void {
  loadParams();
  const dt = dtype;
  for (let r = 0; r < nrows; r++) {
    const s = src + (<usize>r * <usize>dp << 2);
    const o = <u32>r * <u32>d;
    for (let c = 0; c < d; c++) {
      let x = load<f32>(s + (<usize>c << 2));
      for (let k = 1; k < chunks; k++) x += load<f32>(s + ((<usize>k * <usize>chunkFloats + <usize>c) << 2));
      storeEl(dst, o + <u32>c, dt, x * mul);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// The peak microbenchmark: independent f32x4 multiply-add chains (relaxed FMA in the relaxed build),
// 8 flops per lane-op × 4 lanes. Returns a value so the work cannot be dropped.

export function peak(iters: i32): f32 {
  let a0 = f32x4.splat(0.1);
  let a1 = f32x4.splat(0.2);
  let a2 = f32x4.splat(0.3);
  let a3 = f32x4.splat(0.4);
  let a4 = f32x4.splat(0.5);
  let a5 = f32x4.splat(0.6);
  let a6 = f32x4.splat(0.7);
  let a7 = f32x4.splat(0.8);
  let a8 = f32x4.splat(0.9);
  let a9 = f32x4.splat(1.0);
  let a10 = f32x4.splat(1.1);
  let a11 = f32x4.splat(1.2);
  const m = f32x4.splat(0.999);
  const c = f32x4.splat(0.001);
  for (let i = 0; i < iters; i++) {
    a0 = madd(a0, m, c);
    a1 = madd(a1, m, c);
    a2 = madd(a2, m, c);
    a3 = madd(a3, m, c);
    a4 = madd(a4, m, c);
    a5 = madd(a5, m, c);
    a6 = madd(a6, m, c);
    a7 = madd(a7, m, c);
    a8 = madd(a8, m, c);
    a9 = madd(a9, m, c);
    a10 = madd(a10, m, c);
    a11 = madd(a11, m, c);
  }
  const s = f32x4.add(
    f32x4.add(f32x4.add(a0, a1), f32x4.add(a2, a3)),
    f32x4.add(f32x4.add(f32x4.add(a4, a5), f32x4.add(a6, a7)), f32x4.add(f32x4.add(a8, a9), f32x4.add(a10, a11))),
  );
  return hsum(s);
}

// The same multiply-add count with the products off the accumulator chains: 12 accumulators,
// acc_i += x_i · m with x_i loaded from a 192-byte L1-resident buffer at ptr. Where a multiply and an
// add have more latency than the 12 chains of peak() hide (non-fused builds), this one is faster.
export function peak_loads(ptr: usize, iters: i32): f32 {
  let a0 = f32x4.splat(0);
  let a1 = a0;
  let a2 = a0;
  let a3 = a0;
  let a4 = a0;
  let a5 = a0;
  let a6 = a0;
  let a7 = a0;
  let a8 = a0;
  let a9 = a0;
  let a10 = a0;
  let a11 = a0;
  const m = f32x4.splat(0.999);
  for (let i = 0; i < iters; i++) {
    a0 = madd(v128.load(ptr), m, a0);
    a1 = madd(v128.load(ptr, 16), m, a1);
    a2 = madd(v128.load(ptr, 32), m, a2);
    a3 = madd(v128.load(ptr, 48), m, a3);
    a4 = madd(v128.load(ptr, 64), m, a4);
    a5 = madd(v128.load(ptr, 80), m, a5);
    a6 = madd(v128.load(ptr, 96), m, a6);
    a7 = madd(v128.load(ptr, 112), m, a7);
    a8 = madd(v128.load(ptr, 128), m, a8);
    a9 = madd(v128.load(ptr, 144), m, a9);
    a10 = madd(v128.load(ptr, 160), m, a10);
    a11 = madd(v128.load(ptr, 176), m, a11);
  }
  const s = f32x4.add(
    f32x4.add(f32x4.add(a0, a1), f32x4.add(a2, a3)),
    f32x4.add(f32x4.add(f32x4.add(a4, a5), f32x4.add(a6, a7)), f32x4.add(f32x4.add(a8, a9), f32x4.add(a10, a11))),
  );
  return hsum(s);
}

// The flops of one peak() or peak_loads() iteration: 12 multiply-adds × 4 lanes × 2.
export function peak_flops_per_iter(): i32 {
  return 96;
}

export function is_relaxed(): i32 {
  return ASC_FEATURE_RELAXED_SIMD ? 1 : 0;
}

// The forward's product alone, for tuning: iters × C = A·B (gemmT, P panels), at ptr (A, B, C).
export function gemm_bench(ptr: usize, P: i32, K: i32, N: i32, iters: i32): void {
  const A = ptr;
  const B = A + (<usize>(P * K) << 4);
  const C = B + (<usize>(K * N) << 2);
  for (let i = 0; i < iters; i++) gemmT(C, A, B, P, K, N, <usize>K << 4, <usize>K << 4, <usize>N << 4, false);
}
