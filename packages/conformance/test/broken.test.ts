/**
 * The suite can fail: deliberately broken backends, each with one mistake a real kernel could make,
 * and for each the proof that runCase reports 'fail' for at least one case that exercises it.
 */
import {
  type AttentionOptions,
  type Backend,
  FlashAttentionError,
  type HostTensor,
  isFlashAttentionError,
  type Tensor,
} from '@flashattn/core';
import { describe, expect, it } from 'vitest';
import { type CaseResult, type ConformanceCase, conformanceCases, runCase } from '../src/index.js';
import { type Bugs, createSimpleBackend } from './simple-backend.js';

const CASES = conformanceCases({ quick: true });

const has = (c: ConformanceCase, tag: string) => c.tags.includes(tag);
const isForward = (c: ConformanceCase) => c.kind === 'forward';

async function runAll(
  backend: Backend,
  cases: ConformanceCase[],
  factory?: () => Promise<Backend>,
): Promise<CaseResult[]> {
  const results: CaseResult[] = [];
  for (const c of cases) results.push(await runCase(backend, c, { factory }));
  return results;
}

function summary(results: CaseResult[]): string {
  const failed = results.filter((r) => r.status === 'fail');
  return `${failed.length} of ${results.length} relevant cases fail; first: ${failed[0]?.message?.split('\n').slice(0, 2).join(' ')}`;
}

interface Broken {
  bug: string;
  make: () => Backend;
  relevant: (c: ConformanceCase) => boolean;
}

const kernelBugs: (Broken & { bugs?: Bugs })[] = [
  {
    bug: 'online softmax without the rescale when a later key block raises the max',
    make: () => createSimpleBackend({ noRescale: true }),
    relevant: (c) => isForward(c) && !has(c, 'nan'),
  },
  {
    bug: 'causal mask off by one (j <= i + off + 1)',
    make: () => createSimpleBackend({ causalOffByOne: true }),
    relevant: (c) => has(c, 'causal') && (c.kind === 'forward' || c.kind === 'backward'),
  },
  {
    bug: 'dropout stream with Philox counter words swapped (i, j instead of j, i)',
    make: () => createSimpleBackend({ dropoutSwapped: true }),
    relevant: (c) => has(c, 'dropout'),
  },
  {
    bug: 'GQA key head h % hk instead of h / (hq / hk)',
    make: () => createSimpleBackend({ gqaModulo: true }),
    relevant: (c) => has(c, 'gqa') && (c.kind === 'forward' || c.kind === 'backward'),
  },
  {
    bug: 'lse off by a constant (+1e-4)',
    make: () => createSimpleBackend({ lseShift: 1e-4 }),
    relevant: (c) => isForward(c) && has(c, 'float32'),
  },
  {
    bug: 'NaN on a fully masked row (acc / l with l = 0)',
    make: () => createSimpleBackend({ nanMaskedRow: true }),
    relevant: (c) => has(c, 'masked'),
  },
];

// Behaviour bugs: wrappers around the honest simple backend.
function wrap(inner: Backend, over: Partial<Backend>): Backend {
  return {
    name: `${inner.name}-broken`,
    capabilities: inner.capabilities,
    forward: inner.forward.bind(inner),
    backward: inner.backward.bind(inner),
    dispose: inner.dispose.bind(inner),
    ...over,
  } as Backend;
}

const sleep = () => new Promise((r) => setTimeout(r, 0));

const behaviourBugs: Broken[] = [
  {
    bug: 'writes into the caller’s q (zeroes q.data[0] after the call)',
    make: () => {
      const inner = createSimpleBackend();
      return wrap(inner, {
        async forward<T extends Tensor>(q: T, k: T, v: T, o?: AttentionOptions) {
          const r = await inner.forward(q, k, v, o);
          (q as unknown as HostTensor).data[0] = 0;
          return r;
        },
      });
    },
    relevant: (c) => isForward(c) || c.kind === 'immutability',
  },
  {
    bug: 'non-deterministic backward (the second call differs in one bit of dq)',
    make: () => {
      const inner = createSimpleBackend();
      let calls = 0;
      return wrap(inner, {
        backward: (async (...args: Parameters<Backend['backward']>) => {
          const g = await inner.backward(...args);
          if (++calls % 2 === 0) (g.dq as HostTensor).data[0] ^= 1;
          return g;
        }) as Backend['backward'],
      });
    },
    relevant: (c) => c.kind === 'backward',
  },
  {
    bug: 'a shared output buffer across awaits (concurrent calls see each other’s results)',
    make: () => {
      const inner = createSimpleBackend();
      let shared: HostTensor | null = null;
      return wrap(inner, {
        async forward<T extends Tensor>(q: T, k: T, v: T, o?: AttentionOptions) {
          const r = await inner.forward(q, k, v, o);
          shared = r.out as unknown as HostTensor;
          await sleep();
          const out = shared as HostTensor;
          return { ...r, out: { ...out, data: out.data.slice() } as unknown as T };
        },
      });
    },
    relevant: (c) => c.kind === 'concurrency',
  },
  {
    bug: 'dispose() that does nothing',
    make: () => {
      const inner = createSimpleBackend();
      return wrap(inner, { dispose: async () => {} });
    },
    relevant: (c) => c.kind === 'disposed',
  },
  {
    bug: 'bad input reported with a plain Error instead of FlashAttentionError',
    make: () => {
      const inner = createSimpleBackend();
      const plain = (e: unknown) => (isFlashAttentionError(e) ? new Error('bad input') : e);
      return wrap(inner, {
        forward: ((...a: Parameters<Backend['forward']>) =>
          inner.forward(...a).catch((e) => Promise.reject(plain(e)))) as Backend['forward'],
      });
    },
    relevant: (c) => c.kind === 'error',
  },
  {
    bug: 'dropout without the 1/(1-p) scale of kept elements',
    make: () => {
      const inner = createSimpleBackend();
      return wrap(inner, {
        async forward<T extends Tensor>(q: T, k: T, v: T, o: AttentionOptions = {}) {
          if (!o.dropout) return inner.forward(q, k, v, o);
          const r = await inner.forward(q, k, v, o);
          const data = (r.out as unknown as HostTensor).data;
          if (data instanceof Float32Array) for (let t = 0; t < data.length; t++) data[t] *= 1 - o.dropout.p;
          return r;
        },
      });
    },
    relevant: (c) => has(c, 'dropout'),
  },
  {
    bug: 'claims every feature but answers paged KV with UNSUPPORTED_FEATURE',
    make: () => {
      const inner = createSimpleBackend();
      return wrap(inner, {
        async forward<T extends Tensor>(q: T, k: T, v: T, o: AttentionOptions = {}) {
          if (o.blockTable)
            throw new FlashAttentionError('UNSUPPORTED_FEATURE', 'paged KV is not implemented');
          return inner.forward(q, k, v, o);
        },
      });
    },
    relevant: (c) => has(c, 'paged') && c.kind === 'forward',
  },
];

describe('the honest simple float32 backend passes what the broken ones fail', () => {
  it('every forward/backward case tagged for a bug below passes on the unbroken kernel', async () => {
    const relevant = CASES.filter((c) => [...kernelBugs, ...behaviourBugs].some((b) => b.relevant(c)));
    const results = await runAll(createSimpleBackend(), relevant, async () => createSimpleBackend());
    const failed = results.filter((r) => r.status !== 'pass');
    expect(failed.map((r) => r.message)).toEqual([]);
  });
});

describe('broken backends are caught', () => {
  for (const b of [...kernelBugs, ...behaviourBugs]) {
    it(b.bug, async () => {
      const relevant = CASES.filter(b.relevant);
      expect(relevant.length).toBeGreaterThan(0);
      const results = await runAll(b.make(), relevant, async () => b.make());
      const failed = results.filter((r) => r.status === 'fail');
      console.info(`[broken] ${b.bug}: ${summary(results)}`);
      expect(failed.length, `no relevant case caught: ${b.bug}`).toBeGreaterThan(0);
    });
  }
});

describe('a backend lacking features', () => {
  it('is reported unsupported (not failed) where it refuses them, and failed where it returns garbage', async () => {
    const inner = createSimpleBackend();
    const limited: Backend = wrap(inner, {
      capabilities: { dtypes: ['float32'], maxHeadDim: 128, features: ['causal', 'gqa', 'lse', 'backward'] },
    });
    // Core's resolveProblem enforces capabilities only when told them; this wrapper validates like a real backend would.
    const ctxBackend = createSimpleBackendWithCaps(limited.capabilities);
    const results = await runAll(ctxBackend, CASES, async () =>
      createSimpleBackendWithCaps(limited.capabilities),
    );
    const byStatus = (s: string) => results.filter((r) => r.status === s);
    expect(byStatus('fail').map((r) => r.message)).toEqual([]);
    const unsupported = byStatus('unsupported');
    expect(unsupported.some((r) => r.name.includes('paged KV'))).toBe(true);
    expect(unsupported.some((r) => r.name.includes('head dim 256'))).toBe(true);
    expect(unsupported.some((r) => r.name.includes('float16'))).toBe(true);
    expect(results.find((r) => r.name.startsWith('error UNSUPPORTED_FEATURE'))?.status).toBe('pass');
    console.info(
      `[limited] ${byStatus('pass').length} pass, ${unsupported.length} unsupported of ${results.length}`,
    );

    // The same capabilities, but a kernel that ignores them and computes without ALiBi: a failure.
    const liar = wrap(ctxBackend, {
      async forward<T extends Tensor>(q: T, k: T, v: T, o: AttentionOptions = {}) {
        const { alibiSlopes: _ignored, ...rest } = o;
        return inner.forward(q, k, v, rest);
      },
    });
    const alibi = CASES.filter((c) => has(c, 'alibi') && c.kind === 'forward');
    const liarResults = await runAll(liar, alibi);
    expect(liarResults.every((r) => r.status === 'fail')).toBe(true);
    expect(liarResults[0].message).toContain('must throw UNSUPPORTED_FEATURE');
  });
});

function createSimpleBackendWithCaps(capabilities: Backend['capabilities']): Backend {
  return createSimpleBackend({}, 'simple-limited', {}, capabilities);
}
