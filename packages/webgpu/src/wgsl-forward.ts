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
  /**
   * Forward only: issue the global loads of the next stage (head-dim chunk of Q and K, or key chunk of V)
   * before the arithmetic on the current one, so that their latency overlaps that arithmetic.
   */
  prefetch?: boolean;
  /** Forward only: query rows per thread, 4 (T×T threads) or 8 (T×T/2 threads, twice the work each). */
  rows?: number;
  /**
   * Forward only: workgroup x takes the Q blocks nb − 1 − x and x (nb blocks per sequence) one after the
   * other in a single tile loop, so under a causal mask every workgroup runs nb + 1 tiles and the grid is
   * half as wide. The dispatch's x is ceil(nb / 2). Slower on an H200, causal too (PERF.md change 18).
   */
  pairs?: boolean;
  /**
   * Forward only: the grid is (head, batch, Q block) with the Q block reversed, so that the hardware,
   * which starts workgroups in grid order, starts every head's last block (under a causal mask the
   * longest) first and the short ones fill the tail. Slower on an H200 (PERF.md change 20).
   */
  longestFirst?: boolean;
  /**
   * Forward only: each head's Q blocks in reverse (x → nb − 1 − x), so that under a causal mask a head's
   * longest block starts first while the heads stay in grid order (its blocks still run side by side).
   * Slower on an H200 (PERF.md change 21).
   */
  reverse?: boolean;
  /**
   * Forward only: on a tile where the block's first row sees at most the tile's first key (the causal
   * diagonal), the (row r, key k) quads with k > r of every thread (rows ty + T r, keys tx + T k) are all
   * masked: their S dot products are skipped, and P·V runs in segments of T keys, segment q updating rows
   * r ≥ q only (6 of 16 quads of the tile's work). Needs 4 rows per thread. On an H200 +0.5–1.7% at
   * causal s ≤ 1024 and −1% elsewhere (PERF.md change 23).
   */
  diagonalSkip?: boolean;
}

export function forwardBindings(): ('uniform' | 'read' | 'rw')[] {
  return ['uniform', 'read', 'read', 'read', 'read', 'read', 'rw', 'rw'];
}

/** Workgroup bytes of the forward kernel for a config. */
export function forwardStorage(c: TileConfig): number {
  const { T, DP, DC, VC } = c;
  const BR = 4 * T;
  const pad = DC / 4 + 1;
  return 16 * (4 * T * (BR / 4 + 1) + Math.max(2 * BR * pad, VC * (DP / 4))) + 4;
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

/**
 * The pipelined forward's stages, each split into an issue (global loads into registers) and a store
 * (registers into workgroup memory after a barrier), so that a stage's loads are issued before the
 * arithmetic on the stage before it and their latency overlaps that arithmetic. Two kinds of stage: a
 * head-dim chunk of Q and K (the S phase; layout as loadPair) and a key chunk of V (P·V; layout as
 * loadRowsQuads). A thread's slots depend on its index alone, so they are computed once per kernel.
 */
export class Stages {
  readonly sIts: number[];
  readonly vIts: number[];
  private readonly sGuard: boolean;
  private readonly vGuard: boolean;
  constructor(
    private readonly BR: number,
    private readonly DC: number,
    private readonly VC: number,
    private readonly DQ: number,
    private readonly NT: number,
  ) {
    const sPer = BR * (DC / 4);
    const vPer = VC * DQ;
    this.sIts = range(Math.ceil(sPer / NT));
    this.vIts = range(Math.ceil(vPer / NT));
    this.sGuard = sPer % NT !== 0;
    this.vGuard = vPer % NT !== 0;
  }
  private sOk(it: number): string {
    return this.sGuard ? `se${it} < ${this.BR * (this.DC / 4)}u && ` : '';
  }
  private vOk(it: number): string {
    return this.vGuard ? `ve${it} < ${this.VC * this.DQ}u && ` : '';
  }
  /** Slot indices and the registers that carry a stage from its issue to its store. */
  decls(): string {
    const q = this.DC / 4;
    return [
      ...this.sIts.map(
        (it) =>
          `let se${it} = lid + ${it * this.NT}u; let sr${it} = se${it} / ${q}u; let sq${it} = se${it} % ${q}u; var pa${it} = vec4<f32>(0.0); var pb${it} = vec4<f32>(0.0);`,
      ),
      ...this.vIts.map(
        (it) =>
          `let ve${it} = lid + ${it * this.NT}u; let vk${it} = ve${it} / DQ; let vq${it} = ve${it} % DQ; var pv${it} = vec4<f32>(0.0);`,
      ),
    ].join('\n  ');
  }
  /** Loads chunk c0 (u32 expression) of the Q block at i0 and of the K tile at j0 (i32 expressions). */
  issueS(c0: string, j0: string, i0 = 'i0'): string {
    return both(true, (fn) =>
      this.sIts
        .map(
          (it) =>
            `pa${it} = ${fn}Qb(U.q_base + q_at(b, s, u32(${i0}) + sr${it}, h), ${c0} + sq${it} * 4u, ${this.sOk(it)}${i0} + i32(sr${it}) < s.sq);
      pb${it} = ${fn}Kb(U.k_base + kv_at(b, s, u32(${j0}) + sr${it}, kh), ${c0} + sq${it} * 4u, ${this.sOk(it)}${j0} + i32(sr${it}) < s.sk);`,
        )
        .join('\n      '),
    );
  }
  storeS(): string {
    return this.sIts
      .map(
        (it) =>
          `${this.sGuard ? `if (se${it} < ${this.BR * (this.DC / 4)}u) ` : ''}{ sa[sr${it} * PAD + sq${it}] = pa${it}; sa[BR * PAD + sr${it} * PAD + sq${it}] = pb${it}; }`,
      )
      .join('\n      ');
  }
  /** Loads the V rows j0 + jc .. j0 + jc + VC - 1 (jc u32, j0 i32 expressions). */
  issueV(jc: string, j0: string): string {
    return both(true, (fn) =>
      this.vIts
        .map(
          (it) =>
            `pv${it} = ${fn}Vb(U.v_base + kv_at(b, s, u32(${j0} + i32(${jc} + vk${it})), kh), vq${it} * 4u, ${this.vOk(it)}${j0} + i32(${jc} + vk${it}) < s.sk);`,
        )
        .join('\n      '),
    );
  }
  /** Stores V and flags a non-finite value in vbad (P·V then skips exact zeros of P). */
  storeV(): string {
    return this.vIts
      .map(
        (it) => `${this.vGuard ? `if (ve${it} < ${this.VC * this.DQ}u) ` : ''}{
        if (non_finite(pv${it}.x) || non_finite(pv${it}.y) || non_finite(pv${it}.z) || non_finite(pv${it}.w)) { vbad = seqno; }
        sa[vk${it} * DQ + vq${it}] = pv${it};
      }`,
      )
      .join('\n      ');
  }
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

export function forwardShader(c: TileConfig): string {
  const { T, DP, DC, VC, subgroups } = c;
  const RR = c.rows === 8 ? 8 : 4;
  const G = range(RR / 4);
  const RS = range(RR);
  const TX = T;
  const BR = 4 * T;
  const BC = 4 * T;
  const TY = BR / RR;
  const NT = TX * TY;
  const NQ = DP / (4 * T);
  const DQ = DP / 4;
  const PAD = DC / 4 + 1;
  // P is stored transposed, one row of BR/4 quads per key, padded by one quad so that the TX threads of a
  // row group, storing keys tx + TX k, hit different banks.
  const SPR = BR / 4 + 1;
  const SA = Math.max(2 * BR * PAD, VC * DQ);
  const X = range(NQ);
  const cm = (r: number) => C[r % 4];
  const g4 = (r: number) => Math.floor(r / 4);
  const shuffles = [1, 2, 4, 8].filter((x) => x < TX);
  // Row statistics: one vec4 per group of four of a thread's rows (rows ty + TY (4g + 0..3)).
  const reduceRows = (src: string, dst: string, op: (a: string, b: string) => string, init: string) =>
    subgroups
      ? G.map(
          (g) =>
            `var ${dst}${g} = ${src}${g};\n    ${shuffles.map((x) => `${dst}${g} = ${op(`${dst}${g}`, `subgroupShuffleXor(${dst}${g}, ${x}u)`)};`).join('\n    ')}`,
        ).join('\n    ')
      : `workgroupBarrier();
    ${G.map((g) => `sp[(${g}u * TY + ty) * TX + tx] = ${src}${g};`).join(' ')}
    workgroupBarrier();
    ${G.map((g) => `var ${dst}${g} = ${init};`).join(' ')}
    for (var t: u32 = 0u; t < TX; t = t + 1u) {
      ${G.map((g) => `${dst}${g} = ${op(`${dst}${g}`, `sp[(${g}u * TY + ty) * TX + t]`)};`).join(' ')}
    }
    workgroupBarrier();`;
  const accDecl = RS.flatMap((r) => X.map((x) => `var acc${r}_${x} = vec4<f32>(0.0);`)).join(' ');
  // Slot of P or S for (row r, key k) of this thread in sp, and its component.
  const slot = (k: string, r: string) => `(tx + TX * ${k}) * SPR + (${r} / 4u) * TY + ty`;
  const storeT = (v: string) =>
    R4.flatMap((k) =>
      G.map(
        (g) =>
          `sp[(tx + TX * ${k}u) * SPR + ${g}u * TY + ty] = vec4<f32>(${R4.map((q) => `${v}${4 * g + q}.${C[k]}`).join(', ')});`,
      ),
    ).join('\n    ');
  const loadT = (v: string) =>
    RS.map(
      (r) =>
        `${v}${r} = vec4<f32>(${R4.map((k) => `sp[(tx + TX * ${k}u) * SPR + ${g4(r)}u * TY + ty].${cm(r)}`).join(', ')});`,
    ).join('\n    ');
  const pairs = c.pairs === true;
  const lpt = c.longestFirst === true;
  const rev = c.reverse === true;
  const singleHead = `let i0 = i32(qx * BR);
  if (i0 >= s.sq) { return; }
  let hi = key_hi(s, min(i0 + i32(BR), s.sq) - 1);
  var j0: i32 = (key_lo(s, i0) / i32(BC)) * i32(BC);`;
  // The longer block (under a causal mask) first; an odd middle block runs alone (last from the start).
  const pairHead = `let nb = (s.sq + i32(BR) - 1) / i32(BR);
  let xl = nb - 1 - i32(qx);
  if (i32(qx) > xl) { return; }
  var last = i32(qx) == xl;
  let i0b = i32(qx * BR);
  let hib = key_hi(s, min(i0b + i32(BR), s.sq) - 1);
  let j0b = (key_lo(s, i0b) / i32(BC)) * i32(BC);
  var i0 = xl * i32(BR);
  var hi = key_hi(s, min(i0 + i32(BR), s.sq) - 1);
  var j0 = (key_lo(s, i0) / i32(BC)) * i32(BC);`;
  const st = new Stages(BR, DC, VC, DQ, NT);
  const pf = c.prefetch === true;
  // Pipelined (pf): the tile loop walks stages S chunk 0, 1, …, V chunk 0, 1, …, then the next tile's S
  // chunk 0; each stage's loads are issued right after the previous stage's store, before its arithmetic.
  // Otherwise each stage loads and stores right away (all of a stage's loads still before its stores).
  // Diagonal skip (TileConfig.diagonalSkip): key_hi is min(const, i + c), so key_hi(i0 + δ) ≤ key_hi(i0) + δ;
  // with key_hi(i0) ≤ j0 + 1, row ty + T r sees keys below j0 + T (r + 1) at most, and every key quad
  // k > r (keys tx + T k ≥ T (r + 1)) is masked for every thread.
  const diag = c.diagonalSkip === true && RR === 4 && VC % TX === 0;
  const sTri = (r: number) =>
    r === 3
      ? `sc3 = sc3 + vec4<f32>(dot(a3, b0), dot(a3, b1), dot(a3, b2), dot(a3, b3));`
      : `sc${r} = sc${r} + vec4<f32>(${R4.map((k) => (k <= r ? `dot(a${r}, b${k})` : '0.0')).join(', ')});`;
  const pvSeg = (rows: number[]) => `for (var k2: u32 = 0u; k2 < TX; k2 = k2 + 1u) {
            let kk = k0 + k2;
            let pv0 = sp[(jc + kk) * SPR + ty];
            ${X.map((x) => `let v${x} = sa[kk * DQ + tx + TX * ${x}u];`).join(' ')}
            ${rows.map((r) => X.map((x) => `acc${r}_${x} = fma(vec4<f32>(pv0.${cm(r)}), v${x}, acc${r}_${x});`).join(' ')).join('\n            ')}
          }`;
  const pvTri = `for (var k0: u32 = 0u; k0 < VC; k0 = k0 + TX) {
          let q = (jc + k0) / TX;
          if (q == 0u) {
          ${pvSeg([0, 1, 2, 3])}
          } else if (q == 1u) {
          ${pvSeg([1, 2, 3])}
          } else if (q == 2u) {
          ${pvSeg([2, 3])}
          } else {
          ${pvSeg([3])}
          }
        }`;
  const pvBody = (acc: (r: number, x: number) => string) => `for (var kk: u32 = 0u; kk < VC; kk = kk + 1u) {
          ${G.map((g) => `let pv${g} = sp[(jc + kk) * SPR + ${g}u * TY + ty];`).join(' ')}
          ${X.map((x) => `let v${x} = sa[kk * DQ + tx + TX * ${x}u];`).join(' ')}
          ${RS.map((r) => X.map((x) => `acc${r}_${x} = ${acc(r, x)};`).join(' ')).join('\n          ')}
        }`;
  const finalise = `
  // ---- finalise: O = acc / l, lse = m + ln l (empty rows: 0 and -Inf)
  ${reduceRows('l', 'ls', (a, b2) => `${a} + ${b2}`, 'vec4<f32>(0.0)')}
  ${RS.map(
    (r) => `{
    let i = i0 + i32(ty + TY * ${r}u);
    if (i < s.sq) {
      let empty = ls${g4(r)}.${cm(r)} == 0.0;
      let inv = select(1.0 / ls${g4(r)}.${cm(r)}, 0.0, empty);
      let oa = U.o_base + q_at(b, s, u32(i), h);
      ${X.map(
        (x) => `{
        let o = select(acc${r}_${x} * inv, vec4<f32>(0.0), empty);
        let cc = (tx + TX * ${x}u) * 4u;
        if (cc < U.d) { Ob[oa + cc] = o.x; }
        if (cc + 1u < U.d) { Ob[oa + cc + 1u] = o.y; }
        if (cc + 2u < U.d) { Ob[oa + cc + 2u] = o.z; }
        if (cc + 3u < U.d) { Ob[oa + cc + 3u] = o.w; }
      }`,
      ).join('\n      ')}
      if (tx == 0u) {
        Lb[U.lse_base + lse_at(b, s, u32(i), h)] = select(m${g4(r)}.${cm(r)} + log(ls${g4(r)}.${cm(r)}), neg_inf(), empty);
      }
    }
  }`,
  ).join('\n  ')}`;
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
const TX: u32 = ${TX}u;
const TY: u32 = ${TY}u;
const BR: u32 = ${BR}u;
const BC: u32 = ${BC}u;
const DQ: u32 = ${DQ}u;
const DC: u32 = ${DC}u;
const VC: u32 = ${VC}u;
const PAD: u32 = ${PAD}u;
const SPR: u32 = ${SPR}u;
var<workgroup> sp: array<vec4<f32>, ${BC * SPR}>;
var<workgroup> sa: array<vec4<f32>, ${SA}>;
var<workgroup> vbad: u32;

@compute @workgroup_size(${NT})
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let tx = lid % TX;
  let ty = lid / TX;
  ${
    lpt
      ? `// Q blocks outermost, the last (under a causal mask the longest) first.
  let qx = nwg.z - 1u - wg.z;
  let b = U.b0 + wg.y;
  let h = U.h0 + wg.x;`
      : `let qx = ${rev ? 'nwg.x - 1u - wg.x' : 'wg.x'};
  let b = U.b0 + wg.z;
  let h = U.h0 + wg.y;`
  }
  let kh = h / U.group;
  let s = seq_of(b);
  let slope = alibi_slope(b, h);
  let aligned = ${ALIGNED};
  let plain = (U.flags & (F_SOFTCAP | F_ALIBI | F_BIAS)) == 0u;
  // Loop bounds the compiler cannot see through keep per-element code (mask, modifiers, Philox) from
  // being unrolled: the top bit of flags is never set.
  let nel = ${4 * RR}u + (U.flags >> 31u);
  ${pairs ? pairHead : singleHead}
  ${G.map((g) => `var m${g} = vec4<f32>(NEG_MAX); var l${g} = vec4<f32>(0.0);`).join(' ')}
  ${accDecl}
  var seqno: u32 = 0u;
  ${st.decls()}
  ${pf ? (pairs ? `{\n  var pi0 = i0; var pj0 = j0;\n  if (j0 >= hi && !last) { pi0 = i0b; pj0 = j0b; }\n  ${st.issueS('0u', 'pj0', 'pi0')}\n  }` : st.issueS('0u', 'j0')) : ''}
  loop {
    ${
      pairs
        ? `if (j0 >= hi) {
      ${finalise}
      if (last) { break; }
      last = true;
      i0 = i0b;
      hi = hib;
      j0 = j0b;
      ${G.map((g) => `m${g} = vec4<f32>(NEG_MAX); l${g} = vec4<f32>(0.0);`).join(' ')}
      ${RS.flatMap((r) => X.map((x) => `acc${r}_${x} = vec4<f32>(0.0);`)).join(' ')}
      continue;
    }
    // The tile whose first stage the last P·V stage prefetches: the next one of this block, or the
    // partner block's first.
    var ni0 = i0;
    var nj0 = j0 + i32(BC);
    if (nj0 >= hi && !last) {
      ni0 = i0b;
      nj0 = j0b;
    }`
        : 'if (j0 >= hi) { break; }'
    }
    // ---- S = Q K^T over head-dim chunks
    ${RS.map((r) => `var sc${r} = vec4<f32>(0.0);`).join(' ')}
    ${diag ? 'let tri = key_hi(s, i0) <= j0 + 1;' : ''}
    for (var c0: u32 = 0u; c0 < U.d; c0 = c0 + DC) {
      workgroupBarrier();
      ${pf ? '' : st.issueS('c0', 'j0')}
      ${st.storeS()}
      workgroupBarrier();
      ${
        pf
          ? `if (c0 + DC < U.d) {
      ${st.issueS('c0 + DC', 'j0')}
      } else {
      ${st.issueV('0u', 'j0')}
      }`
          : ''
      }
      ${
        diag
          ? `if (tri) {
      for (var cq: u32 = 0u; cq < DC / 4u; cq = cq + 1u) {
        ${RS.map((r) => `let a${r} = sa[(ty + TY * ${r}u) * PAD + cq];`).join(' ')}
        ${R4.map((k) => `let b${k} = sa[BR * PAD + (tx + TX * ${k}u) * PAD + cq];`).join(' ')}
        ${RS.map(sTri).join('\n        ')}
      }
      } else {`
          : ''
      }
      for (var cq: u32 = 0u; cq < DC / 4u; cq = cq + 1u) {
        ${RS.map((r) => `let a${r} = sa[(ty + TY * ${r}u) * PAD + cq];`).join(' ')}
        ${R4.map((k) => `let b${k} = sa[BR * PAD + (tx + TX * ${k}u) * PAD + cq];`).join(' ')}
        ${RS.map((r) => `sc${r} = sc${r} + vec4<f32>(dot(a${r}, b0), dot(a${r}, b1), dot(a${r}, b2), dot(a${r}, b3));`).join('\n        ')}
      }
      ${diag ? '}' : ''}
    }
    // ---- mask and modifiers (masked: -Inf). Without a score modifier: a tile wholly inside every row's
    // key range only scales, another masks in registers (the mask test is a few comparisons, cheap to
    // unroll). With softcap, ALiBi or bias, per element through this thread's own slots of sp, in a loop
    // the compiler does not unroll (those functions are long; lavapipe compiles slowly).
    let full = plain && i0 + i32(BR) <= s.sq && j0 + i32(BC) <= s.sk && j0 >= key_lo(s, i0 + i32(BR) - 1) &&
      j0 + i32(BC) <= key_hi(s, i0);
    if (full) {
      ${RS.map((r) => `sc${r} = sc${r} * U.scale;`).join(' ')}
    } else if (plain) {
      // allowed(i, j) is i < sq and key_lo(i) <= j < key_hi(i): one bounds pair per row and vector
      // compares per column. (Sixteen inlined allowed() calls took SwiftShader minutes to compile.)
      let jv = vec4<i32>(${R4.map((k) => `j0 + i32(tx + TX * ${k}u)`).join(', ')});
      ${RS.map(
        (r) => `{
        let i = i0 + i32(ty + TY * ${r}u);
        let lo = select(0, key_lo(s, i), i < s.sq);
        let hi = select(0, key_hi(s, i), i < s.sq);
        sc${r} = select(vec4<f32>(neg_inf()), sc${r} * U.scale, (jv >= vec4<i32>(lo)) & (jv < vec4<i32>(hi)));
      }`,
      ).join('\n      ')}
    } else {
      workgroupBarrier();
      ${storeT('sc')}
      for (var e: u32 = 0u; e < nel; e = e + 1u) {
        let k = e / ${RR}u;
        let r = e % ${RR}u;
        let i = i0 + i32(ty + TY * r);
        let j = j0 + i32(tx + TX * k);
        let slot = ${slot('k', 'r')};
        var sv = neg_inf();
        if (allowed(s, i, j)) { sv = modify_score(sp[slot][r % 4u], b, h, i, j, s.off, slope); }
        sp[slot][r % 4u] = sv;
      }
      ${loadT('sc')}
    }
    // ---- online softmax
    ${G.map((g) => `let tmax${g} = vec4<f32>(${R4.map((q) => `max(max(sc${4 * g + q}.x, sc${4 * g + q}.y), max(sc${4 * g + q}.z, sc${4 * g + q}.w))`).join(', ')});`).join('\n    ')}
    ${reduceRows('tmax', 'rm', (a, b2) => `max(${a}, ${b2})`, 'vec4<f32>(NEG_MAX)')}
    ${G.map((g) => `let mnew${g} = max(m${g}, rm${g}); let alpha${g} = exp(m${g} - mnew${g}); m${g} = mnew${g};`).join('\n    ')}
    ${RS.map((r) => X.map((x) => `acc${r}_${x} = acc${r}_${x} * alpha${g4(r)}.${cm(r)};`).join(' ')).join('\n    ')}
    ${RS.map((r) => `let p${r} = exp(sc${r} - vec4<f32>(m${g4(r)}.${cm(r)}));`).join('\n    ')}
    ${G.map((g) => `l${g} = l${g} * alpha${g} + vec4<f32>(${R4.map((q) => `dot(p${4 * g + q}, vec4<f32>(1.0))`).join(', ')});`).join('\n    ')}
    // Not needed for ordering (the S phase's barriers closed the last reads of sp); dropping it and the
    // row max's leading barrier gained nothing measurable on the H200 (PERF.md, run 6), so it stays.
    workgroupBarrier();
    ${storeT('p')}
    if (has(F_DROP)) {
      for (var e: u32 = 0u; e < nel; e = e + 1u) {
        let k = e / ${RR}u;
        let r = e % ${RR}u;
        let slot = ${slot('k', 'r')};
        sp[slot][r % 4u] = sp[slot][r % 4u] * drop_weight(b, h, i0 + i32(ty + TY * r), j0 + i32(tx + TX * k));
      }
    }
    // ---- O += P V over key chunks
    for (var jc: u32 = 0u; jc < BC; jc = jc + VC) {
      if (j0 + i32(jc) >= hi) { break; }
      seqno = seqno + 1u;
      workgroupBarrier();
      ${pf ? '' : st.issueV('jc', 'j0')}
      ${st.storeV()}
      let bad = workgroupUniformLoad(&vbad) == seqno;
      ${
        pf
          ? `if (jc + VC < BC && j0 + i32(jc + VC) < hi) {
      ${st.issueV('jc + VC', 'j0')}
      } else {
      ${pairs ? st.issueS('0u', 'nj0', 'ni0') : st.issueS('0u', 'j0 + i32(BC)')}
      }`
          : ''
      }
      ${diag ? `if (!bad && tri) {\n        ${pvTri}\n      } else ` : ''}if (!bad) {
        ${pvBody((r, x) => `fma(vec4<f32>(pv${g4(r)}.${cm(r)}), v${x}, acc${r}_${x})`)}
      } else {
        // A non-finite value: skip exact zeros of P, as the reference does (0 * Inf must not give NaN).
        ${pvBody((r, x) => `acc${r}_${x} + select(pv${g4(r)}.${cm(r)} * v${x}, vec4<f32>(0.0), pv${g4(r)}.${cm(r)} == 0.0)`)}
      }
    }
    j0 = j0 + i32(BC);
  }
  ${pairs ? '' : finalise}
}
`;
}
