/**
 * Backward kernels, FlashAttention-2 style and deterministic (no float atomics):
 * - `pre`: D_i = dO_i · O_i per query row;
 * - `dq`: a workgroup per (Q block, query head, batch) walks the K/V blocks it sees and accumulates
 *   dQ = scale · dS·K in registers;
 * - `dkv`: a workgroup per (K block, key head, batch) walks the query heads of its group and the Q blocks
 *   that see it, accumulating dV = P̃ᵀ·dO and dK = scale · dSᵀ·Q in registers (GQA sums in a fixed order).
 * P is recomputed from the forward's lse; dS = P ∘ (dP ∘ w − D) ∘ softcap′ with w the dropout weight.
 */
import { COMMON } from './wgsl-common.js';
import { ALIGNED, chunkProduct, loaderFns, loadRowsQuads, range, type TileConfig } from './wgsl-forward.js';

const R4 = [0, 1, 2, 3];
const C = ['x', 'y', 'z', 'w'];

const BIND_HEAD = (outputs: string[]) => `
@group(0) @binding(0) var<uniform> U: Params;
@group(0) @binding(1) var<storage, read> Qb: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> Kb: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> Vb: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read> mt: array<i32>;
@group(0) @binding(5) var<storage, read> bias_t: array<f32>;
@group(0) @binding(6) var<storage, read> dOb: array<vec4<f32>>;
@group(0) @binding(7) var<storage, read> LDb: array<f32>;
${outputs.map((o, n) => `@group(0) @binding(${8 + n}) var<storage, read_write> ${o}: array<f32>;`).join('\n')}
`;

export function backwardBindings(outputs: number): ('uniform' | 'read' | 'rw')[] {
  const b: ('uniform' | 'read' | 'rw')[] = [
    'uniform',
    'read',
    'read',
    'read',
    'read',
    'read',
    'read',
    'read',
  ];
  for (let i = 0; i < outputs; i++) b.push('rw');
  return b;
}

export function preprocessBindings(): ('uniform' | 'read' | 'rw')[] {
  return ['uniform', 'read', 'read', 'read', 'rw', 'read'];
}

export function backwardStorage(c: TileConfig): number {
  const { T, DP, DC, VC } = c;
  const BR = 4 * T;
  const pad = DC / 4 + 1;
  return 16 * (BR * (T + 1) + Math.max(2 * BR * pad, VC * (DP / 4))) + 4;
}

function consts(c: TileConfig): string {
  const { T, DP, DC, VC } = c;
  return `
const T: u32 = ${T}u;
const NT: u32 = ${T * T}u;
const BR: u32 = ${4 * T}u;
const BC: u32 = ${4 * T}u;
const NQ: u32 = ${DP / (4 * T)}u;
const DQ: u32 = ${DP / 4}u;
const DC: u32 = ${DC}u;
const VC: u32 = ${VC}u;
const PAD: u32 = ${DC / 4 + 1}u;
// P or dS transposed, one row of T quads per key (or query row), padded by one quad: the T threads of a
// row group store to rows tx + T k, which without the pad would all fall in one bank.
const SPR: u32 = ${T + 1}u;
var<workgroup> sp: array<vec4<f32>, ${4 * T * (T + 1)}>;
var<workgroup> sa: array<vec4<f32>, ${Math.max(2 * 4 * T * (DC / 4 + 1), VC * (DP / 4))}>;
var<workgroup> vbad: u32;
`;
}

/**
 * acc{r}_{x} += sum over chunk rows kk of sp[(jc + kk) * SPR + ty][r] * chunk[kk][quad tx + T x], the chunk
 * rows (VC at a time, row index first + jc + kk) read from src at addr(rowi).
 */
function rowProduct(
  acc: string,
  NQ: number,
  first: string,
  limit: string,
  valid: string,
  addr: string,
  src: string,
  c: TileConfig,
): string {
  const X = range(NQ);
  return `
    for (var jc: u32 = 0u; jc < BC; jc = jc + VC) {
      if (${first} + i32(jc) >= ${limit}) { break; }
      seqno = seqno + 1u;
      workgroupBarrier();
      ${loadRowsQuads(c.VC, c.DP / 4, c.T * c.T, `${first} + i32(jc + kk)`, valid, addr, src, true)}
      let bad = workgroupUniformLoad(&vbad) == seqno;
      if (!bad) {
        for (var kk: u32 = 0u; kk < VC; kk = kk + 1u) {
          let pv = sp[(jc + kk) * SPR + ty];
          ${X.map((x) => `let v${x} = sa[kk * DQ + tx + T * ${x}u];`).join(' ')}
          ${R4.map((r) => X.map((x) => `${acc}${r}_${x} = fma(vec4<f32>(pv.${C[r]}), v${x}, ${acc}${r}_${x});`).join(' ')).join('\n          ')}
        }
      } else {
        for (var kk: u32 = 0u; kk < VC; kk = kk + 1u) {
          let pv = sp[(jc + kk) * SPR + ty];
          ${X.map((x) => `let v${x} = sa[kk * DQ + tx + T * ${x}u];`).join(' ')}
          ${R4.map((r) => X.map((x) => `${acc}${r}_${x} = ${acc}${r}_${x} + select(pv.${C[r]} * v${x}, vec4<f32>(0.0), pv.${C[r]} == 0.0);`).join(' ')).join('\n          ')}
        }
      }
    }`;
}

/** sp[(tx + T k) * SPR + ty] = vec4 over r of v{r}[k]: the transposed 4×4 micro-tile, one store per k. */
function storeT4(v: string): string {
  return R4.map(
    (k) => `sp[(tx + T * ${k}u) * SPR + ty] = vec4<f32>(${R4.map((r) => `${v}${r}.${C[k]}`).join(', ')});`,
  ).join('\n      ');
}

const PICK = `
fn pick4(a: vec4<f32>, b: vec4<f32>, c: vec4<f32>, d: vec4<f32>, r: u32) -> vec4<f32> {
  return select(select(a, b, r == 1u), select(c, d, r == 3u), r >= 2u);
}`;

function storeRows(
  acc: string,
  NQ: number,
  rowExpr: (r: number) => string,
  valid: (r: number) => string,
  addr: string,
  out: string,
  scale: string,
  accumulate: boolean,
): string {
  return R4.map(
    (r) => `{
    let rr = ${rowExpr(r)};
    if (${valid(r)}) {
      let oa = ${addr};
      ${range(NQ)
        .map(
          (x) => `{
        let o = ${acc}${r}_${x}${scale};
        let cc = (tx + T * ${x}u) * 4u;
        ${R4.map((t) => `if (cc + ${t}u < U.d) { ${out}[oa + cc + ${t}u] = ${accumulate ? `select(0.0, ${out}[oa + cc + ${t}u], U.accum != 0u) + ` : ''}o.${C[t]}; }`).join('\n        ')}
      }`,
        )
        .join('\n      ')}
    }
  }`,
  ).join('\n  ');
}

export function backwardDqShader(c: TileConfig): string {
  const NQ = c.DP / (4 * c.T);
  const X = range(NQ);
  return /* wgsl */ `
${BIND_HEAD(['dQb'])}
${COMMON}
${loaderFns(['Qb', 'Kb', 'Vb', 'dOb'], true)}
${PICK}
${consts(c)}
@compute @workgroup_size(${c.T * c.T})
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let tx = lid % T;
  let ty = lid / T;
  let b = U.b0 + wg.z;
  let h = U.h0 + wg.y;
  let kh = h / U.group;
  let s = seq_of(b);
  // dO shares the layout of Q (its base is x_base)
  let aligned = ${ALIGNED} && U.x_base % 4u == 0u;
  let i0 = i32(wg.x * BR);
  if (i0 >= s.sq) { return; }
  let slope = alibi_slope(b, h);
  let lo = key_lo(s, i0);
  let hi = key_hi(s, min(i0 + i32(BR), s.sq) - 1);
  let n16 = 16u + (U.flags >> 31u);
  let fast = (U.flags & (F_SOFTCAP | F_ALIBI | F_BIAS | F_DROP)) == 0u;
  var lse = vec4<f32>(0.0);
  var dd = vec4<f32>(0.0);
  var empty = vec4<u32>(1u);
  for (var r: u32 = 0u; r < 4u; r = r + 1u) {
    let i = i0 + i32(ty + T * r);
    if (i < s.sq) {
      let li = lse_at(b, s, u32(i), h);
      lse[r] = LDb[U.lse_base + li];
      dd[r] = LDb[U.w_base + li];
      empty[r] = select(0u, 1u, is_neg_inf(lse[r]));
    }
  }
  ${R4.flatMap((r) => X.map((x) => `var acc${r}_${x} = vec4<f32>(0.0);`)).join(' ')}
  var seqno: u32 = 0u;
  var j0: i32 = (lo / i32(BC)) * i32(BC);
  loop {
    if (j0 >= hi) { break; }
    ${chunkProduct('sc', 'i0 + i32(row) < s.sq', 'U.q_base + q_at(b, s, u32(i0) + row, h)', 'Qb', 'j0 + i32(row) < s.sk', 'U.k_base + kv_at(b, s, u32(j0) + row, kh)', 'Kb', 'ty', 'tx', c.DC, c.T, true)}
    ${chunkProduct('dp', 'i0 + i32(row) < s.sq', 'U.x_base + q_at(b, s, u32(i0) + row, h)', 'dOb', 'j0 + i32(row) < s.sk', 'U.v_base + kv_at(b, s, u32(j0) + row, kh)', 'Vb', 'ty', 'tx', c.DC, c.T, true)}
    workgroupBarrier();
    if (fast) {
      // No modifier and no dropout: dS = P (dP - D) with the mask as bounds compares, in registers.
      let jv = vec4<i32>(${R4.map((k) => `j0 + i32(tx + T * ${k}u)`).join(', ')});
      ${R4.map(
        (r) => `let i_${r} = i0 + i32(ty + T * ${r}u);
      let klo${r} = select(0, key_lo(s, i_${r}), i_${r} < s.sq);
      let khi${r} = select(0, key_hi(s, i_${r}), i_${r} < s.sq && empty[${r}] == 0u);
      let p${r} = exp(sc${r} * U.scale - vec4<f32>(lse[${r}]));
      let ds${r} = select(vec4<f32>(0.0), p${r} * (dp${r} - vec4<f32>(dd[${r}])), (jv >= vec4<i32>(klo${r})) & (jv < vec4<i32>(khi${r})));`,
      ).join('\n      ')}
      ${storeT4('ds')}
    } else {
    for (var e: u32 = 0u; e < n16; e = e + 1u) {
      let k = e / 4u;
      let r = e % 4u;
      let i = i0 + i32(ty + T * r);
      let j = j0 + i32(tx + T * k);
      var ds: f32 = 0.0;
      if (allowed(s, i, j) && empty[r] == 0u) {
        let raw = pick4(sc0, sc1, sc2, sc3, r)[k];
        let sv = modify_score(raw, b, h, i, j, s.off, slope);
        let p = exp(sv - lse[r]);
        let w = drop_weight(b, h, i, j);
        ds = p * (pick4(dp0, dp1, dp2, dp3, r)[k] * w - dd[r]) * score_slope(raw);
      }
      sp[(tx + T * k) * SPR + ty][r] = ds;
    }
    }
    ${rowProduct('acc', NQ, 'j0', 'hi', 'rowi < s.sk', 'U.k_base + kv_at(b, s, u32(rowi), kh)', 'Kb', c)}
    j0 = j0 + i32(BC);
  }
  ${storeRows(
    'acc',
    NQ,
    (r) => `i0 + i32(ty + T * ${r}u)`,
    () => 'rr < s.sq',
    'U.o_base + q_at(b, s, u32(rr), h)',
    'dQb',
    ' * U.scale',
    false,
  )}
}
`;
}

export function backwardDkvShader(c: TileConfig): string {
  const NQ = c.DP / (4 * c.T);
  const X = range(NQ);
  // No modifier and no dropout: P, or dS = P (dP - D), with the mask as bounds compares in registers;
  // rows here are keys (ty + T r), columns query rows (tx + T k), so the bounds are per column.
  const fastElementwise = (what: 'p' | 'ds') => `
      ${R4.map(
        (r) => `let jr${r} = vec4<i32>(j0 + i32(ty + T * ${r}u));
      let p${r} = exp(st${r} * U.scale - lse);
      let ok${r} = (jr${r} >= qlo) & (jr${r} < qhi);
      let e${r} = select(vec4<f32>(0.0), ${what === 'p' ? `p${r}` : `p${r} * (dpt${r} - dd)`}, ok${r});`,
      ).join('\n      ')}
      ${storeT4('e')}`;
  const elementwise = (what: 'p' | 'ds') => `
      if (fast) {
      ${fastElementwise(what)}
      } else {
      for (var e: u32 = 0u; e < n16; e = e + 1u) {
        let k = e / 4u;
        let r = e % 4u;
        let j = j0 + i32(ty + T * r);
        let i = i0 + i32(tx + T * k);
        var val: f32 = 0.0;
        if (allowed(s, i, j) && empty[k] == 0u) {
          let raw = pick4(st0, st1, st2, st3, r)[k];
          let sv = modify_score(raw, b, h, i, j, s.off, slope);
          let p = exp(sv - lse[k]);
          let w = drop_weight(b, h, i, j);
          ${what === 'p' ? 'val = p * w;' : 'val = p * (pick4(dpt0, dpt1, dpt2, dpt3, r)[k] * w - dd[k]) * score_slope(raw);'}
        }
        sp[(tx + T * k) * SPR + ty][r] = val;
      }
      }`;
  return /* wgsl */ `
${BIND_HEAD(['dKb', 'dVb'])}
${COMMON}
${loaderFns(['Qb', 'Kb', 'Vb', 'dOb'], true)}
${PICK}
${consts(c)}
@compute @workgroup_size(${c.T * c.T})
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let tx = lid % T;
  let ty = lid / T;
  let b = U.b0 + wg.z;
  let kh = U.h0 + wg.y;
  let s = seq_of(b);
  // dO shares the layout of Q (its base is x_base)
  let aligned = ${ALIGNED} && U.x_base % 4u == 0u;
  let j0 = i32(wg.x * BC);
  if (j0 >= s.sk) { return; }
  let ilo = row_lo(s, j0);
  let ihi = row_hi(s, min(j0 + i32(BC), s.sk) - 1);
  let n16 = 16u + (U.flags >> 31u);
  let fast = (U.flags & (F_SOFTCAP | F_ALIBI | F_BIAS | F_DROP)) == 0u;
  ${R4.flatMap((r) => X.map((x) => `var dk${r}_${x} = vec4<f32>(0.0); var dv${r}_${x} = vec4<f32>(0.0);`)).join(' ')}
  var seqno: u32 = 0u;
  for (var g: u32 = 0u; g < U.group; g = g + 1u) {
    let h = kh * U.group + g;
    let slope = alibi_slope(b, h);
    var i0: i32 = (ilo / i32(BR)) * i32(BR);
    loop {
      if (i0 >= ihi) { break; }
      // S^T and dP^T: rows are this block's keys (ty + T r), columns the Q block's rows (tx + T k).
      ${chunkProduct('st', 'j0 + i32(row) < s.sk', 'U.k_base + kv_at(b, s, u32(j0) + row, kh)', 'Kb', 'i0 + i32(row) < s.sq', 'U.q_base + q_at(b, s, u32(i0) + row, h)', 'Qb', 'ty', 'tx', c.DC, c.T, true)}
      ${chunkProduct('dpt', 'j0 + i32(row) < s.sk', 'U.v_base + kv_at(b, s, u32(j0) + row, kh)', 'Vb', 'i0 + i32(row) < s.sq', 'U.x_base + q_at(b, s, u32(i0) + row, h)', 'dOb', 'ty', 'tx', c.DC, c.T, true)}
      var lse = vec4<f32>(0.0);
      var dd = vec4<f32>(0.0);
      var empty = vec4<u32>(1u);
      for (var k: u32 = 0u; k < 4u; k = k + 1u) {
        let i = i0 + i32(tx + T * k);
        if (i < s.sq) {
          let li = lse_at(b, s, u32(i), h);
          lse[k] = LDb[U.lse_base + li];
          dd[k] = LDb[U.w_base + li];
          empty[k] = select(0u, 1u, is_neg_inf(lse[k]));
        }
      }
      // Per query row (column k): its key range, empty for rows past sq or without any key.
      let iv = vec4<i32>(${R4.map((k) => `i0 + i32(tx + T * ${k}u)`).join(', ')});
      let live = (iv < vec4<i32>(s.sq)) & (empty == vec4<u32>(0u));
      let qlo = select(vec4<i32>(0), vec4<i32>(${R4.map((k) => `key_lo(s, iv.${'xyzw'[k]})`).join(', ')}), live);
      let qhi = select(vec4<i32>(0), vec4<i32>(${R4.map((k) => `key_hi(s, iv.${'xyzw'[k]})`).join(', ')}), live);
      workgroupBarrier();
      ${elementwise('p')}
      ${rowProduct('dv', NQ, 'i0', 'ihi', 'rowi < s.sq', 'U.x_base + q_at(b, s, u32(rowi), h)', 'dOb', c)}
      workgroupBarrier();
      ${elementwise('ds')}
      ${rowProduct('dk', NQ, 'i0', 'ihi', 'rowi < s.sq', 'U.q_base + q_at(b, s, u32(rowi), h)', 'Qb', c)}
      i0 = i0 + i32(BR);
    }
  }
  ${storeRows(
    'dk',
    NQ,
    (r) => `j0 + i32(ty + T * ${r}u)`,
    () => 'rr < s.sk',
    'U.o_base + kv_at(b, s, u32(rr), kh)',
    'dKb',
    ' * U.scale',
    true,
  )}
  ${storeRows(
    'dv',
    NQ,
    (r) => `j0 + i32(ty + T * ${r}u)`,
    () => 'rr < s.sk',
    'U.y_base + kv_at(b, s, u32(rr), kh)',
    'dVb',
    '',
    true,
  )}
}
`;
}
export function preprocessShader(): string {
  return /* wgsl */ `
@group(0) @binding(0) var<uniform> U: Params;
@group(0) @binding(1) var<storage, read> dOb: array<f32>;
@group(0) @binding(2) var<storage, read> Ob: array<f32>;
@group(0) @binding(3) var<storage, read> mt: array<i32>;
@group(0) @binding(4) var<storage, read_write> LDb: array<f32>;
@group(0) @binding(5) var<storage, read> bias_t: array<f32>;
${COMMON}
@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let b = U.b0 + wg.z;
  let h = U.h0 + wg.y;
  let s = seq_of(b);
  let i = wg.x * 64u + lid;
  if (i32(i) >= s.sq) { return; }
  let qa = q_at(b, s, i, h);
  var acc: f32 = 0.0;
  for (var c: u32 = 0u; c < U.d; c = c + 1u) { acc = acc + dOb[U.x_base + qa + c] * Ob[U.y_base + qa + c]; }
  LDb[U.w_base + lse_at(b, s, i, h)] = acc;
}
`;
}
