import { type DType, toFloat32 } from '@flashattn/core';
import { createCpuBackend } from '@flashattn/cpu';
import { afterAll, describe, expect, it } from 'vitest';
import { BLOCKS, CASES } from './cases.js';
import { checkForward, inputsOf, randomTensor } from './helpers.js';

const backends = BLOCKS.map((blocks) => createCpuBackend({ threads: 1, ...blocks }));
afterAll(async () => {
  for (const b of backends) await b.dispose();
});

describe.each(BLOCKS.map((blocks, n) => ({ blocks, n, label: JSON.stringify(blocks) })))(
  'forward, blocks $label',
  ({ n }) => {
    const backend = backends[n];
    it.each(CASES)('$name', async (c) => {
      const dtype: DType = 'float32';
      const { q, k, v } = inputsOf(c, dtype);
      const got = await backend.forward(q, k, v, { ...c.options, returnLse: true });
      checkForward(c, dtype, q, k, v, got);
    });
  },
);

describe('forward, 16-bit dtypes', () => {
  const backend = createCpuBackend({ threads: 1, blockQ: 12, blockK: 16 });
  afterAll(() => backend.dispose());
  const picked = CASES.filter((c) => !c.name.startsWith('large') && !c.name.includes('Infinity'));
  for (const dtype of ['float16', 'bfloat16'] as const) {
    it.each(picked)(`${dtype} $name`, async (c) => {
      const { q, k, v } = inputsOf(c, dtype);
      const opts = { ...c.options };
      // A bias of the inputs' dtype.
      if (opts.bias && 'data' in opts.bias && opts.bias.dtype === 'float32') {
        const t = opts.bias;
        opts.bias = randomTensor([...t.shape], dtype, 5, 2);
      }
      const got = await backend.forward(q, k, v, { ...opts, returnLse: true });
      expect(got.out.data).toBeInstanceOf(Uint16Array);
      checkForward({ ...c, options: opts }, dtype, q, k, v, got);
    });
  }
});

describe('forward edge cases', () => {
  const backend = createCpuBackend({ threads: 1, blockQ: 8, blockK: 8 });
  afterAll(() => backend.dispose());

  it('rows without keys give out = 0 and lse = -Infinity, never NaN', async () => {
    const c = CASES.find((x) => x.name.startsWith('causal sq>sk'))!;
    const { q, k, v } = inputsOf(c, 'float32');
    const { out, lse } = await backend.forward(q, k, v, { causal: true, returnLse: true });
    // Rows 0..sq-sk-1 of every head see nothing.
    const empty = c.sq - c.sk;
    for (let h = 0; h < c.hq; h++) {
      for (let i = 0; i < c.sq; i++) {
        const l = lse![h * c.sq + i];
        if (i < empty) expect(l).toBe(Number.NEGATIVE_INFINITY);
        else expect(Number.isFinite(l)).toBe(true);
      }
    }
    const o = toFloat32(out);
    expect(o.every((x) => !Number.isNaN(x))).toBe(true);
    for (let i = 0; i < empty; i++)
      for (let x = 0; x < c.hq * c.d; x++) expect(o[i * c.hq * c.d + x]).toBe(0);
  });

  it('NaN spreads to the rows it touches only', async () => {
    const q = randomTensor([1, 24, 1, 8], 'float32', 1);
    const k = randomTensor([1, 24, 1, 8], 'float32', 2);
    const v = randomTensor([1, 24, 1, 8], 'float32', 3);
    (q.data as Float32Array)[5 * 8 + 3] = Number.NaN; // query row 5
    (v.data as Float32Array)[17 * 8] = Number.NaN; // key 17: causal rows >= 17 see it
    const { out, lse } = await backend.forward(q, k, v, { causal: true, returnLse: true });
    const o = out.data as Float32Array;
    for (let i = 0; i < 24; i++) {
      const rowNaN = o.subarray(i * 8, i * 8 + 8).some(Number.isNaN);
      expect(rowNaN, `row ${i}`).toBe(i === 5 || i >= 17);
      expect(Number.isNaN(lse![i]), `lse ${i}`).toBe(i === 5);
    }
  });

  it('sq = 0, sk = 0 and batch = 0 return empty or zero results', async () => {
    const e = await backend.forward(
      randomTensor([1, 0, 2, 8], 'float32', 1),
      randomTensor([1, 5, 2, 8], 'float32', 2),
      randomTensor([1, 5, 2, 8], 'float32', 3),
      { returnLse: true },
    );
    expect(e.out.data.length).toBe(0);
    const z = await backend.forward(
      randomTensor([1, 3, 2, 8], 'float32', 1),
      randomTensor([1, 0, 2, 8], 'float32', 2),
      randomTensor([1, 0, 2, 8], 'float32', 3),
      { returnLse: true },
    );
    expect([...z.out.data].every((x) => x === 0)).toBe(true);
    expect([...z.lse!].every((x) => x === Number.NEGATIVE_INFINITY)).toBe(true);
  });

  it('never writes into the inputs', async () => {
    const c = CASES.find((x) => x.name === 'bias full')!;
    const { q, k, v } = inputsOf(c, 'float32');
    const copies = [q, k, v, c.options!.bias as { data: Float32Array }].map((t) => t.data.slice());
    await backend.forward(q, k, v, { ...c.options, returnLse: true });
    const after = [q, k, v, c.options!.bias as { data: Float32Array }];
    for (let n = 0; n < after.length; n++) expect(after[n].data).toEqual(copies[n]);
  });
});
