/**
 * Jobs: everything a kernel needs, as plain data that survives structured cloning into a worker
 * (typed arrays on SharedArrayBuffers are shared, not copied). A job is cut into work items that
 * write disjoint parts of the outputs, so any thread may run any item in any order and the results
 * are bit-identical to a single-threaded run.
 */
import { allowedKeyRange, type Problem, seqLenK, seqLenQ } from '@flashattn/core';

export type Data = Float32Array | Uint16Array;

export interface ForwardJob {
  kind: 'forward';
  p: Problem;
  q: Data;
  k: Data;
  v: Data;
  out: Data;
  /** Written when the caller asked for it, else null. */
  lse: Float32Array | null;
  blockQ: number;
  blockK: number;
  /** FORWARD_ITEM ints per item: b, kv head, first group head g0, heads ng, first Q block, Q blocks nq. */
  items: Int32Array;
}

export interface BackwardJob {
  kind: 'backward';
  p: Problem;
  q: Data;
  k: Data;
  v: Data;
  dout: Data;
  lse: Float32Array;
  /** D_i = dO_i·O_i per row, indexed like lse. */
  D: Float64Array;
  dq: Data;
  dk: Data;
  dv: Data;
  /**
   * Paged KV whose block table maps two (batch, page) slots to one physical page: dK/dV rows then
   * receive sums over several sequences, accumulated here (float64, [totalK·hk·d]) by items that
   * each own one kv head and walk the batches in order.
   */
  dkAcc: Float64Array | null;
  dvAcc: Float64Array | null;
  blockQ: number;
  blockK: number;
  /** BACKWARD_ITEM ints per item: kind, b, head, block. */
  items: Int32Array;
}

export type Job = ForwardJob | BackwardJob;

export const FORWARD_ITEM = 6;
export const BACKWARD_ITEM = 4;
/** dK/dV of (b, kv head, K block). */
export const ITEM_KV = 0;
/** dQ of (b, query head, Q block). */
export const ITEM_Q = 1;
/** dK/dV of one kv head over all batches (shared pages). */
export const ITEM_KV_HEAD = 2;

interface Costed {
  cost: number;
  fields: number[];
}

/** Largest first, so the long causal rows start early and the threads finish together. */
function pack(list: Costed[], width: number): Int32Array {
  const order = list.map((_, n) => n).sort((a, b) => list[b].cost - list[a].cost || a - b);
  const items = new Int32Array(order.length * width);
  for (let at = 0; at < order.length; at++) items.set(list[order[at]].fields, at * width);
  return items;
}

/** Keys the rows [i0, i0 + rows) of sequence b may see, as one range: the union of their ranges. */
export function rowsKeyRange(p: Problem, i0: number, rows: number, sq: number, sk: number): [number, number] {
  // lo and hi are non-decreasing in i (every mask of SPEC §3 is an interval sliding with the diagonal).
  const lo = allowedKeyRange(p, i0, sq, sk)[0];
  const hi = allowedKeyRange(p, i0 + rows - 1, sq, sk)[1];
  return [lo, Math.max(lo, hi)];
}

/**
 * Work items of a forward. An item is up to `units` (query head, Q block) pairs of one kv head that
 * share each decoded K/V block: first the heads of the GQA group, then consecutive Q blocks of a head.
 * Q blocks whose rows see no key are still items: they write zeros and -Infinity.
 */
export function forwardItems(
  p: Problem,
  blockQ: number,
  units: number,
): { items: Int32Array; pairs: number } {
  const list: Costed[] = [];
  const G = p.groupSize;
  const ng = Math.min(G, units);
  const nq = Math.max(1, Math.floor(units / ng));
  let pairs = 0;
  for (let b = 0; b < p.batch; b++) {
    const sq = seqLenQ(p, b);
    const sk = seqLenK(p, b);
    const blocks = Math.ceil(sq / blockQ);
    const blockPairs: number[] = [];
    for (let qb = 0; qb < blocks; qb++) {
      const i0 = qb * blockQ;
      const rows = Math.min(blockQ, sq - i0);
      const [lo, hi] = rowsKeyRange(p, i0, rows, sq, sk);
      blockPairs.push(rows * (hi - lo) + rows);
      pairs += rows * (hi - lo);
    }
    for (let hk = 0; hk < p.headsK; hk++) {
      for (let g0 = 0; g0 < G; g0 += ng) {
        const heads = Math.min(ng, G - g0);
        for (let qb0 = 0; qb0 < blocks; qb0 += nq) {
          const qbs = Math.min(nq, blocks - qb0);
          let cost = 0;
          for (let qb = qb0; qb < qb0 + qbs; qb++) cost += blockPairs[qb] * heads;
          list.push({ cost, fields: [b, hk, g0, heads, qb0, qbs] });
        }
      }
    }
  }
  return { items: pack(list, FORWARD_ITEM), pairs: pairs * p.headsQ };
}

/**
 * True when the block table sends two (batch, page) slots that are actually read to one physical
 * page: then the dK/dV of that page is a sum over sequences and needs ITEM_KV_HEAD items.
 */
export function pagesShared(p: Problem): boolean {
  if (!p.blockTable) return false;
  const seen = new Uint8Array(p.numPages);
  for (let b = 0; b < p.batch; b++) {
    const pages = Math.ceil(seqLenK(p, b) / p.pageSize);
    for (let n = 0; n < pages; n++) {
      const page = p.blockTable[b * p.maxPages + n];
      if (seen[page]) return true;
      seen[page] = 1;
    }
  }
  return false;
}

/** Work items of a backward: dK/dV per (b, kv head, K block) and dQ per (b, head, Q block), one list. */
export function backwardItems(p: Problem, blockQ: number, blockK: number, shared: boolean): Int32Array {
  const list: Costed[] = [];
  for (let b = 0; b < p.batch; b++) {
    const sq = seqLenQ(p, b);
    const sk = seqLenK(p, b);
    if (!shared) {
      for (let kb = 0; kb * blockK < sk; kb++) {
        const keys = Math.min(blockK, sk - kb * blockK);
        // Rough cost: every query row of the group may meet this block.
        const cost = keys * sq * p.groupSize * 1.3;
        for (let hk = 0; hk < p.headsK; hk++) list.push({ cost, fields: [ITEM_KV, b, hk, kb] });
      }
    }
    for (let qb = 0; qb * blockQ < sq; qb++) {
      const i0 = qb * blockQ;
      const rows = Math.min(blockQ, sq - i0);
      const [lo, hi] = rowsKeyRange(p, i0, rows, sq, sk);
      const cost = rows * (hi - lo) + rows;
      for (let h = 0; h < p.headsQ; h++) list.push({ cost, fields: [ITEM_Q, b, h, qb] });
    }
  }
  if (shared) {
    let cost = 0;
    for (let b = 0; b < p.batch; b++) cost += seqLenQ(p, b) * seqLenK(p, b) * p.groupSize * 1.3;
    for (let hk = 0; hk < p.headsK; hk++) list.push({ cost, fields: [ITEM_KV_HEAD, 0, hk, 0] });
  }
  return pack(list, BACKWARD_ITEM);
}

export function itemCount(job: Job): number {
  return job.items.length / (job.kind === 'forward' ? FORWARD_ITEM : BACKWARD_ITEM);
}
