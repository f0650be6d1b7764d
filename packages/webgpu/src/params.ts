/**
 * The uniform block every attention kernel reads. One layout for all kernels, so that every feature is a
 * runtime value (a flag or an offset) rather than a compile-time specialisation: pipelines differ only
 * by kernel kind, head-dim bucket and tile configuration, which keeps compilation (slow on lavapipe) rare.
 */

type FieldType = 'u32' | 'i32' | 'f32';

export const FIELDS = [
  ['batch', 'u32'],
  ['sq', 'u32'],
  ['sk', 'u32'],
  ['hq', 'u32'],
  ['hk', 'u32'],
  ['group', 'u32'],
  ['d', 'u32'],
  ['flags', 'u32'],
  ['q_sb', 'u32'],
  ['q_ss', 'u32'],
  ['q_sh', 'u32'],
  ['q_base', 'u32'],
  ['k_sb', 'u32'],
  ['k_ss', 'u32'],
  ['k_sh', 'u32'],
  ['k_base', 'u32'],
  ['v_base', 'u32'],
  ['o_base', 'u32'],
  ['lse_sb', 'u32'],
  ['lse_sh', 'u32'],
  ['lse_base', 'u32'],
  ['scale', 'f32'],
  ['softcap', 'f32'],
  ['wl', 'i32'],
  ['wr', 'i32'],
  ['page_size', 'u32'],
  ['max_pages', 'u32'],
  ['m_cuq', 'u32'],
  ['m_cuk', 'u32'],
  ['m_seqk', 'u32'],
  ['m_table', 'u32'],
  ['m_alibi', 'u32'],
  ['alibi_pb', 'u32'],
  ['bs0', 'u32'],
  ['bs1', 'u32'],
  ['bs2', 'u32'],
  ['bs3', 'u32'],
  ['bias_base', 'u32'],
  ['drop_thresh', 'u32'],
  ['drop_k0', 'u32'],
  ['drop_k1', 'u32'],
  ['drop_off', 'u32'],
  ['drop_scale', 'f32'],
  ['n_split', 'u32'],
  ['split_len', 'u32'],
  ['b0', 'u32'],
  ['h0', 'u32'],
  ['accum', 'u32'],
  // second-operand bases (dout / out / D, or partial buffers), by kernel
  ['x_base', 'u32'],
  ['y_base', 'u32'],
  ['z_base', 'u32'],
  ['w_base', 'u32'],
  ['seq_block', 'u32'],
  ['n_elem', 'u32'],
  ['mode', 'u32'],
  ['pad0', 'u32'],
] as const satisfies readonly (readonly [string, FieldType])[];

export type ParamName = (typeof FIELDS)[number][0];
export type Params = Partial<Record<ParamName, number>>;

export const PARAM_WORDS = Math.ceil(FIELDS.length / 4) * 4;
export const PARAM_BYTES = PARAM_WORDS * 4;

export const FLAG = {
  CAUSAL: 1,
  CU: 2,
  SEQK: 4,
  PAGED: 8,
  SOFTCAP: 16,
  ALIBI: 32,
  BIAS: 64,
  DROP: 128,
  DROPALL: 256,
} as const;

export function paramsStruct(): string {
  const lines = FIELDS.map(([name, type]) => `  ${name}: ${type},`);
  for (let i = FIELDS.length; i < PARAM_WORDS; i++) lines.push(`  _pad${i}: u32,`);
  const flags = Object.entries(FLAG)
    .map(([k, v]) => `const F_${k}: u32 = ${v}u;`)
    .join('\n');
  return `struct Params {\n${lines.join('\n')}\n}\n${flags}\n`;
}

const INDEX = new Map<string, [number, FieldType]>(FIELDS.map(([n, t], i) => [n, [i, t]]));

/** Packs params into the uniform layout; u32 fields wrap modulo 2^32 (negative bases are intended). */
export function packParams(p: Params): ArrayBuffer {
  const buf = new ArrayBuffer(PARAM_BYTES);
  const u = new Uint32Array(buf);
  const i = new Int32Array(buf);
  const f = new Float32Array(buf);
  for (const [name, value] of Object.entries(p)) {
    if (value === undefined) continue;
    const entry = INDEX.get(name);
    if (!entry) throw new Error(`unknown param ${name}`);
    const [idx, type] = entry;
    if (type === 'f32') f[idx] = value;
    else if (type === 'i32') i[idx] = value;
    else u[idx] = value >>> 0; // ToUint32: modulo 2^32, so negative bases wrap as intended
  }
  return buf;
}
