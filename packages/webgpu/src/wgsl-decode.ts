/**
 * Decode (few query rows against a long K/V): split-KV. A workgroup per (key split, key head, row block,
 * batch) takes every query row that reads its key head (sq_b × group rows, so GQA shares each K/V load),
 * streams its share of the keys, and writes a normalised partial output and its lse; `combine` merges
 * the partials with core's mergeLse math (lse = ln Σ e^lse_s, out = Σ e^(lse_s − lse) out_s).
 */
import { paramsStruct } from './params.js';
import { COMMON } from './wgsl-common.js';
import { range } from './wgsl-forward.js';

export interface DecodeConfig {
  DP: number;
  /** Query rows per workgroup. */
  RW: number;
  /** Keys per tile. */
  BK: number;
}

export const DECODE_THREADS = 128;

export function decodeStorage(c: DecodeConfig): number {
  return 4 * (c.RW * c.DP + c.BK * (c.DP + 1) + c.BK * c.DP + c.RW * c.BK + 3 * c.RW);
}

export function decodeBindings(): ('uniform' | 'read' | 'rw')[] {
  return ['uniform', 'read', 'read', 'read', 'read', 'read', 'rw', 'rw'];
}

export function decodeShader(c: DecodeConfig): string {
  const { DP, RW, BK } = c;
  const NT = DECODE_THREADS;
  const CW = Math.min(DP, NT); // threads per row of columns
  const NC = DP / CW; // columns per thread
  const RG = NT / CW; // row groups
  const NRT = RW / RG; // rows per thread (at most)
  const ITER = (BK * DP) / NT; // tile elements per thread
  const BATCH = Math.min(8, ITER);
  return /* wgsl */ `
@group(0) @binding(0) var<uniform> U: Params;
@group(0) @binding(1) var<storage, read> Qb: array<f32>;
@group(0) @binding(2) var<storage, read> Kb: array<f32>;
@group(0) @binding(3) var<storage, read> Vb: array<f32>;
@group(0) @binding(4) var<storage, read> mt: array<i32>;
@group(0) @binding(5) var<storage, read> bias_t: array<f32>;
@group(0) @binding(6) var<storage, read_write> OPb: array<f32>;
@group(0) @binding(7) var<storage, read_write> LPb: array<f32>;
${COMMON}
const DP: u32 = ${DP}u;
const RW: u32 = ${RW}u;
const BK: u32 = ${BK}u;
const NT: u32 = ${NT}u;
const CW: u32 = ${CW}u;
const KP: u32 = ${DP + 1}u;
var<workgroup> qs: array<f32, ${RW * DP}>;
var<workgroup> ks: array<f32, ${BK * (DP + 1)}>;
var<workgroup> vs: array<f32, ${BK * DP}>;
var<workgroup> ps: array<f32, ${RW * BK}>;
var<workgroup> alpha_s: array<f32, ${RW}>;
var<workgroup> l_s: array<f32, ${RW}>;
var<workgroup> m_s: array<f32, ${RW}>;

@compute @workgroup_size(${NT})
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let b = U.b0 + wg.z;
  let split = wg.x % U.n_split;
  let kh = U.h0 + wg.x / U.n_split;
  let s = seq_of(b);
  let nrows = u32(max(s.sq, 0)) * U.group;
  let r0 = wg.y * RW;
  if (r0 >= nrows) { return; }
  let nr = min(RW, nrows - r0);
  let i_first = i32(r0 / U.group);
  let i_last = i32((r0 + nr - 1u) / U.group);
  let lo = max(key_lo(s, i_first), i32(split * U.split_len));
  let hi = min(key_hi(s, i_last), i32((split + 1u) * U.split_len));
  // q rows into workgroup memory
  for (var e: u32 = lid; e < RW * DP; e = e + NT) {
    let r = e / DP;
    let c = e % DP;
    var val: f32 = 0.0;
    if (r < nr && c < U.d) {
      let row = r0 + r;
      let i = row / U.group;
      let h = kh * U.group + row % U.group;
      val = Qb[U.q_base + q_at(b, s, i, h) + c];
    }
    qs[e] = val;
  }
  // Row state (m, l) lives in workgroup memory; thread r < nr updates row r.
  if (lid < RW) {
    m_s[lid] = NEG_MAX;
    l_s[lid] = 0.0;
  }
  var acc: array<f32, ${NRT * NC}>;
  for (var x: u32 = 0u; x < ${NRT * NC}u; x = x + 1u) { acc[x] = 0.0; }
  let col = lid % CW;
  let rg = lid / CW;
  var j0: i32 = (lo / i32(BK)) * i32(BK);
  if (hi <= lo) { j0 = hi; }
  loop {
    if (j0 >= hi) { break; }
    workgroupBarrier();
    // K and V tiles: each thread issues a batch of loads before any store (one memory latency per batch)
    for (var g: u32 = 0u; g < ${ITER / BATCH}u; g = g + 1u) {
      ${range(BATCH)
        .map(
          (u) => `let e${u} = lid + (g * ${BATCH}u + ${u}u) * NT;
      let kk${u} = e${u} / DP;
      let c${u} = e${u} % DP;
      let jt${u} = j0 + i32(kk${u});
      var kv${u}: f32 = 0.0;
      var vv${u}: f32 = 0.0;
      if (jt${u} < s.sk && c${u} < U.d) {
        let a = kv_at(b, s, u32(jt${u}), kh) + c${u};
        kv${u} = Kb[U.k_base + a];
        vv${u} = Vb[U.v_base + a];
      }`,
        )
        .join('\n      ')}
      ${range(BATCH)
        .map((u) => `ks[kk${u} * KP + c${u}] = kv${u};\n      vs[kk${u} * DP + c${u}] = vv${u};`)
        .join('\n      ')}
    }
    workgroupBarrier();
    // scores (masked: -Inf)
    for (var e: u32 = lid; e < nr * BK; e = e + NT) {
      let r = e / BK;
      let kk = e % BK;
      let j = j0 + i32(kk);
      let row = r0 + r;
      let i = i32(row / U.group);
      let h = kh * U.group + row % U.group;
      var sv = neg_inf();
      if (allowed(s, i, j) && j >= lo && j < hi) {
        var dt: f32 = 0.0;
        for (var cc: u32 = 0u; cc < U.d; cc = cc + 1u) { dt = fma(qs[r * DP + cc], ks[kk * KP + cc], dt); }
        sv = modify_score(dt, b, h, i, j, s.off, alibi_slope(b, h));
      }
      ps[e] = sv;
    }
    workgroupBarrier();
    if (lid < nr) {
      var tmax: f32 = NEG_MAX;
      for (var kk: u32 = 0u; kk < BK; kk = kk + 1u) { tmax = max(tmax, ps[lid * BK + kk]); }
      let mold = m_s[lid];
      let mnew = max(mold, tmax);
      alpha_s[lid] = exp(mold - mnew);
      m_s[lid] = mnew;
    }
    workgroupBarrier();
    // probabilities in parallel; l (the undropped sum) by the row's thread; then dropout in parallel
    for (var e: u32 = lid; e < nr * BK; e = e + NT) {
      let sv = ps[e];
      ps[e] = select(exp(sv - m_s[e / BK]), 0.0, is_neg_inf(sv));
    }
    workgroupBarrier();
    if (lid < nr) {
      var lsum: f32 = 0.0;
      for (var kk: u32 = 0u; kk < BK; kk = kk + 1u) { lsum = lsum + ps[lid * BK + kk]; }
      l_s[lid] = l_s[lid] * alpha_s[lid] + lsum;
    }
    if (has(F_DROP)) {
      workgroupBarrier();
      for (var e: u32 = lid; e < nr * BK; e = e + NT) {
        let row = r0 + e / BK;
        let w = drop_weight(b, kh * U.group + row % U.group, i32(row / U.group), j0 + i32(e % BK));
        ps[e] = ps[e] * w;
      }
      workgroupBarrier();
    }
    for (var n: u32 = 0u; n < ${NRT}u; n = n + 1u) {
      let r = rg + ${RG}u * n;
      if (r >= nr) { break; }
      let a = alpha_s[r];
      for (var cc: u32 = 0u; cc < ${NC}u; cc = cc + 1u) { acc[n * ${NC}u + cc] = acc[n * ${NC}u + cc] * a; }
    }
    let kmax = u32(min(i32(BK), hi - j0));
    for (var kk: u32 = 0u; kk < kmax; kk = kk + 1u) {
      for (var cc: u32 = 0u; cc < ${NC}u; cc = cc + 1u) {
        let v = vs[kk * DP + col + cc * CW];
        for (var n: u32 = 0u; n < ${NRT}u; n = n + 1u) {
          let r = rg + ${RG}u * n;
          if (r >= nr) { break; }
          let p = ps[r * BK + kk];
          acc[n * ${NC}u + cc] = acc[n * ${NC}u + cc] + select(p * v, 0.0, p == 0.0);
        }
      }
    }
    j0 = j0 + i32(BK);
  }
  workgroupBarrier();
  for (var n: u32 = 0u; n < ${NRT}u; n = n + 1u) {
    let r = rg + ${RG}u * n;
    if (r >= nr) { break; }
    let row = r0 + r;
    let i = row / U.group;
    let h = kh * U.group + row % U.group;
    let pid = lse_at(b, s, i, h) * U.n_split + split;
    let lr = l_s[r];
    let empty = lr == 0.0;
    let inv = select(1.0 / lr, 0.0, empty);
    for (var cc: u32 = 0u; cc < ${NC}u; cc = cc + 1u) {
      let c = col + cc * CW;
      if (c < U.d) { OPb[U.x_base + pid * DP + c] = select(acc[n * ${NC}u + cc] * inv, 0.0, empty); }
    }
    if (col == 0u) { LPb[U.y_base + pid] = select(m_s[r] + log(lr), neg_inf(), empty); }
  }
}
`;
}

export function combineBindings(): ('uniform' | 'read' | 'rw')[] {
  return ['uniform', 'read', 'read', 'read', 'read', 'rw', 'rw'];
}

export function combineShader(DP: number): string {
  return /* wgsl */ `
@group(0) @binding(0) var<uniform> U: Params;
@group(0) @binding(1) var<storage, read> OPb: array<f32>;
@group(0) @binding(2) var<storage, read> LPb: array<f32>;
@group(0) @binding(3) var<storage, read> mt: array<i32>;
@group(0) @binding(4) var<storage, read> bias_t: array<f32>;
@group(0) @binding(5) var<storage, read_write> Ob: array<f32>;
@group(0) @binding(6) var<storage, read_write> Lb: array<f32>;
${COMMON}
const DP: u32 = ${DP}u;
@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let b = U.b0 + wg.z;
  let h = U.h0 + wg.y;
  let s = seq_of(b);
  let i = wg.x;
  if (i32(i) >= s.sq) { return; }
  let row = lse_at(b, s, i, h);
  var mx: f32 = NEG_MAX;
  var anyv = false;
  for (var t: u32 = 0u; t < U.n_split; t = t + 1u) {
    let x = LPb[U.y_base + row * U.n_split + t];
    if (!is_neg_inf(x)) {
      anyv = true;
      mx = max(mx, x);
    }
  }
  var sum: f32 = 0.0;
  for (var t: u32 = 0u; t < U.n_split; t = t + 1u) {
    let x = LPb[U.y_base + row * U.n_split + t];
    if (!is_neg_inf(x)) { sum = sum + exp(x - mx); }
  }
  let oa = U.o_base + q_at(b, s, i, h);
  for (var c: u32 = lid; c < U.d; c = c + 64u) {
    var o: f32 = 0.0;
    if (anyv) {
      for (var t: u32 = 0u; t < U.n_split; t = t + 1u) {
        let x = LPb[U.y_base + row * U.n_split + t];
        if (!is_neg_inf(x)) { o = o + (exp(x - mx) / sum) * OPb[U.x_base + (row * U.n_split + t) * DP + c]; }
      }
    }
    Ob[oa + c] = o;
  }
  if (lid == 0u) { Lb[U.lse_base + row] = select(neg_inf(), mx + log(sum), anyv); }
}
`;
}

/** 16-bit storage (packed two per u32) -> float32, exact (subnormals, ±Inf and NaN kept). */
export function unpackShader(): string {
  return /* wgsl */ `
@group(0) @binding(0) var<uniform> U: Params;
@group(0) @binding(1) var<storage, read> src: array<u32>;
@group(0) @binding(2) var<storage, read_write> dst: array<f32>;
${'' /* U.mode: 0 = float16, 1 = bfloat16; U.n_elem elements */}
${paramsStructOnly()}
fn f16_to_f32(hb: u32) -> f32 {
  let sg = (hb & 0x8000u) << 16u;
  let e = (hb >> 10u) & 0x1fu;
  let mant = hb & 0x3ffu;
  if (e == 0u) {
    let v = f32(mant) * 5.9604644775390625e-8;
    return select(v, -v, sg != 0u);
  }
  if (e == 31u) { return bitcast<f32>(sg | 0x7f800000u | (mant << 13u)); }
  return bitcast<f32>(sg | ((e + 112u) << 23u) | (mant << 13u));
}
@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nw: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let e = (wg.x + wg.y * nw.x) * 256u + lid;
  if (e >= U.n_elem) { return; }
  let word = src[e >> 1u];
  let hb = select(word & 0xffffu, word >> 16u, (e & 1u) == 1u);
  if (U.mode == 0u) {
    dst[e] = f16_to_f32(hb);
  } else {
    dst[e] = bitcast<f32>(hb << 16u);
  }
}
`;
}

/** float32 -> 16-bit storage, round to nearest even, as core's f32ToF16Bits / f32ToBf16Bits. */
export function packShader(): string {
  return /* wgsl */ `
@group(0) @binding(0) var<uniform> U: Params;
@group(0) @binding(1) var<storage, read> src: array<f32>;
@group(0) @binding(2) var<storage, read_write> dst: array<u32>;
${paramsStructOnly()}
fn to_f16(x: f32) -> u32 {
  let bits = bitcast<u32>(x);
  let sg = (bits >> 16u) & 0x8000u;
  let ex = (bits >> 23u) & 0xffu;
  let mant = bits & 0x7fffffu;
  if (ex == 0xffu) { return select(sg | 0x7c00u, sg | 0x7e00u, mant != 0u); }
  let e = i32(ex) - 112;
  if (e >= 31) { return sg | 0x7c00u; }
  if (e <= 0) {
    if (e < -10) { return sg; }
    let full = mant | 0x800000u;
    let shift = u32(14 - e);
    var m = full >> shift;
    let rest = full & ((1u << shift) - 1u);
    let hf = 1u << (shift - 1u);
    if (rest > hf || (rest == hf && (m & 1u) != 0u)) { m = m + 1u; }
    return sg | m;
  }
  var hv = (u32(e) << 10u) | (mant >> 13u);
  let rest = mant & 0x1fffu;
  if (rest > 0x1000u || (rest == 0x1000u && (hv & 1u) != 0u)) { hv = hv + 1u; }
  return sg | hv;
}
fn to_bf16(x: f32) -> u32 {
  let bits = bitcast<u32>(x);
  if ((bits & 0x7fffffffu) > 0x7f800000u) { return ((bits >> 16u) & 0x8000u) | 0x7fc0u; }
  let r = bits + 0x7fffu + ((bits >> 16u) & 1u);
  return (r >> 16u) & 0xffffu;
}
fn conv(x: f32) -> u32 { return select(to_f16(x), to_bf16(x), U.mode == 1u); }
@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nw: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let w = (wg.x + wg.y * nw.x) * 256u + lid;
  let e = w * 2u;
  if (e >= U.n_elem) { return; }
  var v = conv(src[e]);
  if (e + 1u < U.n_elem) { v = v | (conv(src[e + 1u]) << 16u); }
  dst[w] = v;
}
`;
}

function paramsStructOnly(): string {
  return paramsStruct();
}
