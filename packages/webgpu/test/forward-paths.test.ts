/**
 * The forward kernel's tunings (ForwardTuning, timed against each other in PERF.md run 7), each run over
 * the conformance suite's float32 forward cases with d ≤ 64 and over multi-block causal, windowed and
 * modified shapes against core's float64 reference: 64×64 tiles (the default) and 32×32 (also the
 * fallback for adapters with little workgroup memory), one Q block per workgroup and pairs of them, the
 * grid in Q-block-major and in reversed block order.
 */
import { conformanceCases, runCase } from '@flashattn/conformance/cases';
import { type AttentionOptions, referenceForward64 } from '@flashattn/core';
import { afterAll, describe, expect, test } from 'vitest';
import { createWebGPUBackend, type ForwardTuning, type WebGPUBackend } from '../src/index.js';
import { maxErr, seededTensor } from './helpers.js';

const backends: WebGPUBackend[] = [];
afterAll(async () => {
  for (const be of backends) await be.dispose();
});

// Odd and even block counts (BR = 64 or 32), sq against sk both ways (bottom-right causal), an empty
// first block of a pair (a window ahead of the diagonal), the per-element modifier path.
const shapes: { name: string; b: number; sq: number; sk: number; h: number; opts: AttentionOptions }[] = [
  { name: 'causal 300', b: 2, sq: 300, sk: 300, h: 2, opts: { causal: true } },
  { name: 'causal sq 200 < sk 260', b: 1, sq: 200, sk: 260, h: 3, opts: { causal: true } },
  { name: 'causal sq 260 > sk 200', b: 1, sq: 260, sk: 200, h: 2, opts: { causal: true } },
  { name: 'window 40 left, 0 right', b: 1, sq: 257, sk: 257, h: 2, opts: { window: [40, 0] } },
  { name: 'causal softcap', b: 1, sq: 190, sk: 190, h: 2, opts: { causal: true, softcap: 4 } },
  { name: 'not causal 150', b: 2, sq: 150, sk: 170, h: 1, opts: {} },
];

const tunings: ForwardTuning[] = [
  { tile: 16, pairs: false },
  { tile: 16, pairs: true },
  { tile: 8, pairs: false },
  { tile: 8, pairs: true },
  { tile: 16, longestFirst: true },
  { tile: 16, reverse: true },
  { tile: 16, diagonalSkip: true },
  { tile: 8, diagonalSkip: true },
];

describe('forward tunings', () => {
  for (const t of tunings) {
    test(JSON.stringify(t), { timeout: 600_000 }, async () => {
      const be = await createWebGPUBackend({ headDimBuckets: [64], forward: t });
      backends.push(be);
      for (const c of shapes) {
        const q = seededTensor([c.b, c.sq, c.h, 64], 1);
        const k = seededTensor([c.b, c.sk, c.h, 64], 2);
        const v = seededTensor([c.b, c.sk, c.h, 64], 3);
        const r = await be.forward(q, k, v, { ...c.opts, returnLse: true });
        const ref = referenceForward64(q, k, v, c.opts);
        expect(maxErr(r.out.data as Float32Array, ref.out), c.name).toBeLessThan(2e-5);
        expect(maxErr(r.lse as Float32Array, ref.lse), c.name).toBeLessThan(2e-5);
      }
      const failures: string[] = [];
      let ran = 0;
      for (const c of conformanceCases({ quick: true })) {
        const sp = c.spec;
        if (c.kind !== 'forward' || !sp || sp.dtype !== 'float32' || sp.d > 64) continue;
        const sq = sp.varlen ? Math.max(...sp.varlen.q) : sp.sq;
        if (sq <= 16) continue;
        const res = await runCase(be, c);
        ran++;
        if (res.status === 'fail') failures.push(`${res.name}: ${res.message}`);
      }
      expect(failures).toEqual([]);
      expect(ran).toBeGreaterThan(10);
    });
  }
});
