/**
 * The benchmark shapes of SPEC §9.
 *
 * - CPU / wasm ('standard'): b = 1, hq = hk = 8, d = 64, s ∈ {512, 1024, 2048, 4096}, causal and not.
 * - GPU ('standard'): 16k tokens in all (b = 16384 / s), hidden 2048 (hq = 2048 / d), d ∈ {64, 128},
 *   s ∈ {512 … 16384}, causal and not; and decode: sq = 1, hq = 32, hk = 8, d = 128,
 *   sk ∈ {4096, 32768, 131072}, reported as GB/s of K and V read.
 * - 'quick': small shapes of the same families that run in seconds (the `pnpm start` smoke run).
 */
import { allowedPairs, byteSize, type DType } from '@flashattn/core';

export type ShapeSetName = 'quick' | 'standard';
export const SHAPE_SETS: readonly ShapeSetName[] = ['quick', 'standard'];

export interface BenchShape {
  /** prefill: sq = sk; decode: sq = 1 against a long KV cache. */
  kind: 'prefill' | 'decode';
  batch: number;
  sq: number;
  sk: number;
  hq: number;
  hk: number;
  d: number;
  causal: boolean;
}

const CPU_SEQ: Record<ShapeSetName, number[]> = {
  quick: [256, 512, 1024],
  standard: [512, 1024, 2048, 4096],
};
const GPU_SEQ: Record<ShapeSetName, number[]> = {
  quick: [128, 512],
  standard: [512, 1024, 2048, 4096, 8192, 16384],
};
const GPU_TOKENS: Record<ShapeSetName, number> = { quick: 1024, standard: 16384 };
const GPU_HIDDEN: Record<ShapeSetName, number> = { quick: 512, standard: 2048 };
const GPU_HEAD_DIMS: Record<ShapeSetName, number[]> = { quick: [64], standard: [64, 128] };
const DECODE_SK: Record<ShapeSetName, number[]> = { quick: [2048], standard: [4096, 32768, 131072] };

function prefill(batch: number, s: number, heads: number, d: number): BenchShape[] {
  return [false, true].map((causal) => ({
    kind: 'prefill',
    batch,
    sq: s,
    sk: s,
    hq: heads,
    hk: heads,
    d,
    causal,
  }));
}

/** CPU and wasm shapes; `seq` replaces the sequence lengths. */
export function cpuShapes(set: ShapeSetName, seq?: readonly number[]): BenchShape[] {
  return (seq ?? CPU_SEQ[set]).flatMap((s) => prefill(1, s, 8, 64));
}

/** GPU shapes: prefill at a fixed token count and hidden size, then decode; `seq` replaces the prefill lengths. */
export function gpuShapes(set: ShapeSetName, seq?: readonly number[]): BenchShape[] {
  const shapes: BenchShape[] = [];
  for (const d of GPU_HEAD_DIMS[set]) {
    for (const s of seq ?? GPU_SEQ[set]) {
      shapes.push(...prefill(Math.max(1, Math.floor(GPU_TOKENS[set] / s)), s, GPU_HIDDEN[set] / d, d));
    }
  }
  for (const sk of DECODE_SK[set]) {
    shapes.push({ kind: 'decode', batch: 1, sq: 1, sk, hq: 32, hk: 8, d: 128, causal: false });
  }
  return shapes;
}

/** "b1 s512 h8 d64", "b1 q1 k4096 h32/8 d128". Causal is its own column. */
export function shapeLabel(s: BenchShape): string {
  const heads = s.hq === s.hk ? `h${s.hq}` : `h${s.hq}/${s.hk}`;
  const seq = s.sq === s.sk ? `s${s.sq}` : `q${s.sq} k${s.sk}`;
  return `b${s.batch} ${seq} ${heads} d${s.d}`;
}

/** A key that tells shapes apart, causal included. */
export function shapeKey(s: BenchShape): string {
  return `${shapeLabel(s)}${s.causal ? ' causal' : ''}`;
}

/** Forward FLOPs of SPEC §9: 4·d·(allowed pairs over batch and query heads); backward 2.5×. */
export function shapeFlops(s: BenchShape, backward: boolean): number {
  const forward = 4 * s.d * s.batch * s.hq * allowedPairs(s.sq, s.sk, s.causal);
  return backward ? 2.5 * forward : forward;
}

/** Bytes of K and V one decode step reads (SPEC §9 reports decode as GB/s of these). */
export function kvBytes(s: BenchShape, dtype: DType): number {
  return 2 * s.batch * s.sk * s.hk * s.d * byteSize(dtype);
}
