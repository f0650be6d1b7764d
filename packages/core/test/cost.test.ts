import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  activationBytesFlash,
  activationBytesStandard,
  allowedPairs,
  attentionFlops,
  backwardFlops,
  flashBlockSizes,
  forwardFlops,
  gpuPresets,
  hbmAccessesFlash,
  hbmAccessesStandard,
  onChipElements,
} from '../src/cost.js';

/** Allowed pairs counted one by one from the SPEC §3 rule (bottom-right aligned causal mask). */
function bruteForcePairs(sq: number, sk: number, causal: boolean): number {
  const off = sk - sq;
  let n = 0;
  for (let i = 0; i < sq; i++) {
    for (let j = 0; j < sk; j++) if (!causal || j <= i + off) n++;
  }
  return n;
}

describe('block sizes and HBM accesses', () => {
  it('Bc = ceil(M / 4d), Br = min(Bc, d)', () => {
    expect(flashBlockSizes(100, 8)).toEqual({ Bc: 4, Br: 4 });
    expect(flashBlockSizes(1024, 16)).toEqual({ Bc: 16, Br: 16 });
    expect(flashBlockSizes(1000, 3)).toEqual({ Bc: 84, Br: 3 });
    // H100: 228 KiB of shared memory = 116,736 half-precision elements; d = 64 -> 456 and 64.
    expect(flashBlockSizes(116736, 64)).toEqual({ Bc: 456, Br: 64 });
  });

  it('standard: N·d + N²; flash: N²·d²/M', () => {
    expect(hbmAccessesStandard(1024, 64)).toBe(65536 + 1048576);
    expect(hbmAccessesStandard(1, 1)).toBe(2);
    expect(hbmAccessesFlash(1024, 64, 65536)).toBe(65536);
    expect(hbmAccessesFlash(2048, 128, 100000)).toBeCloseTo((2048 * 2048 * 128 * 128) / 100000, 6);
  });

  it('flash needs fewer accesses once M is well above d² (the paper’s claim)', () => {
    const d = 64;
    const M = 100 * 1024;
    for (const N of [1024, 4096, 16384])
      expect(hbmAccessesFlash(N, d, M)).toBeLessThan(hbmAccessesStandard(N, d));
  });
});

describe('activation memory', () => {
  it('standard: 11·s·b·h + 5·a·s²·b bytes', () => {
    expect(activationBytesStandard({ seq: 2, batch: 3, hidden: 4, heads: 5 })).toBe(264 + 300);
    expect(activationBytesStandard({ seq: 1024, batch: 1, hidden: 2048, heads: 16 })).toBe(
      11 * 1024 * 2048 + 5 * 16 * 1024 * 1024,
    );
  });

  it('flash: 12·s·b·h + 4·s·b·a bytes', () => {
    expect(activationBytesFlash({ seq: 2, batch: 3, hidden: 4, heads: 5 })).toBe(288 + 120);
    expect(activationBytesFlash({ seq: 1024, batch: 1, hidden: 2048, heads: 16 })).toBe(
      12 * 1024 * 2048 + 4 * 1024 * 16,
    );
  });
});

describe('FLOPs (SPEC §9)', () => {
  it('allowed pairs by hand', () => {
    expect(allowedPairs(4, 4, false)).toBe(16);
    expect(allowedPairs(4, 4, true)).toBe(10);
    // sq < sk: rows see 4 and 5 keys.
    expect(allowedPairs(2, 5, true)).toBe(9);
    // sq > sk: the first three rows see nothing, then 1 and 2 keys.
    expect(allowedPairs(5, 2, true)).toBe(3);
    expect(allowedPairs(1, 4096, true)).toBe(4096);
    expect(allowedPairs(0, 7, true)).toBe(0);
    expect(allowedPairs(7, 0, false)).toBe(0);
  });

  it('allowed pairs equal a brute-force count for random sq, sk', () => {
    fc.assert(
      fc.property(fc.nat(300), fc.nat(300), fc.boolean(), (sq, sk, causal) => {
        expect(allowedPairs(sq, sk, causal)).toBe(bruteForcePairs(sq, sk, causal));
      }),
      { numRuns: 300 },
    );
  });

  it('4·d per allowed pair, backward 2.5×', () => {
    expect(attentionFlops({ allowedPairs: 10, headDim: 8 })).toBe(320);
    expect(attentionFlops({ allowedPairs: 10, headDim: 8, backward: true })).toBe(800);
    const shape = { batch: 2, headsQ: 3, seqQ: 4, seqK: 4, headDim: 8 };
    expect(forwardFlops(shape)).toBe(4 * 8 * 2 * 3 * 16);
    expect(forwardFlops({ ...shape, causal: true })).toBe(4 * 8 * 2 * 3 * 10);
    expect(backwardFlops({ ...shape, causal: true })).toBe(2.5 * 4 * 8 * 2 * 3 * 10);
  });

  it('causal with sq = sk is about half the dense count', () => {
    const shape = { batch: 1, headsQ: 16, seqQ: 8192, seqK: 8192, headDim: 128 };
    const ratio = forwardFlops({ ...shape, causal: true }) / forwardFlops(shape);
    expect(ratio).toBeGreaterThan(0.5);
    expect(ratio).toBeCloseTo(0.5, 3);
  });
});

describe('GPU presets', () => {
  it('carry the published figures', () => {
    const by = (prefix: string) => {
      const p = gpuPresets.find((g) => g.name.startsWith(prefix));
      if (!p) throw new Error(`no preset ${prefix}`);
      return p;
    };
    expect(by('A100')).toMatchObject({ smCount: 108, sharedMemPerSMKiB: 164, l1SharedPerSMKiB: 192 });
    expect(by('H100')).toMatchObject({ smCount: 132, sharedMemPerSMKiB: 228, l1SharedPerSMKiB: 256 });
    expect(by('H200')).toMatchObject({ smCount: 132, sharedMemPerSMKiB: 228, l1SharedPerSMKiB: 256 });
    expect(by('GeForce RTX 4090')).toMatchObject({
      smCount: 128,
      sharedMemPerSMKiB: 100,
      l1SharedPerSMKiB: 128,
    });
    expect(by('V100')).toMatchObject({ smCount: 80, sharedMemPerSMKiB: 96, l1SharedPerSMKiB: 128 });
  });

  it('are consistent and name their sources', () => {
    expect(new Set(gpuPresets.map((g) => g.name)).size).toBe(gpuPresets.length);
    for (const g of gpuPresets) {
      expect(g.sharedMemPerSMKiB).toBeLessThanOrEqual(g.l1SharedPerSMKiB);
      expect(g.smCount).toBeGreaterThan(0);
      expect(g.source).toMatch(/NVIDIA/);
    }
  });

  it('give M in elements', () => {
    const h100 = gpuPresets.find((g) => g.name.startsWith('H100'));
    expect(h100 && onChipElements(h100, 2)).toBe(116736);
    expect(h100 && onChipElements(h100, 4)).toBe(58368);
  });
});
