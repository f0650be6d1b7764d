/**
 * WGSL shared by every attention kernel: sequence geometry (varlen, KV cache, paged KV), the mask of
 * SPEC §3, the score modifiers (softcap, ALiBi, bias), and Philox4x32-10 for dropout (SPEC §5) with the
 * 32-bit multiply-high built from 16-bit halves, so that the keep mask is bit-identical to core's.
 *
 * Kernels declare `U: Params`, `meta: array<i32>` and `bias_t: array<f32>` themselves.
 * Dawn zeroes a `var` without initialiser only once per invocation, not per loop pass: every `var`
 * below is initialised explicitly.
 */
import { paramsStruct } from './params.js';

export const COMMON = /* wgsl */ `
${paramsStruct()}
const NEG_MAX: f32 = -3.40282346e38;

fn has(f: u32) -> bool { return (U.flags & f) != 0u; }
// Built from a runtime value: a constant -Inf is a shader-creation error in WGSL.
fn neg_inf() -> f32 { return bitcast<f32>(0xff800000u | (U.flags & 0x80000000u)); }
// Integer tests: a compiler may assume floats are finite, but it cannot reason away bit patterns.
fn is_nan(x: f32) -> bool { return (bitcast<u32>(x) & 0x7fffffffu) > 0x7f800000u; }
fn non_finite(x: f32) -> bool { return (bitcast<u32>(x) & 0x7f800000u) == 0x7f800000u; }
fn is_neg_inf(x: f32) -> bool { return bitcast<u32>(x) == 0xff800000u; }

struct Seq { sq: i32, sk: i32, qrow: u32, krow: u32, off: i32 }

fn seq_of(b: u32) -> Seq {
  var s = Seq(i32(U.sq), i32(U.sk), 0u, 0u, 0);
  if (has(F_CU)) {
    let q0 = mt[U.m_cuq + b];
    let k0 = mt[U.m_cuk + b];
    s.sq = mt[U.m_cuq + b + 1u] - q0;
    s.sk = mt[U.m_cuk + b + 1u] - k0;
    s.qrow = u32(q0);
    s.krow = u32(k0);
  } else if (has(F_SEQK)) {
    s.sk = mt[U.m_seqk + b];
  }
  s.off = s.sk - s.sq;
  return s;
}

// Element offsets (without the binding base) of the first element of a head-dim row.
fn q_at(b: u32, s: Seq, i: u32, h: u32) -> u32 { return b * U.q_sb + (s.qrow + i) * U.q_ss + h * U.q_sh; }
fn kv_at(b: u32, s: Seq, j: u32, kh: u32) -> u32 {
  if (has(F_PAGED)) {
    let page = u32(mt[U.m_table + b * U.max_pages + j / U.page_size]);
    return (page * U.page_size + j % U.page_size) * U.k_ss + kh * U.k_sh;
  }
  return b * U.k_sb + (s.krow + j) * U.k_ss + kh * U.k_sh;
}
fn lse_at(b: u32, s: Seq, i: u32, h: u32) -> u32 { return b * U.lse_sb + h * U.lse_sh + s.qrow + i; }

fn allowed(s: Seq, i: i32, j: i32) -> bool {
  if (i >= s.sq || j >= s.sk || j < 0) { return false; }
  let diag = i + s.off;
  if (has(F_CAUSAL) && j > diag) { return false; }
  if (U.wl >= 0 && j < diag - U.wl) { return false; }
  if (U.wr >= 0 && j > diag + U.wr) { return false; }
  return true;
}
// [key_lo(i), key_hi(i)) holds every key query i may see; both are non-decreasing in i.
fn key_lo(s: Seq, i: i32) -> i32 {
  if (U.wl >= 0) { return max(0, i + s.off - U.wl); }
  return 0;
}
fn key_hi(s: Seq, i: i32) -> i32 {
  var hi = s.sk;
  let diag = i + s.off;
  if (has(F_CAUSAL)) { hi = min(hi, diag + 1); }
  if (U.wr >= 0) { hi = min(hi, diag + U.wr + 1); }
  return max(hi, 0);
}
// Queries [row_lo(j), row_hi(j)) may see key j; both non-decreasing in j.
fn row_lo(s: Seq, j: i32) -> i32 {
  var r = -2147483647;
  var lim = false;
  if (has(F_CAUSAL)) { r = 0; lim = true; }
  if (U.wr >= 0) { if (lim) { r = min(r, U.wr); } else { r = U.wr; lim = true; } }
  if (!lim) { return 0; }
  return max(0, j - s.off - r);
}
fn row_hi(s: Seq, j: i32) -> i32 {
  if (U.wl >= 0) { return clamp(j + U.wl - s.off + 1, 0, s.sq); }
  return s.sq;
}

fn alibi_slope(b: u32, h: u32) -> f32 {
  if (!has(F_ALIBI)) { return 0.0; }
  let idx = select(h, b * U.hq + h, U.alibi_pb != 0u);
  return bitcast<f32>(mt[U.m_alibi + idx]);
}

// tanh with a relative error of a few ulp everywhere (the built-in may lose digits near 0), NaN kept.
fn tanh_acc(y: f32) -> f32 {
  let a = abs(y);
  var t: f32 = 0.0;
  if (a < 0.5) {
    let z = y * y;
    var p: f32 = -0.00023912911424355248;
    p = p * z + 0.000590027440945586;
    p = p * z - 0.0014558343870513183;
    p = p * z + 0.003592128036572481;
    p = p * z - 0.008863235529902197;
    p = p * z + 0.021869488536155203;
    p = p * z - 0.05396825396825397;
    p = p * z + 0.13333333333333333;
    p = p * z - 0.3333333333333333;
    t = a + a * z * p;
  } else {
    let e = exp(-2.0 * min(a, 20.0));
    t = (1.0 - e) / (1.0 + e);
  }
  t = select(t, -t, y < 0.0);
  return select(t, y, is_nan(y));
}

// scaled dot product -> score of SPEC §3 (before masking). tc receives tanh for the softcap's derivative.
fn modify_score(raw: f32, b: u32, h: u32, i: i32, j: i32, off: i32, slope: f32) -> f32 {
  var s = raw * U.scale;
  if (has(F_SOFTCAP)) { s = U.softcap * tanh_acc(s / U.softcap); }
  if (has(F_ALIBI)) { s = s - slope * f32(abs(i + off - j)); }
  if (has(F_BIAS)) {
    s = s + bias_t[U.bias_base + b * U.bs0 + h * U.bs1 + u32(i) * U.bs2 + u32(j) * U.bs3];
  }
  return s;
}
// d score / d (scale * q.k): the softcap's 1 - tanh^2 (ALiBi and bias are constants).
fn score_slope(raw: f32) -> f32 {
  if (!has(F_SOFTCAP)) { return 1.0; }
  let t = tanh_acc(raw * U.scale / U.softcap);
  return 1.0 - t * t;
}

fn mulhilo(a: u32, b: u32) -> vec2<u32> {
  let al = a & 0xffffu;
  let ah = a >> 16u;
  let bl = b & 0xffffu;
  let bh = b >> 16u;
  let ll = al * bl;
  let lh = al * bh;
  let hl = ah * bl;
  let mid = (ll >> 16u) + (lh & 0xffffu) + (hl & 0xffffu);
  let hi = ah * bh + (lh >> 16u) + (hl >> 16u) + (mid >> 16u);
  return vec2<u32>(hi, a * b);
}

// Word 0 of Philox4x32-10(counter (c0..c3), key (k0, k1)).
fn philox_w0(c0: u32, c1: u32, c2: u32, c3: u32, k0_in: u32, k1_in: u32) -> u32 {
  var x0: u32 = c0;
  var x1: u32 = c1;
  var x2: u32 = c2;
  var x3: u32 = c3;
  var k0: u32 = k0_in;
  var k1: u32 = k1_in;
  for (var r: u32 = 0u; r < 10u; r = r + 1u) {
    if (r > 0u) {
      k0 = k0 + 0x9e3779b9u;
      k1 = k1 + 0xbb67ae85u;
    }
    let p0 = mulhilo(x0, 0xd2511f53u);
    let p1 = mulhilo(x2, 0xcd9e8d57u);
    let y0 = p1.x ^ x1 ^ k0;
    let y2 = p0.x ^ x3 ^ k1;
    x0 = y0;
    x1 = p1.y;
    x2 = y2;
    x3 = p0.y;
  }
  return x0;
}

// keep / (1 - p) for element (i, j) of row b*hq + h, or 1 without dropout.
fn drop_weight(b: u32, h: u32, i: i32, j: i32) -> f32 {
  if (!has(F_DROP)) { return 1.0; }
  if (has(F_DROPALL)) { return 0.0; }
  let w = philox_w0(u32(j), u32(i), b * U.hq + h, U.drop_off, U.drop_k0, U.drop_k1);
  return select(0.0, U.drop_scale, w >= U.drop_thresh);
}
`;
