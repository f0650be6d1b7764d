/**
 * Per-thread scratch: the tiles of one work item, reused from item to item. Everything here is
 * O(Br·Bc + (Br + Bc)·d) (times the heads handled together): nothing grows with the sequence.
 */
import type { DType } from '@flashattn/core';

export const F32 = 0;
export const F16 = 1;
export const BF16 = 2;

export function dtypeCode(dtype: DType): number {
  return dtype === 'float32' ? F32 : dtype === 'float16' ? F16 : BF16;
}

export function roundUp4(n: number): number {
  return (n + 3) & ~3;
}

/**
 * The leading dimension of a tile walked down its columns inside a product's k-loop (Qt, Kt, V):
 * rows plus 4 doubles. A stride of 64 or 128 doubles (512 B or 1 KiB) puts every row of a column
 * in the same 8 or 4 of L1's 64 sets, so a 64–128-step walk evicts itself; an odd number of half
 * cache lines per row spreads the walk over every set (PERF.md).
 */
export function paddedLd(n: number): number {
  return roundUp4(n) + 4;
}

/**
 * A tile: a plain JS array of doubles (PACKED_DOUBLE_ELEMENTS), not a Float64Array. V8 (Node 20)
 * reloads a typed array's length and data pointers on every access inside these loops, but keeps a
 * packed array's elements in a register: the whole forward runs 12-15% faster this way (PERF.md).
 * Tiles only ever hold numbers, so they never leave that elements kind.
 */
export type Tile = number[];

export class Scratch {
  private readonly f64 = new Map<string, Tile>();
  private readonly i32 = new Map<string, Int32Array>();
  /** One decoded row, for decodeInto / encodeInto (which speak Float32Array). */
  row32 = new Float32Array(256);

  /** A tile of at least n elements under this name (contents unspecified). */
  get(name: string, n: number): Tile {
    let a = this.f64.get(name);
    if (!a || a.length < n) {
      // Pushing doubles makes the array PACKED_DOUBLE_ELEMENTS from the start.
      a = [];
      for (let k = 0; k < n; k++) a.push(0.5);
      a.fill(0);
      this.f64.set(name, a);
    }
    return a;
  }

  ints(name: string, n: number): Int32Array {
    let a = this.i32.get(name);
    if (!a || a.length < n) {
      a = new Int32Array(n);
      this.i32.set(name, a);
    }
    return a;
  }

  /** Bytes held, for the memory report. */
  bytes(): number {
    let n = this.row32.byteLength;
    for (const a of this.f64.values()) n += 8 * a.length;
    for (const a of this.i32.values()) n += a.byteLength;
    return n;
  }
}
