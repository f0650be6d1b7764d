import { afterEach, describe, expect, it } from 'vitest';
import {
  attention,
  type Backend,
  createReferenceBackend,
  FlashAttentionError,
  getBackend,
  listBackends,
  registerBackend,
  toFloat32,
  unregisterBackend,
} from '../src/index.js';
import { randomTensor } from './helpers.js';

const failing = async (): Promise<Backend> => {
  throw new FlashAttentionError('BACKEND_UNAVAILABLE', 'no adapter on this machine');
};

afterEach(() => {
  unregisterBackend('broken');
  unregisterBackend('fancy');
});

describe('registry', () => {
  it('core alone answers auto with the reference backend', async () => {
    expect((await getBackend()).name).toBe('reference');
  });

  it('auto skips a failing higher-priority backend and listBackends says why', async () => {
    registerBackend('broken', failing, 99);
    expect((await getBackend('auto')).name).toBe('reference');
    const list = await listBackends();
    expect(list[0]).toMatchObject({ name: 'broken', available: false, reason: 'no adapter on this machine' });
    expect(list.find((b) => b.name === 'reference')?.available).toBe(true);
    await expect(getBackend('broken')).rejects.toMatchObject({ code: 'BACKEND_UNAVAILABLE' });
  });

  it('auto picks the highest priority that works, once', async () => {
    let made = 0;
    registerBackend(
      'fancy',
      async () => {
        made++;
        return { ...createReferenceBackend(), name: 'fancy' };
      },
      50,
    );
    expect((await getBackend()).name).toBe('fancy');
    await getBackend('fancy');
    expect(made).toBe(1);
  });

  it('an unknown name says how to get it', async () => {
    await expect(getBackend('cuda')).rejects.toThrow(/@flashattn\/cuda/);
  });

  it('attention() runs a forward on the chosen backend; the reference rejects device tensors', async () => {
    const q = randomTensor([1, 3, 2, 4], 1);
    const { out, lse } = await attention(q, q, q, { causal: true, returnLse: true, backend: 'reference' });
    expect(out.shape).toEqual([1, 3, 2, 4]);
    expect(lse?.length).toBe(6);
    expect(toFloat32(out).every(Number.isFinite)).toBe(true);
    const dev = { kind: 'device', backend: 'webgpu', dtype: 'float32', shape: [1, 3, 2, 4] } as const;
    await expect(attention(dev, dev, dev)).rejects.toMatchObject({ code: 'INVALID_OPTION' });
  });

  it('a disposed reference backend answers DISPOSED', async () => {
    const b = createReferenceBackend();
    await b.dispose();
    const q = randomTensor([1, 1, 1, 1], 1);
    await expect(b.forward(q, q, q)).rejects.toMatchObject({ code: 'DISPOSED' });
  });
});
