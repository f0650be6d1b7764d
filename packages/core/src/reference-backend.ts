/**
 * The `reference` backend (priority 0): float64 arithmetic with O(N) memory, every feature, every dtype.
 * Slow, exact, always there: the suite runs against it from day one and 'auto' falls back to it.
 */
import { fromFloat32 } from './dtype.js';
import { fail } from './errors.js';
import { resolveBackwardProblem, resolveProblem } from './problem.js';
import { referenceBackwardTwoPass, referenceForwardOnline } from './reference.js';
import { registerBackend } from './registry.js';
import {
  ALL_FEATURES,
  type AttentionOptions,
  type Backend,
  type BackwardResult,
  type Capabilities,
  DTYPES,
  type ForwardResult,
  type HostTensor,
  isDeviceTensor,
  type LseOf,
  type Tensor,
} from './types.js';

/** Host backends take host tensors only: a device tensor must be downloaded by its own backend first. */
export function requireHostTensors(backend: string, tensors: Record<string, unknown>): void {
  for (const [name, t] of Object.entries(tensors)) {
    if (isDeviceTensor(t)) {
      fail(
        'INVALID_OPTION',
        `${name} is a device tensor of backend ${t.backend}; ${backend} takes host tensors (download it first)`,
      );
    }
  }
}

export function toHost(data: Float64Array, dtype: HostTensor['dtype'], shape: readonly number[]): HostTensor {
  return fromFloat32(Float32Array.from(data), dtype, shape);
}

export function createReferenceBackend(): Backend {
  const capabilities: Capabilities = { dtypes: [...DTYPES], maxHeadDim: 256, features: [...ALL_FEATURES] };
  let disposed = false;
  const ctx = { capabilities, backend: 'reference' };
  const alive = () => {
    if (disposed) fail('DISPOSED', 'the reference backend was disposed');
  };
  return {
    name: 'reference',
    capabilities,
    async forward<T extends Tensor>(
      q: T,
      k: T,
      v: T,
      options: AttentionOptions = {},
    ): Promise<ForwardResult<T>> {
      alive();
      requireHostTensors('reference', { q, k, v, bias: options.bias });
      const p = resolveProblem(q, k, v, options, ctx);
      const r = referenceForwardOnline(q as HostTensor, k as HostTensor, v as HostTensor, options);
      const out = toHost(r.out, p.dtype, p.outShape);
      const result: ForwardResult<HostTensor> = { out };
      if (p.returnLse) result.lse = Float32Array.from(r.lse);
      return result as unknown as ForwardResult<T>;
    },
    async backward<T extends Tensor>(
      dout: T,
      q: T,
      k: T,
      v: T,
      out: T,
      lse: LseOf<T>,
      options: AttentionOptions = {},
    ): Promise<BackwardResult<T>> {
      alive();
      requireHostTensors('reference', { dout, q, k, v, out, lse, bias: options.bias });
      const p = resolveBackwardProblem(dout, q, k, v, out, lse as Float32Array, options, ctx);
      const g = referenceBackwardTwoPass(
        dout as HostTensor,
        q as HostTensor,
        k as HostTensor,
        v as HostTensor,
        options,
      );
      return {
        dq: toHost(g.dq, p.dtype, q.shape),
        dk: toHost(g.dk, p.dtype, k.shape),
        dv: toHost(g.dv, p.dtype, v.shape),
      } as unknown as BackwardResult<T>;
    },
    async dispose() {
      disposed = true;
    },
  };
}

export async function referenceBackendFactory(): Promise<Backend> {
  return createReferenceBackend();
}

/** Registers the reference backend at priority 0 (core does not do this on import: it has no side effects). */
export function registerReferenceBackend(): void {
  registerBackend('reference', referenceBackendFactory, 0);
}
