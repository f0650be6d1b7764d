import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import {
  type AttentionOptions,
  getBackend,
  type HostTensor,
  isFlashAttentionError,
  listBackends,
} from '@flashattn/core';
import { type CpuBackend, createCpuBackend, sharedTensor } from '@flashattn/cpu';
import { afterAll, describe, expect, it } from 'vitest';
import { CASES } from './cases.js';
import { bitsOf, inputsOf, randomTensor } from './helpers.js';

const DIST = fileURLToPath(new URL('../dist/', import.meta.url));

// parallelThreshold 0: every call goes to the workers, however small. `two` and `three` let the
// calling thread take a share (Node's default); `twoWorkers` waits for two workers instead.
const one = createCpuBackend({ threads: 1, blockQ: 12, blockK: 16 });
const two = createCpuBackend({ threads: 2, blockQ: 12, blockK: 16, parallelThreshold: 0 });
const three = createCpuBackend({ threads: 3, blockQ: 12, blockK: 16, parallelThreshold: 0 });
const twoWorkers = createCpuBackend({
  threads: 2,
  blockQ: 12,
  blockK: 16,
  parallelThreshold: 0,
  callerComputes: false,
});
afterAll(async () => {
  await Promise.all([one.dispose(), two.dispose(), three.dispose(), twoWorkers.dispose()]);
});

async function everything(
  backend: CpuBackend,
  q: HostTensor,
  k: HostTensor,
  v: HostTensor,
  options: AttentionOptions,
) {
  const fwd = await backend.forward(q, k, v, { ...options, returnLse: true });
  const dout = randomTensor([...q.shape], q.dtype, 4242);
  const g = await backend.backward(dout, q, k, v, fwd.out, fwd.lse!, options);
  return [fwd.out, fwd.lse!, g.dq, g.dk, g.dv].map(bitsOf);
}

describe('thread-count independence (bit-identical results)', () => {
  const picked = CASES.filter((c) =>
    [
      'gqa d=31 sq<sk',
      'causal sq>sk (empty rows)',
      'window',
      'alibi',
      'dropout',
      'varlen',
      'paged',
      'paged, shared prefix page',
      'bhsd',
      'bias full',
      'kv cache (seqlensK)',
    ].includes(c.name),
  );
  it.each(picked)('$name: threads 1, 2 and 3 agree bit for bit', async (c) => {
    const { q, k, v } = inputsOf(c, 'float32');
    const a = await everything(one, q, k, v, c.options ?? {});
    const b = await everything(two, q, k, v, c.options ?? {});
    const d = await everything(three, q, k, v, c.options ?? {});
    const w = await everything(twoWorkers, q, k, v, c.options ?? {});
    expect(two.info).toMatch(/^2 threads: the calling thread and 1 worker \(worker_threads/);
    expect(three.info).toMatch(/^3 threads: the calling thread and 2 workers/);
    expect(twoWorkers.info).toMatch(/^2 worker threads \(worker_threads/);
    for (let n = 0; n < a.length; n++) {
      expect(b[n], `output ${n}, 2 threads`).toEqual(a[n]);
      expect(d[n], `output ${n}, 3 threads`).toEqual(a[n]);
      expect(w[n], `output ${n}, 2 workers`).toEqual(a[n]);
    }
  });

  it('a larger problem at the default block sizes, bfloat16, causal', async () => {
    const def1 = createCpuBackend({ threads: 1 });
    const def2 = createCpuBackend({ threads: 2, parallelThreshold: 0 });
    const q = randomTensor([2, 157, 4, 64], 'bfloat16', 1);
    const k = randomTensor([2, 211, 2, 64], 'bfloat16', 2);
    const v = randomTensor([2, 211, 2, 64], 'bfloat16', 3);
    const a = await everything(def1, q, k, v, { causal: true });
    const b = await everything(def2, q, k, v, { causal: true });
    expect(b).toEqual(a);
    await Promise.all([def1.dispose(), def2.dispose()]);
  });

  it('repeated backward calls are bit-identical', async () => {
    const c = CASES.find((x) => x.name === 'dropout')!;
    const { q, k, v } = inputsOf(c, 'float32');
    const first = await everything(two, q, k, v, c.options!);
    for (let r = 0; r < 3; r++) expect(await everything(two, q, k, v, c.options!)).toEqual(first);
  });

  it('inputs already on SharedArrayBuffers give the same results', async () => {
    const c = CASES.find((x) => x.name === 'gqa d=31 sq<sk')!;
    const { q, k, v } = inputsOf(c, 'float32');
    const share = (t: HostTensor) => {
      const s = sharedTensor(t.dtype, t.shape);
      s.data.set(t.data);
      return s;
    };
    expect(await everything(two, share(q), share(k), share(v), {})).toEqual(
      await everything(one, q, k, v, {}),
    );
  });
});

describe('concurrency, errors and lifecycle', () => {
  it('concurrent calls give the same results as sequential ones', async () => {
    const inputs = [0, 1, 2, 3, 4, 5].map((n) => ({
      q: randomTensor([1, 40 + n, 2, 16], 'float32', 10 * n + 1),
      k: randomTensor([1, 50, 1, 16], 'float32', 10 * n + 2),
      v: randomTensor([1, 50, 1, 16], 'float32', 10 * n + 3),
      options: { causal: n % 2 === 0, returnLse: true } as AttentionOptions,
    }));
    const sequential = [];
    for (const x of inputs) sequential.push(await two.forward(x.q, x.k, x.v, x.options));
    const concurrent = await Promise.all(inputs.map((x) => two.forward(x.q, x.k, x.v, x.options)));
    const local = await Promise.all(inputs.map((x) => one.forward(x.q, x.k, x.v, x.options)));
    const workers = await Promise.all(inputs.map((x) => twoWorkers.forward(x.q, x.k, x.v, x.options)));
    for (let n = 0; n < inputs.length; n++) {
      expect(bitsOf(concurrent[n].out)).toEqual(bitsOf(sequential[n].out));
      expect(bitsOf(workers[n].out)).toEqual(bitsOf(sequential[n].out));
      expect(bitsOf(local[n].out)).toEqual(bitsOf(sequential[n].out));
      expect(bitsOf(concurrent[n].lse!)).toEqual(bitsOf(sequential[n].lse!));
    }
  });

  it('bad input throws a FlashAttentionError before any work', async () => {
    const q = randomTensor([1, 4, 2, 8], 'float32', 1);
    const k = randomTensor([1, 4, 1, 8], 'float32', 2);
    const v = randomTensor([1, 4, 1, 8], 'float32', 3);
    const codeOf = async (p: Promise<unknown>) => {
      try {
        await p;
        return 'no error';
      } catch (e) {
        return isFlashAttentionError(e) ? e.code : String(e);
      }
    };
    const k3 = randomTensor([1, 4, 3, 8], 'float32', 2);
    expect(await codeOf(two.forward(q, k3, k3))).toBe('HEADS_NOT_DIVISIBLE');
    expect(await codeOf(two.forward(q, k, randomTensor([1, 5, 1, 8], 'float32', 3)))).toBe('SHAPE_MISMATCH');
    expect(await codeOf(two.forward(q, k, v, { window: [1, 2, 3] as unknown as [number, number] }))).toBe(
      'INVALID_OPTION',
    );
    expect(await codeOf(two.forward(q, k, v, { threads: 2 } as AttentionOptions))).toBe('INVALID_OPTION');
    const big = randomTensor([1, 1, 1, 300], 'float32', 1);
    expect(await codeOf(two.forward(big, big, big))).toBe('HEAD_DIM_UNSUPPORTED');
    expect(await codeOf(two.backward(q, q, k, v, q, new Float32Array(3)))).toBe('SHAPE_MISMATCH');
    expect(() => createCpuBackend({ threads: 0 })).toThrow(/threads/);
    expect(() => createCpuBackend({ callerComputes: 1 as unknown as boolean })).toThrow(/callerComputes/);
    expect(() => createCpuBackend({ blockQ: 2.5 })).toThrow(/blockQ/);
  });

  it('after dispose() every call throws DISPOSED', async () => {
    const b = createCpuBackend({ threads: 2, parallelThreshold: 0 });
    const q = randomTensor([1, 30, 2, 8], 'float32', 1);
    await b.forward(q, q, q);
    expect(b.info).toMatch(/2 threads: the calling thread and 1 worker/);
    await b.dispose();
    await expect(b.forward(q, q, q)).rejects.toMatchObject({ code: 'DISPOSED' });
    await expect(b.backward(q, q, q, q, q, new Float32Array(60))).rejects.toMatchObject({ code: 'DISPOSED' });
    await b.dispose(); // twice is fine
  });

  it('a call in flight when dispose() is called settles (result or DISPOSED), never hangs', async () => {
    const b = createCpuBackend({ threads: 2, parallelThreshold: 0 });
    const q = randomTensor([1, 200, 4, 32], 'float32', 1);
    await b.ready();
    const call = b.forward(q, q, q).then(
      () => 'ok',
      (e) => (isFlashAttentionError(e) ? e.code : String(e)),
    );
    await b.dispose();
    expect(['ok', 'DISPOSED']).toContain(await call);
  });

  it('registers as cpu at priority 10 and says how it runs in listBackends()', async () => {
    const list = await listBackends();
    const cpu = list.find((x) => x.name === 'cpu');
    expect(cpu).toMatchObject({ name: 'cpu', priority: 10, available: true });
    expect((cpu as { note?: string }).note).toMatch(/\d+ threads: the calling thread|single-threaded/);
    const b = await getBackend('cpu');
    expect(b.name).toBe('cpu');
  });
});

describe('the built package in a fresh process', () => {
  const script = (src: string, type: 'module' | 'commonjs') =>
    spawnSync(
      process.execPath,
      [type === 'module' ? '--input-type=module' : '--input-type=commonjs', '-e', src],
      {
        encoding: 'utf8',
        timeout: 60_000,
      },
    );
  const body = `
    const q = { dtype: 'float32', shape: [1, 64, 2, 16], data: Float32Array.from({ length: 2048 }, (_, i) => Math.sin(i)) };
    const b = m.createCpuBackend({ threads: 2, parallelThreshold: 0 });
    const r = await b.forward(q, q, q, { causal: true });
    console.log(JSON.stringify({ info: b.info, sum: r.out.data.reduce((a, x) => a + x, 0) }));
  `;

  it('ESM: the idle worker pool does not keep the process alive (no dispose)', () => {
    const r = script(`const m = await import(${JSON.stringify(`${DIST}index.js`)}); ${body}`, 'module');
    expect(r.error).toBeUndefined();
    expect(r.status, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout).info).toMatch(/2 threads: the calling thread and 1 worker/);
  });

  it('CJS: require() works and uses the same worker entry', () => {
    const esm = script(`const m = await import(${JSON.stringify(`${DIST}index.js`)}); ${body}`, 'module');
    const cjs = script(
      `const m = require(${JSON.stringify(`${DIST}index.cjs`)}); (async () => { ${body} })();`,
      'commonjs',
    );
    expect(cjs.status, cjs.stderr).toBe(0);
    const a = JSON.parse(esm.stdout);
    const b = JSON.parse(cjs.stdout);
    expect(b.info).toMatch(/2 threads: the calling thread and 1 worker/);
    expect(b.sum).toBe(a.sum);
  });
});
