import type { DType } from '@flashattn/core';
import { createCpuBackend } from '@flashattn/cpu';
import { afterAll, describe, it } from 'vitest';
import { BLOCKS, CASES } from './cases.js';
import { checkBackward, inputsOf, randomTensor } from './helpers.js';

// The backward recomputes P = exp(s - lse) from the float32 lse of the forward (SPEC §4), so with
// scores of magnitude ~1e3 the lse's rounding (~1e-4 absolute) shows in the gradients; the
// conformance suite keeps backward magnitudes small for the same reason. Forward only, then.
const GRAD_CASES = CASES.filter((c) => !c.name.startsWith('large magnitude'));

const backends = BLOCKS.map((blocks) => createCpuBackend({ threads: 1, ...blocks }));
afterAll(async () => {
  for (const b of backends) await b.dispose();
});

describe.each(BLOCKS.map((blocks, n) => ({ n, label: JSON.stringify(blocks) })))(
  'backward, blocks $label',
  ({ n }) => {
    const backend = backends[n];
    it.each(GRAD_CASES)('$name', async (c) => {
      const dtype: DType = 'float32';
      const { q, k, v } = inputsOf(c, dtype);
      const fwd = await backend.forward(q, k, v, { ...c.options, returnLse: true });
      const dout = randomTensor([...q.shape], dtype, 999);
      const got = await backend.backward(dout, q, k, v, fwd.out, fwd.lse!, c.options);
      checkBackward(c, dtype, dout, q, k, v, got);
    });
  },
);

describe('backward, 16-bit dtypes', () => {
  const backend = createCpuBackend({ threads: 1, blockQ: 12, blockK: 16 });
  afterAll(() => backend.dispose());
  const picked = GRAD_CASES.filter((c) => !c.options?.bias);
  for (const dtype of ['float16', 'bfloat16'] as const) {
    it.each(picked)(`${dtype} $name`, async (c) => {
      const { q, k, v } = inputsOf(c, dtype);
      const fwd = await backend.forward(q, k, v, { ...c.options, returnLse: true });
      const dout = randomTensor([...q.shape], dtype, 998);
      const got = await backend.backward(dout, q, k, v, fwd.out, fwd.lse!, c.options);
      checkBackward(c, dtype, dout, q, k, v, got);
    });
  }
});
