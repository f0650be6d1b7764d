/**
 * Decode (few query rows against a long K/V): split-KV. A workgroup per (key split, key head, block of four
 * query rows, batch) takes four of the query rows that read its key head (sq_b × group rows, so GQA shares
 * each K/V load), streams its share of the keys, and writes a normalised partial output and its lse;
 * `combine` merges the partials with core's mergeLse math (lse = ln Σ e^lse_s, out = Σ e^(lse_s − lse) out_s).
 */
import { paramsStruct } from './params.js';
import { COMMON } from './wgsl-common.js';
import { range } from './wgsl-forward.js';

export interface DecodeConfig {
  DP: number;
  /** Lanes per key: the head dim is split over G lanes, DP/G columns (DP/4G vec4) each. */
  G: number;
  /** Keys a key group loads per loop pass (all its loads issued before the first use). */
  NB: number;
  /** Merge slots in workgroup memory for combining the key groups' partial results. */
  S: number;
  /** Cross-lane dot-product sums by subgroup shuffles (else through workgroup memory). */
  shuffle: boolean;
  /** Loads of the next pass issued before this pass's arithmetic (registers double-buffered). */
  prefetch: boolean;
}

export const DECODE_THREADS = 128;
/** Query rows per workgroup (one vec4 lane per row for m, l and the scores). */
export const DECODE_ROWS = 4;

export function decodeStorage(c: Omit<DecodeConfig, 'shuffle' | 'prefetch'> & { shuffle?: boolean }): number {
  const R = DECODE_ROWS;
  const merge = 4 * c.S * (R * c.DP + 2 * R);
  const red = c.shuffle ? 0 : 16 * DECODE_THREADS * c.NB;
  return merge + red;
}

export function decodeBindings(): ('uniform' | 'read' | 'rw')[] {
  return ['uniform', 'read', 'read', 'read', 'read', 'read', 'rw', 'rw'];
}

const RC = ['x', 'y', 'z', 'w'];

/**
 * Split-KV decode with K and V read once, straight into registers. Four query rows (a GQA group, or
 * sq × group rows in blocks of four) share each key. A key is read by G lanes as vec4 loads, lane p taking
 * column quads p, p + G, ... (so G lanes read whole 128-byte lines), and the G partial dot products are
 * summed by shuffles. Each key group (G lanes) keeps its own online-softmax state (m, l, acc), so the key
 * loop has no barrier and no workgroup-memory round trip; the NKG partial states are merged once at the
 * end. Split t of n takes every n-th block of NKG·NB keys, starting at block t: all workgroups then
 * stream through a narrow window of memory at any one time (contiguous ranges per split ran 4.6× slower
 * at sk = 131072 on an H200, PERF.md). Every loop bound is workgroup-uniform.
 */
export function decodeShader(c: DecodeConfig): string {
  const { DP, G, NB, S, shuffle, prefetch } = c;
  const NT = DECODE_THREADS;
  const NKG = NT / G;
  const DQ = DP / 4;
  const CV = DQ / G;
  const X = range(CV);
  const U4 = range(NB);
  const R4 = range(4);
  const steps: number[] = [];
  for (let x = 1; x < G; x *= 2) steps.push(x);
  const halves: number[] = [];
  for (let h = S / 2; h >= 1; h /= 2) halves.push(h);
  // Loads of one pass into k{pre}{u}_{x} / v{pre}{u}_{x}. The aligned path has no branch: the key index is
  // clamped into [0, hi) (a masked key reads a real row and gets P = 0), so every load issues at once.
  const loads = (pre: string, jb: string) => `{
      ${U4.map((u) => `let jj${u} = ${jb} + ${u * NKG};`).join(' ')}
      if (fast) {
        ${U4.map(
          (u) => `{
          let a = kv_at(b, s, u32(clamp(jj${u}, 0, hi - 1)), kh);
          let ka = (U.k_base + a) >> 2u;
          let va = (U.v_base + a) >> 2u;
          ${X.map((x) => `k${pre}${u}_${x} = Kb[ka + p + ${G * x}u];`).join(' ')}
          ${X.map((x) => `v${pre}${u}_${x} = Vb[va + p + ${G * x}u];`).join(' ')}
        }`,
        ).join('\n        ')}
      } else {
        ${U4.map(
          (
            u,
          ) => `${X.map((x) => `k${pre}${u}_${x} = vec4<f32>(0.0); v${pre}${u}_${x} = vec4<f32>(0.0);`).join(' ')}
        if (jj${u} < hi) {
          let a = kv_at(b, s, u32(jj${u}), kh);
          ${X.map((x) => `k${pre}${u}_${x} = ld_slow_k(U.k_base + a, p + ${G * x}u); v${pre}${u}_${x} = ld_slow_v(U.v_base + a, p + ${G * x}u);`).join('\n          ')}
        }`,
        ).join('\n        ')}
      }
    }`;
  const declLoads = (pre: string) =>
    U4.map((u) =>
      X.map((x) => `var k${pre}${u}_${x} = vec4<f32>(0.0); var v${pre}${u}_${x} = vec4<f32>(0.0);`).join(' '),
    ).join('\n  ');
  const slowFn = (name: string, buf: string) => `fn ${name}(a: u32, cq: u32) -> vec4<f32> {
  let c = cq * 4u;
  var r = vec4<f32>(0.0);
  ${R4.map((t) => `if (c + ${t}u < U.d) { let e = a + c + ${t}u; r.${RC[t]} = ${buf}[e >> 2u][e & 3u]; }`).join('\n  ')}
  return r;
}`;
  const reduce = shuffle
    ? U4.map((u) => steps.map((x) => `d${u} = d${u} + subgroupShuffleXor(d${u}, ${x}u);`).join(' ')).join(
        '\n    ',
      )
    : `${U4.map((u) => `red[lid * NB + ${u}u] = d${u};`).join(' ')}
    workgroupBarrier();
    ${U4.map((u) => `d${u} = vec4<f32>(0.0);`).join(' ')}
    for (var t: u32 = 0u; t < G; t = t + 1u) {
      ${U4.map((u) => `d${u} = d${u} + red[(kg * G + t) * NB + ${u}u];`).join(' ')}
    }
    workgroupBarrier();`;
  const writeSlot = (slot: string) => `{
      ${R4.map((r) => X.map((x) => `mg_acc[(${slot} * 4u + ${r}u) * DQ + p + ${G * x}u] = acc${r}_${x};`).join(' ')).join('\n      ')}
      if (p == 0u) {
        mg_m[${slot}] = m;
        mg_l[${slot}] = l;
      }
    }`;
  const mergeSlot = (slot: string) => `{
      let mo = mg_m[${slot}];
      let mn = max(m, mo);
      let c1 = exp(m - mn);
      let c2 = exp(mo - mn);
      l = l * c1 + mg_l[${slot}] * c2;
      m = mn;
      ${R4.map((r) => X.map((x) => `acc${r}_${x} = acc${r}_${x} * c1.${RC[r]} + mg_acc[(${slot} * 4u + ${r}u) * DQ + p + ${G * x}u] * c2.${RC[r]};`).join(' ')).join('\n      ')}
    }`;
  const cur = prefetch ? 'c' : '';
  return /* wgsl */ `
${shuffle ? 'enable subgroups;' : ''}
@group(0) @binding(0) var<uniform> U: Params;
@group(0) @binding(1) var<storage, read> Qb: array<f32>;
@group(0) @binding(2) var<storage, read> Kb: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> Vb: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read> mt: array<i32>;
@group(0) @binding(5) var<storage, read> bias_t: array<f32>;
@group(0) @binding(6) var<storage, read_write> OPb: array<vec4<f32>>;
@group(0) @binding(7) var<storage, read_write> LPb: array<f32>;
${COMMON}
const DP: u32 = ${DP}u;
const DQ: u32 = ${DQ}u;
const G: u32 = ${G}u;
const NB: u32 = ${NB}u;
const NKG: u32 = ${NKG}u;
var<workgroup> mg_acc: array<vec4<f32>, ${S * 4 * DQ}>;
var<workgroup> mg_m: array<vec4<f32>, ${S}>;
var<workgroup> mg_l: array<vec4<f32>, ${S}>;
${shuffle ? '' : `var<workgroup> red: array<vec4<f32>, ${NT * NB}>;`}
${slowFn('ld_slow_k', 'Kb')}
${slowFn('ld_slow_v', 'Vb')}

@compute @workgroup_size(${NT})
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let b = U.b0 + wg.z;
  let split = wg.x % U.n_split;
  let kh = U.h0 + wg.x / U.n_split;
  let s = seq_of(b);
  let nrows = u32(max(s.sq, 0)) * U.group;
  let r0 = wg.y * 4u;
  if (r0 >= nrows) { return; }
  let nr = min(4u, nrows - r0);
  let klo = key_lo(s, i32(r0 / U.group));
  let khi = key_hi(s, i32((r0 + nr - 1u) / U.group));
  let block = i32(NKG * NB);
  // This split's keys: j = lo + it * step + (key within the block); valid while j < hi.
  let lo = klo + i32(split) * block;
  let hi = khi;
  let step = block * i32(U.n_split);
  let iters = (max(hi - lo, 0) + step - 1) / step;
  let p = lid % G;
  let kg = lid / G;
  // vec4 loads need every row start on a 16-byte boundary; other layouts take four scalar reads.
  let fast = (U.d | U.k_sb | U.k_ss | U.k_sh | U.k_base | U.v_base) % 4u == 0u;
  let plain = (U.flags & (F_SOFTCAP | F_ALIBI | F_BIAS)) == 0u;
  ${R4.map(
    (r) => `let rv${r} = ${r}u < nr;
  let i${r} = i32((r0 + ${r}u) / U.group);
  let h${r} = kh * U.group + (r0 + ${r}u) % U.group;`,
  ).join('\n  ')}
  ${R4.map((r) => X.map((x) => `var q${r}_${x} = vec4<f32>(0.0);`).join(' ')).join('\n  ')}
  ${R4.map(
    (r) => `if (rv${r}) {
    let qa = U.q_base + q_at(b, s, u32(i${r}), h${r});
    ${X.map(
      (x) => `{
      let c = (p + ${G * x}u) * 4u;
      q${r}_${x} = vec4<f32>(${R4.map((t) => `select(0.0, Qb[qa + min(c + ${t}u, U.d - 1u)], c + ${t}u < U.d)`).join(', ')});
    }`,
    ).join('\n    ')}
  }`,
  ).join('\n  ')}
  var m = vec4<f32>(NEG_MAX);
  var l = vec4<f32>(0.0);
  ${R4.map((r) => X.map((x) => `var acc${r}_${x} = vec4<f32>(0.0);`).join(' ')).join('\n  ')}
  ${declLoads(cur)}
  ${prefetch ? `${declLoads('')}\n  ${loads('', 'lo + i32(kg)')}` : ''}
  for (var it: i32 = 0; it < iters; it = it + 1) {
    let jb = lo + it * step + i32(kg);
    ${prefetch ? `${U4.map((u) => X.map((x) => `kc${u}_${x} = k${u}_${x}; vc${u}_${x} = v${u}_${x};`).join(' ')).join('\n    ')}\n    ${loads('', 'jb + step')}` : loads('', 'jb')}
    ${U4.map((u) => `let j${u} = jb + ${u * NKG};\n    let ok${u} = j${u} < hi;`).join('\n    ')}
    // columns past the head dim are zero in q; zero them here too (the aligned loads read the next row)
    if (U.d < DP) {
      ${X.map((x) => `let cv${x} = (p + ${G * x}u) * 4u < U.d;`).join(' ')}
      ${U4.map((u) => X.map((x) => `k${cur}${u}_${x} = select(vec4<f32>(0.0), k${cur}${u}_${x}, cv${x}); v${cur}${u}_${x} = select(vec4<f32>(0.0), v${cur}${u}_${x}, cv${x});`).join('\n      ')).join('\n      ')}
    }
    // partial dot products of this lane's columns, one vec4 lane per query row
    ${U4.map(
      (u) =>
        `var d${u} = vec4<f32>(${R4.map((r) => X.map((x) => `dot(q${r}_${x}, k${cur}${u}_${x})`).join(' + ')).join(', ')});`,
    ).join('\n    ')}
    ${reduce}
    ${U4.map((u) => `var sc${u} = d${u} * U.scale;`).join(' ')}
    if (!plain) {
      // softcap, ALiBi, bias: a runtime-bounded loop keeps this code from being unrolled NB·4 times
      var sx: array<vec4<f32>, ${NB}>;
      ${U4.map((u) => `sx[${u}] = d${u};`).join(' ')}
      for (var e: u32 = 0u; e < ${NB * 4}u + (U.flags >> 31u); e = e + 1u) {
        let u = e / 4u;
        let r = e % 4u;
        let row = r0 + r;
        let h = kh * U.group + row % U.group;
        sx[u][r] = modify_score(sx[u][r], b, h, i32(row / U.group), jb + i32(u * NKG), s.off, alibi_slope(b, h));
      }
      ${U4.map((u) => `sc${u} = sx[${u}];`).join(' ')}
    }
    ${U4.map(
      (u) =>
        `sc${u} = select(vec4<f32>(neg_inf()), sc${u}, vec4<bool>(${R4.map((r) => `ok${u} && rv${r} && allowed(s, i${r}, j${u})`).join(', ')}));`,
    ).join('\n    ')}
    // online softmax per key group; the accumulators are rescaled only when a row's max grows
    let mx = max(m, ${U4.map((u) => `sc${u}`).reduce((a, b) => `max(${a}, ${b})`)});
    if (any(mx > m)) {
      let corr = exp(m - mx);
      l = l * corr;
      ${R4.map((r) => X.map((x) => `acc${r}_${x} = acc${r}_${x} * corr.${RC[r]};`).join(' ')).join('\n      ')}
      m = mx;
    }
    ${U4.map(
      (u) =>
        `var p${u} = select(exp(sc${u} - m), vec4<f32>(0.0), bitcast<vec4<u32>>(sc${u}) == vec4<u32>(0xff800000u));
    l = l + p${u};`,
    ).join('\n    ')}
    if (has(F_DROP)) {
      var wx: array<vec4<f32>, ${NB}>;
      for (var e: u32 = 0u; e < ${NB * 4}u + (U.flags >> 31u); e = e + 1u) {
        let u = e / 4u;
        let r = e % 4u;
        let row = r0 + r;
        wx[u][r] = drop_weight(b, kh * U.group + row % U.group, i32(row / U.group), jb + i32(u * NKG));
      }
      ${U4.map((u) => `p${u} = p${u} * wx[${u}];`).join(' ')}
    }
    // exact zeros of P are skipped, as the reference does (0 * Inf must not give NaN)
    ${U4.map((u) =>
      R4.map(
        (r) =>
          `if (p${u}.${RC[r]} != 0.0) { ${X.map((x) => `acc${r}_${x} = fma(vec4<f32>(p${u}.${RC[r]}), v${cur}${u}_${x}, acc${r}_${x});`).join(' ')} }`,
      ).join('\n    '),
    ).join('\n    ')}
  }
  // merge the key groups' states: groups [S, NKG) hand over to [0, S) in rounds, then a tree in [0, S)
  for (var t: u32 = 1u; t < ${NKG / S}u; t = t + 1u) {
    if (kg >= t * ${S}u && kg < (t + 1u) * ${S}u) ${writeSlot(`(kg - t * ${S}u)`)}
    workgroupBarrier();
    if (kg < ${S}u) ${mergeSlot('kg')}
    workgroupBarrier();
  }
  ${halves
    .map(
      (h) => `if (kg >= ${h}u && kg < ${2 * h}u) ${writeSlot(`(kg - ${h}u)`)}
  workgroupBarrier();
  if (kg < ${h}u) ${mergeSlot('kg')}
  workgroupBarrier();`,
    )
    .join('\n  ')}
  if (kg == 0u) {
    ${R4.map(
      (r) => `if (rv${r}) {
      let pid = lse_at(b, s, u32(i${r}), h${r}) * U.n_split + split;
      let lr = l.${RC[r]};
      let empty = lr == 0.0;
      let inv = select(1.0 / lr, 0.0, empty);
      let ob = (U.x_base + pid * DP) >> 2u;
      ${X.map((x) => `OPb[ob + p + ${G * x}u] = select(acc${r}_${x} * inv, vec4<f32>(0.0), empty);`).join(' ')}
      if (p == 0u) { LPb[U.y_base + pid] = select(m.${RC[r]} + log(lr), neg_inf(), empty); }
    }`,
    ).join('\n    ')}
  }
}
`;
}

export function combineBindings(): ('uniform' | 'read' | 'rw')[] {
  return ['uniform', 'read', 'read', 'read', 'read', 'rw', 'rw'];
}

/**
 * Merges a row's split partials (core's mergeLse math). 64 threads: the max and the sum of e^lse over the
 * splits in parallel, then (split lane, column quad) pairs sum their share of the weighted partials.
 */
export function combineShader(DP: number): string {
  const DQ = DP / 4;
  const SP = Math.max(1, 64 / DQ);
  return /* wgsl */ `
@group(0) @binding(0) var<uniform> U: Params;
@group(0) @binding(1) var<storage, read> OPb: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> LPb: array<f32>;
@group(0) @binding(3) var<storage, read> mt: array<i32>;
@group(0) @binding(4) var<storage, read> bias_t: array<f32>;
@group(0) @binding(5) var<storage, read_write> Ob: array<f32>;
@group(0) @binding(6) var<storage, read_write> Lb: array<f32>;
${COMMON}
const DP: u32 = ${DP}u;
const DQ: u32 = ${DQ}u;
const SP: u32 = ${SP}u;
var<workgroup> red: array<f32, 64>;
var<workgroup> part: array<vec4<f32>, 64>;
@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let b = U.b0 + wg.z;
  let h = U.h0 + wg.y;
  let s = seq_of(b);
  let i = wg.x;
  if (i32(i) >= s.sq) { return; }
  let row = lse_at(b, s, i, h);
  let n = U.n_split;
  let lb = U.y_base + row * n;
  var mx: f32 = NEG_MAX;
  for (var t: u32 = lid; t < n; t = t + 64u) {
    let x = LPb[lb + t];
    if (!is_neg_inf(x)) { mx = max(mx, x); }
  }
  red[lid] = mx;
  workgroupBarrier();
  mx = NEG_MAX;
  for (var t: u32 = 0u; t < 64u; t = t + 1u) { mx = max(mx, red[t]); }
  workgroupBarrier();
  var sm: f32 = 0.0;
  for (var t: u32 = lid; t < n; t = t + 64u) {
    let x = LPb[lb + t];
    if (!is_neg_inf(x)) { sm = sm + exp(x - mx); }
  }
  red[lid] = sm;
  workgroupBarrier();
  sm = 0.0;
  for (var t: u32 = 0u; t < 64u; t = t + 1u) { sm = sm + red[t]; }
  // all partials empty: sm is 0 (a NaN partial makes it NaN, which must come through)
  let anyv = !(sm == 0.0);
  let sp = lid / DQ;
  let cq = lid % DQ;
  var o = vec4<f32>(0.0);
  if (anyv && sp < SP) {
    // the base may be a wrapped negative offset: add before shifting
    let ob = ((U.x_base + row * n * DP) >> 2u) + cq;
    for (var t: u32 = sp; t < n; t = t + SP) {
      let x = LPb[lb + t];
      if (!is_neg_inf(x)) { o = fma(vec4<f32>(exp(x - mx)), OPb[ob + t * DQ], o); }
    }
  }
  part[lid] = o;
  workgroupBarrier();
  if (sp == 0u) {
    var tot = vec4<f32>(0.0);
    for (var k: u32 = 0u; k < SP; k = k + 1u) { tot = tot + part[cq + k * DQ]; }
    tot = select(vec4<f32>(0.0), tot / sm, anyv);
    let oa = U.o_base + q_at(b, s, i, h);
    let c = cq * 4u;
    ${range(4)
      .map((t) => `if (c + ${t}u < U.d) { Ob[oa + c + ${t}u] = tot.${RC[t]}; }`)
      .join('\n    ')}
  }
  if (lid == 0u) { Lb[U.lse_base + row] = select(neg_inf(), mx + log(sm), anyv); }
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
