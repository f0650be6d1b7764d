/**
 * The device round-trip cases against a fake device backend (host memory behind opaque handles), and
 * a broken one that hands back host tensors for device inputs.
 */
import {
  type AttentionOptions,
  type Backend,
  type DeviceTensor,
  fail,
  type HostTensor,
  isDeviceTensor,
  type LseOf,
  type Tensor,
} from '@flashattn/core';
import { describe, expect, it } from 'vitest';
import { conformanceCases, runCase } from '../src/index.js';
import { createSimpleBackend } from './simple-backend.js';

function createFakeDevice(opts: { hostOut?: boolean } = {}): Backend {
  const inner = createSimpleBackend({}, 'fake-device');
  const store = new Map<DeviceTensor, HostTensor>();
  const put = (h: HostTensor): DeviceTensor => {
    const t: DeviceTensor = { kind: 'device', backend: 'fake-device', dtype: h.dtype, shape: [...h.shape] };
    store.set(t, { dtype: h.dtype, shape: [...h.shape], data: h.data.slice() });
    return t;
  };
  const host = (t: Tensor): HostTensor => {
    if (!isDeviceTensor(t)) return t;
    return store.get(t) ?? fail('INVALID_OPTION', 'a freed or foreign device tensor');
  };
  const wrapOut = (h: HostTensor) => (opts.hostOut ? h : put(h));
  return {
    name: 'fake-device',
    capabilities: inner.capabilities,
    async forward<T extends Tensor>(q: T, k: T, v: T, o: AttentionOptions = {}) {
      if (!isDeviceTensor(q)) return inner.forward(q, k, v, o);
      const r = await inner.forward(host(q), host(k), host(v), o);
      const lse = r.lse ? put({ dtype: 'float32', shape: [r.lse.length], data: r.lse }) : undefined;
      return { out: wrapOut(r.out), lse } as never;
    },
    async backward<T extends Tensor>(
      dout: T,
      q: T,
      k: T,
      v: T,
      out: T,
      lse: LseOf<T>,
      o: AttentionOptions = {},
    ) {
      if (!isDeviceTensor(q)) return inner.backward(dout, q, k, v, out, lse, o);
      const l = host(lse as DeviceTensor).data as Float32Array;
      const g = await inner.backward(host(dout), host(q), host(k), host(v), host(out), l, o);
      return { dq: wrapOut(g.dq), dk: wrapOut(g.dk), dv: wrapOut(g.dv) } as never;
    },
    async upload(h: HostTensor) {
      return put(h);
    },
    async download(t: Tensor) {
      const h = host(t);
      return { dtype: h.dtype, shape: [...h.shape], data: h.data.slice() };
    },
    free(t: Tensor) {
      if (isDeviceTensor(t)) store.delete(t);
    },
    dispose: () => inner.dispose(),
  };
}

describe('device round trip', () => {
  const cases = conformanceCases({ quick: true }).filter((c) => c.kind === 'device');

  it('a device backend passes upload → forward/backward → download', async () => {
    expect(cases.length).toBe(2);
    for (const c of cases) {
      const r = await runCase(createFakeDevice(), c);
      expect(r.status, r.message).toBe('pass');
      expect(r.message ?? '').not.toContain('host backend');
    }
  });

  it('device in, host out is a failure', async () => {
    for (const c of cases) {
      const r = await runCase(createFakeDevice({ hostOut: true }), c);
      expect(r.status).toBe('fail');
      expect(r.message).toContain('not a device tensor');
    }
  });
});
