/**
 * Forward kernel: one workgroup per (Q block of BR = 4T rows, query head, batch). T×T threads; thread
 * (ty, tx) owns rows ty + T·r and, in S = Q·Kᵀ, keys tx + T·k (r, k < 4), and in O the column quads
 * tx + T·n. K/V tiles of BC = 4T keys are staged through workgroup memory in head-dim chunks (S) and key
 * chunks (P·V); the running max m and sum l stay in registers (online softmax, FlashAttention-2's
 * deferred division). The row max is reduced across the T threads of a row with subgroup shuffles where
 * the adapter has `subgroups` with subgroups of at least T lanes, else through workgroup memory.
 */
import { COMMON } from './wgsl-common.js';

export interface TileConfig {
  /** Threads per side; tiles are 4T × 4T. */
  T: number;
  /** Head-dim bucket (64, 128 or 256): registers and workgroup arrays are sized by it. */
  DP: number;
  /** Head-dim chunk of the S phase (multiple of 4). */
  DC: number;
  /** Key chunk of the P·V phase. */
  VC: number;
  subgroups: boolean;
}

export function forwardBindings(): ('uniform' | 'read' | 'rw')[] {
  return ['uniform', 'read', 'read', 'read', 'read', 'read', 'rw', 'rw'];
}

/** Workgroup bytes of the forward kernel for a config. */
export function forwardStorage(c: TileConfig): number {
  const { T, DP, DC, VC } = c;
  const BR = 4 * T;
  const pad = DC / 4 + 1;
  return 16 * (BR * T + Math.max(2 * BR * pad, VC * (DP / 4))) + 4;
}

const C = ['x', 'y', 'z', 'w'];
const R4 = [0, 1, 2, 3];
export const range = (n: number): number[] => Array.from({ length: n }, (_, i) => i);

/**
 * Loader helpers: columns c..c+3 of the head-dim row at a of buffer `src` where ok, 0 past the head dim
 * or where not ok. Branch-free: the load is issued whatever ok is (an index past the binding reads some
 * element of it under WebGPU's robust access) and a select zeroes it, so that the compiler can keep all
 * of a thread's loads in flight at once; loads under branches were seen to serialise (PERF.md, run 4).
 * For vec4 bindings (`vec4`), ldv_ reads the quad in one 16-byte load (rows and bases on 16-byte
 * boundaries), ldq_ reads it element by element for any other layout.
 */
export function loaderFns(srcs: string[], vec4 = false): string {
  const el = (b: string, off: string) =>
    vec4 ? `${b}[(a + c${off}) >> 2u][(a + c${off}) & 3u]` : `${b}[a + c${off}]`;
  return srcs
    .map((b) => {
      const q = `fn ldq_${b}(a: u32, c: u32, ok: bool) -> vec4<f32> {
  return vec4<f32>(${['', ' + 1u', ' + 2u', ' + 3u'].map((o) => `select(0.0, ${el(b, o)}, ok && c${o} < U.d)`).join(',\n    ')});
}`;
      const v = `fn ldv_${b}(a: u32, c: u32, ok: bool) -> vec4<f32> {
  return select(vec4<f32>(0.0), ${b}[(a + c) >> 2u], ok && c < U.d);
}`;
      return vec4 ? `${q}\n${v}` : q;
    })
    .join('\n');
}

/** WGSL bool: every row start of Q, K and V on a 16-byte boundary (vec4 loads possible). */
export const ALIGNED =
  '(U.d | U.q_sb | U.q_ss | U.q_sh | U.q_base | U.k_sb | U.k_ss | U.k_sh | U.k_base | U.v_base) % 4u == 0u';

/** Emits code(ld) for the vec4 loader under `aligned` and the element loader otherwise (vec4 bindings). */
function both(vec4: boolean, code: (ld: string) => string): string {
  if (!vec4) return code('ldq_');
  return `if (aligned) {
      ${code('ldv_')}
      } else {
      ${code('ldq_')}
      }`;
}

/**
 * Loads rows [0, rows) of two operands (A at sa[0..], B at sa[rows * PAD..]) for the head-dim chunk at
 * c0, as vec4 over 4 consecutive columns with row stride PAD = DC/4 + 1 (padding keeps strided row reads
 * free of bank conflicts). Unrolled by the generator with every load issued before any store, so a
 * thread waits for memory once per chunk rather than once per element group.
 */
export function loadPair(
  rows: number,
  DC: number,
  NT: number,
  a: { valid: string; addr: string; src: string },
  b: { valid: string; addr: string; src: string },
  vec4 = false,
): string {
  const per = rows * (DC / 4);
  const iters = Math.ceil(per / NT);
  const guard = per % NT !== 0;
  const ld = (o: { valid: string; addr: string; src: string }, it: number, name: string, fn: string) => {
    const valid = o.valid.replaceAll('row', `row${it}`);
    const addr = o.addr.replaceAll('row', `row${it}`);
    return `${name}${it} = ${fn}${o.src}(${addr}, c0 + cq${it} * 4u, ${guard ? `e${it} < ${per}u && ` : ''}${valid});`;
  };
  const its = range(iters);
  return `{
      ${its.map((it) => `let e${it} = lid + ${it * NT}u; let row${it} = e${it} / ${DC / 4}u; let cq${it} = e${it} % ${DC / 4}u;`).join('\n      ')}
      ${its.map((it) => `var la${it} = vec4<f32>(0.0); var lb${it} = vec4<f32>(0.0);`).join(' ')}
      ${both(vec4, (fn) => its.map((it) => `${ld(a, it, 'la', fn)}\n      ${ld(b, it, 'lb', fn)}`).join('\n      '))}
      ${its
        .map(
          (it) =>
            `${guard ? `if (e${it} < ${per}u) ` : ''}{ sa[row${it} * PAD + cq${it}] = la${it}; sa[${rows}u * PAD + row${it} * PAD + cq${it}] = lb${it}; }`,
        )
        .join('\n      ')}
    }`;
}

/**
 * Loads `count` rows (starting at row index first + jc) of DP/4 vec4 column quads into sa[kk * DQ + cq],
 * all loads before any store (see loadPair); flags a non-finite value in vbad.
 */
export function loadRowsQuads(
  count: number,
  DQ: number,
  NT: number,
  rowIndex: string,
  valid: string,
  addr: string,
  src: string,
  vec4 = false,
): string {
  const per = count * DQ;
  const iters = Math.ceil(per / NT);
  const guard = per % NT !== 0;
  const its = range(iters);
  return `{
      ${its.map((it) => `let e${it} = lid + ${it * NT}u; let kk${it} = e${it} / DQ; let cq${it} = e${it} % DQ; let rowi${it} = ${rowIndex.replaceAll('kk', `kk${it}`)};`).join('\n      ')}
      ${its.map((it) => `var val${it} = vec4<f32>(0.0);`).join(' ')}
      ${both(vec4, (fn) =>
        its
          .map(
            (it) =>
              `val${it} = ${fn}${src}(${addr.replaceAll('rowi', `rowi${it}`)}, cq${it} * 4u, ${guard ? `e${it} < ${per}u && ` : ''}${valid.replaceAll('rowi', `rowi${it}`)});`,
          )
          .join('\n      '),
      )}
      ${its
        .map(
          (it) => `${guard ? `if (e${it} < ${per}u) ` : ''}{
        if (non_finite(val${it}.x) || non_finite(val${it}.y) || non_finite(val${it}.z) || non_finite(val${it}.w)) { vbad = seqno; }
        sa[kk${it} * DQ + cq${it}] = val${it};
      }`,
        )
        .join('\n      ')}
    }`;
}

/** out{r} (vec4 over k) += dot(A row ra + T r, B row rb + T k) over head-dim chunks staged in `sa`. */
export function chunkProduct(
  out: string,
  aValid: string,
  aAddr: string,
  aSrc: string,
  bValid: string,
  bAddr: string,
  bSrc: string,
  ra: string,
  rb: string,
  DC: number,
  T: number,
  vec4 = false,
): string {
  return `
    ${R4.map((r) => `var ${out}${r} = vec4<f32>(0.0);`).join(' ')}
    for (var c0: u32 = 0u; c0 < U.d; c0 = c0 + DC) {
      workgroupBarrier();
      ${loadPair(4 * T, DC, T * T, { valid: aValid, addr: aAddr, src: aSrc }, { valid: bValid, addr: bAddr, src: bSrc }, vec4)}
      workgroupBarrier();
      for (var cq: u32 = 0u; cq < DC / 4u; cq = cq + 1u) {
        ${R4.map((r) => `let a${r} = sa[(${ra} + T * ${r}u) * PAD + cq];`).join(' ')}
        ${R4.map((k) => `let b${k} = sa[BR * PAD + (${rb} + T * ${k}u) * PAD + cq];`).join(' ')}
        ${R4.map((r) => `${out}${r} = ${out}${r} + vec4<f32>(dot(a${r}, b0), dot(a${r}, b1), dot(a${r}, b2), dot(a${r}, b3));`).join('\n        ')}
      }
    }`;
}

/** Writes the transposed micro-tile: sp[(tx + T k) * T + ty] = vec4 over r of v{r}[k]. */
export function storeT(v: string): string {
  return R4.map(
    (k) => `sp[(tx + T * ${k}u) * T + ty] = vec4<f32>(${R4.map((r) => `${v}${r}.${C[k]}`).join(', ')});`,
  ).join('\n    ');
}
/** Reads it back into v{r}. */
export function loadT(v: string): string {
  return R4.map(
    (r) => `${v}${r} = vec4<f32>(${R4.map((k) => `sp[(tx + T * ${k}u) * T + ty].${C[r]}`).join(', ')});`,
  ).join('\n    ');
}

export function forwardShader(c: TileConfig): string {
  const { T, DP, DC, VC, subgroups } = c;
  const BR = 4 * T;
  const BC = 4 * T;
  const NQ = DP / (4 * T);
  const DQ = DP / 4;
  const PAD = DC / 4 + 1;
  const SA = Math.max(2 * BR * PAD, VC * DQ);
  const X = range(NQ);
  const shuffles = [1, 2, 4, 8].filter((x) => x < T);
  const reduceMax = subgroups
    ? `var rm = tmax;\n    ${shuffles.map((x) => `rm = max(rm, subgroupShuffleXor(rm, ${x}u));`).join('\n    ')}`
    : `workgroupBarrier();
    sp[ty * T + tx] = tmax;
    workgroupBarrier();
    var rm = vec4<f32>(NEG_MAX);
    for (var t: u32 = 0u; t < T; t = t + 1u) { rm = max(rm, sp[ty * T + t]); }
    workgroupBarrier();`;
  const reduceSum = subgroups
    ? `var ls = l;\n  ${shuffles.map((x) => `ls = ls + subgroupShuffleXor(ls, ${x}u);`).join('\n  ')}`
    : `workgroupBarrier();
  sp[ty * T + tx] = l;
  workgroupBarrier();
  var ls = vec4<f32>(0.0);
  for (var t: u32 = 0u; t < T; t = t + 1u) { ls = ls + sp[ty * T + t]; }`;
  const accDecl = R4.flatMap((r) => X.map((x) => `var acc${r}_${x} = vec4<f32>(0.0);`)).join(' ');
  const comp = ['x', 'y', 'z', 'w'];
  return /* wgsl */ `
${subgroups ? 'enable subgroups;' : ''}
@group(0) @binding(0) var<uniform> U: Params;
@group(0) @binding(1) var<storage, read> Qb: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> Kb: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> Vb: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read> mt: array<i32>;
@group(0) @binding(5) var<storage, read> bias_t: array<f32>;
@group(0) @binding(6) var<storage, read_write> Ob: array<f32>;
@group(0) @binding(7) var<storage, read_write> Lb: array<f32>;
${COMMON}
${loaderFns(['Qb', 'Kb', 'Vb'], true)}
const T: u32 = ${T}u;
const NT: u32 = ${T * T}u;
const BR: u32 = ${BR}u;
const BC: u32 = ${BC}u;
const DQ: u32 = ${DQ}u;
const DC: u32 = ${DC}u;
const VC: u32 = ${VC}u;
const PAD: u32 = ${PAD}u;
var<workgroup> sp: array<vec4<f32>, ${BR * T}>;
var<workgroup> sa: array<vec4<f32>, ${SA}>;
var<workgroup> vbad: u32;

@compute @workgroup_size(${T * T})
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let tx = lid % T;
  let ty = lid / T;
  let b = U.b0 + wg.z;
  let h = U.h0 + wg.y;
  let kh = h / U.group;
  let s = seq_of(b);
  let i0 = i32(wg.x * BR);
  if (i0 >= s.sq) { return; }
  let slope = alibi_slope(b, h);
  let aligned = ${ALIGNED};
  let plain = (U.flags & (F_SOFTCAP | F_ALIBI | F_BIAS)) == 0u;
  let lo = key_lo(s, i0);
  let hi = key_hi(s, min(i0 + i32(BR), s.sq) - 1);
  // Loop bounds the compiler cannot see through keep per-element code (mask, modifiers, Philox) from
  // being unrolled 16 times: the top bit of flags is never set.
  let n16 = 16u + (U.flags >> 31u);
  var m = vec4<f32>(NEG_MAX);
  var l = vec4<f32>(0.0);
  ${accDecl}
  var seqno: u32 = 0u;
  var j0: i32 = (lo / i32(BC)) * i32(BC);
  loop {
    if (j0 >= hi) { break; }
    // ---- S = Q K^T over head-dim chunks
    ${chunkProduct('sc', 'i0 + i32(row) < s.sq', 'U.q_base + q_at(b, s, u32(i0) + row, h)', 'Qb', 'j0 + i32(row) < s.sk', 'U.k_base + kv_at(b, s, u32(j0) + row, kh)', 'Kb', 'ty', 'tx', DC, T, true)}
    // ---- mask and modifiers (masked: -Inf). Without a score modifier: a tile wholly inside every row's
    // key range only scales, another masks in registers (the mask test is a few comparisons, cheap to
    // unroll). With softcap, ALiBi or bias, per element through this thread's own slots of sp, in a loop
    // the compiler does not unroll (those functions are long; lavapipe compiles slowly).
    let full = plain && i0 + i32(BR) <= s.sq && j0 + i32(BC) <= s.sk && j0 >= key_lo(s, i0 + i32(BR) - 1) &&
      j0 + i32(BC) <= key_hi(s, i0);
    if (full) {
      ${R4.map((r) => `sc${r} = sc${r} * U.scale;`).join(' ')}
    } else if (plain) {
      // allowed(i, j) is i < sq and key_lo(i) <= j < key_hi(i): one bounds pair per row and vector
      // compares per column. (Sixteen inlined allowed() calls took SwiftShader minutes to compile.)
      let jv = vec4<i32>(${R4.map((k) => `j0 + i32(tx + T * ${k}u)`).join(', ')});
      ${R4.map(
        (r) => `{
        let i = i0 + i32(ty + T * ${r}u);
        let lo = select(0, key_lo(s, i), i < s.sq);
        let hi = select(0, key_hi(s, i), i < s.sq);
        sc${r} = select(vec4<f32>(neg_inf()), sc${r} * U.scale, (jv >= vec4<i32>(lo)) & (jv < vec4<i32>(hi)));
      }`,
      ).join('\n      ')}
    } else {
      workgroupBarrier();
      ${storeT('sc')}
      for (var e: u32 = 0u; e < n16; e = e + 1u) {
        let k = e / 4u;
        let r = e % 4u;
        let i = i0 + i32(ty + T * r);
        let j = j0 + i32(tx + T * k);
        let slot = (tx + T * k) * T + ty;
        var sv = neg_inf();
        if (allowed(s, i, j)) { sv = modify_score(sp[slot][r], b, h, i, j, s.off, slope); }
        sp[slot][r] = sv;
      }
      ${loadT('sc')}
    }
    // ---- online softmax
    let tmax = vec4<f32>(${R4.map((r) => `max(max(sc${r}.x, sc${r}.y), max(sc${r}.z, sc${r}.w))`).join(', ')});
    ${reduceMax}
    let mnew = max(m, rm);
    let alpha = exp(m - mnew);
    m = mnew;
    ${R4.map((r) => X.map((x) => `acc${r}_${x} = acc${r}_${x} * alpha.${comp[r]};`).join(' ')).join('\n    ')}
    ${R4.map((r) => `let p${r} = exp(sc${r} - vec4<f32>(m.${comp[r]}));`).join('\n    ')}
    l = l * alpha + vec4<f32>(${R4.map((r) => `dot(p${r}, vec4<f32>(1.0))`).join(', ')});
    workgroupBarrier();
    ${storeT('p')}
    if (has(F_DROP)) {
      for (var e: u32 = 0u; e < n16; e = e + 1u) {
        let k = e / 4u;
        let r = e % 4u;
        let slot = (tx + T * k) * T + ty;
        sp[slot][r] = sp[slot][r] * drop_weight(b, h, i0 + i32(ty + T * r), j0 + i32(tx + T * k));
      }
    }
    // ---- O += P V over key chunks
    for (var jc: u32 = 0u; jc < BC; jc = jc + VC) {
      if (j0 + i32(jc) >= hi) { break; }
      seqno = seqno + 1u;
      workgroupBarrier();
      ${loadRowsQuads(VC, DQ, T * T, 'j0 + i32(jc + kk)', 'rowi < s.sk', 'U.v_base + kv_at(b, s, u32(rowi), kh)', 'Vb', true)}
      let bad = workgroupUniformLoad(&vbad) == seqno;
      if (!bad) {
        for (var kk: u32 = 0u; kk < VC; kk = kk + 1u) {
          let pv = sp[(jc + kk) * T + ty];
          ${X.map((x) => `let v${x} = sa[kk * DQ + tx + T * ${x}u];`).join(' ')}
          ${R4.map((r) => X.map((x) => `acc${r}_${x} = fma(vec4<f32>(pv.${comp[r]}), v${x}, acc${r}_${x});`).join(' ')).join('\n          ')}
        }
      } else {
        // A non-finite value: skip exact zeros of P, as the reference does (0 * Inf must not give NaN).
        for (var kk: u32 = 0u; kk < VC; kk = kk + 1u) {
          let pv = sp[(jc + kk) * T + ty];
          ${X.map((x) => `let v${x} = sa[kk * DQ + tx + T * ${x}u];`).join(' ')}
          ${R4.map((r) => X.map((x) => `acc${r}_${x} = acc${r}_${x} + select(pv.${comp[r]} * v${x}, vec4<f32>(0.0), pv.${comp[r]} == 0.0);`).join(' ')).join('\n          ')}
        }
      }
    }
    j0 = j0 + i32(BC);
  }
  // ---- finalise: O = acc / l, lse = m + ln l (empty rows: 0 and -Inf)
  ${reduceSum}
  ${R4.map(
    (r) => `{
    let i = i0 + i32(ty + T * ${r}u);
    if (i < s.sq) {
      let empty = ls.${comp[r]} == 0.0;
      let inv = select(1.0 / ls.${comp[r]}, 0.0, empty);
      let oa = U.o_base + q_at(b, s, u32(i), h);
      ${X.map(
        (x) => `{
        let o = select(acc${r}_${x} * inv, vec4<f32>(0.0), empty);
        let cc = (tx + T * ${x}u) * 4u;
        if (cc < U.d) { Ob[oa + cc] = o.x; }
        if (cc + 1u < U.d) { Ob[oa + cc + 1u] = o.y; }
        if (cc + 2u < U.d) { Ob[oa + cc + 2u] = o.z; }
        if (cc + 3u < U.d) { Ob[oa + cc + 3u] = o.w; }
      }`,
      ).join('\n      ')}
      if (tx == 0u) {
        Lb[U.lse_base + lse_at(b, s, u32(i), h)] = select(m.${comp[r]} + log(ls.${comp[r]}), neg_inf(), empty);
      }
    }
  }`,
  ).join('\n  ')}
}
`;
}
