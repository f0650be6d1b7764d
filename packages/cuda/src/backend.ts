/**
 * The cuda backend: @flashattn/core's Backend over the native addon. Validation is core's
 * (resolveProblem); this file flattens the Problem for the kernels, moves host tensors to the device
 * and back, and turns native rejections into FlashAttentionErrors.
 */
import {
  ALL_FEATURES,
  type AttentionOptions,
  type Backend,
  type BackwardResult,
  byteSize,
  type Capabilities,
  type DeviceTensor,
  DTYPES,
  type DType,
  dataArrayFor,
  describe,
  FlashAttentionError,
  type ForwardResult,
  fail,
  type HostTensor,
  isDeviceTensor,
  type LseOf,
  numel,
  type Problem,
  resolveBackwardProblem,
  resolveProblem,
  type Tensor,
} from '@flashattn/core';
import {
  loadAddon,
  type NativeContext,
  type NativeDesc,
  type NativeDeviceInfo,
  type NativePlan,
  type NativeStats,
  toFlashError,
} from './addon.js';

export interface CudaBackendOptions {
  /** CUDA device ordinal; default 0. */
  device?: number;
  /** Testing: run the generic (CUDA-core) kernels for every call. Default from FLASHATTN_CUDA_FORCE_GENERIC=1. */
  forceGeneric?: boolean;
  /** Benchmarks: tensor-core tile-configuration variant (builds made with FLASHATTN_CUDA_TUNE=1). */
  variant?: number;
  /**
   * false: the backward may add dQ in no fixed order where that is faster (the fused kernel's plain
   * float32 reductions, as PyTorch's FLASH backend does), so gradients can differ in their last bits
   * from call to call (SPEC §4's opt-in). Default true: bit-identical on every call.
   */
  deterministic?: boolean;
}

export interface TimingOptions {
  warmup?: number;
  iters?: number;
}

export interface Timing extends NativePlan {
  /** Device time of each timed call in milliseconds (CUDA events). */
  ms: Float64Array;
  median: number;
}

export interface CudaBackend extends Backend {
  /** The device: name, SM count, memory, compute capability, driver and runtime versions. */
  readonly device: NativeDeviceInfo;
  /** The kernel the last finished call used, its split-KV factor and its scratch bytes. */
  readonly lastPlan: NativePlan | null;
  upload(host: HostTensor): Promise<DeviceTensor>;
  download(t: Tensor): Promise<HostTensor>;
  free(t: Tensor): void;
  /** Live device buffers and bytes, the peak, and the device's free/total memory. */
  stats(): Promise<NativeStats>;
  /** Device time of forward calls on resident data (inputs uploaded once), CUDA events. */
  timeForward(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    options?: AttentionOptions,
    timing?: TimingOptions,
  ): Promise<Timing>;
  timeBackward(
    dout: Tensor,
    q: Tensor,
    k: Tensor,
    v: Tensor,
    out: Tensor,
    lse: Float32Array | DeviceTensor,
    options?: AttentionOptions,
    timing?: TimingOptions,
  ): Promise<Timing>;
  /** Device-to-device copies of `bytes` bytes: per-copy milliseconds. */
  copyBench(bytes: number, iters?: number): Promise<Float64Array>;
  /** The same device memory under another shape of as many elements (no copy; freeing either frees both). */
  view(t: DeviceTensor, shape: readonly number[]): DeviceTensor;
  /** Changes the kernel choice of later calls (testing and benchmarks). */
  configure(options: Pick<CudaBackendOptions, 'forceGeneric' | 'variant' | 'deterministic'>): void;
}

const DTYPE_CODE: Record<DType, number> = { float32: 0, float16: 1, bfloat16: 2 };

/** A tensor in device memory of one cuda backend. */
class CudaTensor implements DeviceTensor {
  readonly kind = 'device' as const;
  readonly backend = 'cuda';
  readonly shape: readonly number[];
  freed = false;
  constructor(
    readonly dtype: DType,
    shape: readonly number[],
    readonly id: number,
    readonly owner: object,
  ) {
    this.shape = Object.freeze([...shape]);
  }
}

function median(a: Float64Array): number {
  const s = Float64Array.from(a).sort();
  if (s.length === 0) return Number.NaN;
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

/** Pages that more than one (sequence, logical page) reaches: dK/dV must then be summed serially. */
function pagesShared(p: Problem): boolean {
  if (!p.blockTable) return false;
  const seen = new Set<number>();
  for (let b = 0; b < p.batch; b++) {
    const len = p.seqlensK ? p.seqlensK[b] : p.seqK;
    const pages = Math.ceil(len / p.pageSize);
    for (let i = 0; i < pages; i++) {
      const page = p.blockTable[b * p.maxPages + i];
      if (seen.has(page)) return true;
      seen.add(page);
    }
  }
  return false;
}

function describeProblem(p: Problem, ids: Record<string, number>, extra: NativeDesc): NativeDesc {
  const esize = byteSize(p.dtype);
  const bias = p.bias;
  const drop = p.dropout;
  return {
    ...ids,
    dtype: DTYPE_CODE[p.dtype],
    batch: p.batch,
    seqQ: p.seqQ,
    seqK: p.seqK,
    headsQ: p.headsQ,
    headsK: p.headsK,
    headDim: p.headDim,
    totalQ: p.totalQ,
    totalK: p.totalK,
    qSb: p.qStrides.batch,
    qSs: p.qStrides.seq,
    qSh: p.qStrides.head,
    kvSb: p.kvStrides.batch,
    kvSs: p.kvStrides.seq,
    kvSh: p.kvStrides.head,
    pageSize: p.pageSize,
    maxPages: p.maxPages,
    scale: p.scale,
    softcap: p.softcap,
    causal: p.causal ? 1 : 0,
    windowLeft: p.windowLeft,
    windowRight: p.windowRight,
    alibiSlopes: p.alibiSlopes ?? undefined,
    alibiPerBatch: p.alibiPerBatch ? 1 : 0,
    biasDtype: bias ? DTYPE_CODE[bias.tensor.dtype] : 0,
    biasS0: bias ? bias.strides[0] : 0,
    biasS1: bias ? bias.strides[1] : 0,
    biasS2: bias ? bias.strides[2] : 0,
    biasS3: bias ? bias.strides[3] : 0,
    dropout: drop ? 1 : 0,
    dropThreshold: drop ? Math.ceil(drop.p * 2 ** 32) : 0,
    keepScale: drop ? drop.keepScale : 1,
    key0: drop ? drop.key0 : 0,
    key1: drop ? drop.key1 : 0,
    dropOffset: drop ? drop.offset : 0,
    cuSeqlensQ: p.cuSeqlensQ ?? undefined,
    cuSeqlensK: p.cuSeqlensK ?? undefined,
    seqlensK: p.seqlensK ?? undefined,
    blockTable: p.blockTable ?? undefined,
    outBytes: numel(p.outShape) * esize,
    lseBytes: p.lseLength * 4,
    kvBytes: p.totalK * p.headsK * p.headDim * esize,
    ...extra,
  };
}

function checkHostTensor(name: string, t: unknown): asserts t is HostTensor {
  const x = t as HostTensor;
  if (typeof x !== 'object' || x === null || !DTYPES.includes(x.dtype)) {
    fail(
      'INVALID_DTYPE',
      `${name} must be a tensor with dtype ${DTYPES.join(', ')}, got ${describe(x?.dtype ?? x)}`,
    );
  }
  if (!Array.isArray(x.shape) || x.shape.some((s) => !Number.isSafeInteger(s) || s < 0)) {
    fail(
      'INVALID_SHAPE',
      `${name}.shape must be an array of non-negative integers, got ${describe(x.shape)}`,
    );
  }
  const want = x.dtype === 'float32' ? Float32Array : Uint16Array;
  if (!(x.data instanceof want))
    fail('INVALID_DTYPE', `${name}.data must be a ${want.name} for ${x.dtype}, got ${describe(x.data)}`);
  if (x.data.length !== numel(x.shape)) {
    fail(
      'INVALID_SHAPE',
      `${name}.data has ${x.data.length} elements but shape ${describe(x.shape)} needs ${numel(x.shape)}`,
    );
  }
}

/**
 * Creates the backend on CUDA device `options.device` (default 0). Throws BACKEND_UNAVAILABLE whose
 * message begins with "not built", "no driver" or "no GPU" when it cannot.
 */
export async function createCudaBackend(options: CudaBackendOptions = {}): Promise<CudaBackend> {
  const device = options.device ?? 0;
  if (!Number.isSafeInteger(device) || device < 0) {
    fail('INVALID_OPTION', `device must be a non-negative integer, got ${describe(device)}`);
  }
  const addon = loadAddon();
  return createCudaBackendWith(new addon.Context(device), options);
}

/** The backend over a given native context (tests pass a stand-in for the addon). */
export async function createCudaBackendWith(
  native: NativeContext,
  options: CudaBackendOptions = {},
): Promise<CudaBackend> {
  const forceGeneric = options.forceGeneric ?? process.env.FLASHATTN_CUDA_FORCE_GENERIC === '1';
  const variant = options.variant ?? 0;
  const checkDeterministic = (v: unknown): boolean => {
    if (v !== undefined && typeof v !== 'boolean')
      fail('INVALID_OPTION', `deterministic must be a boolean (got ${typeof v} ${String(v)})`);
    return v !== false;
  };
  const deterministic = checkDeterministic(options.deterministic);
  let info: NativeDeviceInfo;
  try {
    info = await native.init();
  } catch (e) {
    await native.dispose().catch(() => {});
    throw toFlashError(e, 'init');
  }

  const capabilities: Capabilities = {
    dtypes: [...DTYPES],
    maxHeadDim: 256,
    features: [...ALL_FEATURES],
    deterministic,
  };
  const ctx = { capabilities, backend: 'cuda' };
  const token = {};
  let disposed = false;
  let lastPlan: NativePlan | null = null;
  let extra: NativeDesc = {
    forceGeneric: forceGeneric ? 1 : 0,
    variant,
    nondeterministic: deterministic ? 0 : 1,
  };

  const alive = () => {
    if (disposed) fail('DISPOSED', 'the cuda backend was disposed');
  };
  const own = (t: DeviceTensor, name: string): CudaTensor => {
    if (!(t instanceof CudaTensor) || t.owner !== token) {
      fail(
        'INVALID_OPTION',
        `${name} is a device tensor of backend ${t.backend}${t instanceof CudaTensor ? ' (another cuda backend instance)' : ''}; download it and pass the host tensor`,
      );
    }
    if (t.freed) fail('DISPOSED', `${name} was freed`);
    return t;
  };
  const sameKind = (tensors: Record<string, unknown>): boolean => {
    const entries = Object.entries(tensors);
    const dev = isDeviceTensor(entries[0][1]);
    for (const [name, t] of entries) {
      if (isDeviceTensor(t) !== dev) {
        fail(
          'INVALID_OPTION',
          `${entries.map(([n]) => n).join(', ')} must all be host tensors or all device tensors; ${name} is ${dev ? 'a host' : 'a device'} tensor`,
        );
      }
    }
    return dev;
  };

  /** Queues the uploads of host inputs; returns the ids to use and the temporaries to free. */
  class Call {
    pending: Promise<unknown>[] = [];
    temps: number[] = [];
    input(t: Tensor | Float32Array, name: string): number {
      if (t instanceof Float32Array) {
        const id = native.newId();
        this.pending.push(native.upload(id, t));
        this.temps.push(id);
        return id;
      }
      if (isDeviceTensor(t)) return own(t, name).id;
      const id = native.newId();
      this.pending.push(native.upload(id, (t as HostTensor).data));
      this.temps.push(id);
      return id;
    }
    /** Waits for everything queued; on the first failure frees `onError` and throws its error. */
    async settle(where: string, onError: number[]): Promise<void> {
      const results = await Promise.allSettled(this.pending);
      for (const id of this.temps) native.free(id);
      const bad = results.find((r) => r.status === 'rejected') as PromiseRejectedResult | undefined;
      if (bad) {
        for (const id of onError) native.free(id);
        throw toFlashError(bad.reason, where);
      }
    }
  }

  const backend: CudaBackend = {
    name: 'cuda',
    capabilities,
    device: info,
    get lastPlan() {
      return lastPlan;
    },

    async forward<T extends Tensor>(
      q: T,
      k: T,
      v: T,
      options: AttentionOptions = {},
    ): Promise<ForwardResult<T>> {
      alive();
      const p = resolveProblem(q, k, v, options, ctx);
      const dev = sameKind({ q, k, v });
      const call = new Call();
      const ids = {
        q: call.input(q, 'q'),
        k: call.input(k, 'k'),
        v: call.input(v, 'v'),
        bias: p.bias ? call.input(p.bias.tensor, 'bias') : 0,
        out: native.newId(),
        lse: p.returnLse ? native.newId() : 0,
      };
      const fwd = native.forward(describeProblem(p, ids, extra));
      call.pending.push(fwd);
      let outData: Float32Array | Uint16Array | null = null;
      let lseData: Float32Array | null = null;
      if (!dev) {
        outData = dataArrayFor(p.dtype, numel(p.outShape));
        call.pending.push(native.download(ids.out, outData));
        if (ids.lse) {
          lseData = new Float32Array(p.lseLength);
          call.pending.push(native.download(ids.lse, lseData));
        }
        call.temps.push(ids.out);
        if (ids.lse) call.temps.push(ids.lse);
      }
      await call.settle(
        'forward',
        [ids.out, ids.lse].filter((x) => x !== 0),
      );
      lastPlan = await fwd;
      if (dev) {
        const result: ForwardResult<DeviceTensor> = {
          out: new CudaTensor(p.dtype, p.outShape, ids.out, token),
        };
        if (ids.lse) result.lse = new CudaTensor('float32', p.lseShape, ids.lse, token);
        return result as unknown as ForwardResult<T>;
      }
      const result: ForwardResult<HostTensor> = {
        out: { dtype: p.dtype, shape: [...p.outShape], data: outData as Float32Array | Uint16Array },
      };
      if (lseData) result.lse = lseData;
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
      const p = resolveBackwardProblem(dout, q, k, v, out, lse as Float32Array | DeviceTensor, options, ctx);
      const dev = sameKind({ dout, q, k, v, out, lse });
      const call = new Call();
      const ids = {
        dout: call.input(dout, 'dout'),
        q: call.input(q, 'q'),
        k: call.input(k, 'k'),
        v: call.input(v, 'v'),
        out: call.input(out, 'out'),
        lseIn: call.input(lse as Float32Array | DeviceTensor, 'lse'),
        bias: p.bias ? call.input(p.bias.tensor, 'bias') : 0,
        dq: native.newId(),
        dk: native.newId(),
        dv: native.newId(),
      };
      const bwd = native.backward(describeProblem(p, ids, { ...extra, pagesShared: pagesShared(p) ? 1 : 0 }));
      call.pending.push(bwd);
      const data: Record<'dq' | 'dk' | 'dv', Float32Array | Uint16Array> = {} as never;
      if (!dev) {
        data.dq = dataArrayFor(p.dtype, numel(q.shape));
        data.dk = dataArrayFor(p.dtype, numel(k.shape));
        data.dv = dataArrayFor(p.dtype, numel(v.shape));
        for (const name of ['dq', 'dk', 'dv'] as const) {
          call.pending.push(native.download(ids[name], data[name]));
          call.temps.push(ids[name]);
        }
      }
      await call.settle('backward', [ids.dq, ids.dk, ids.dv]);
      lastPlan = await bwd;
      if (dev) {
        return {
          dq: new CudaTensor(p.dtype, q.shape, ids.dq, token),
          dk: new CudaTensor(p.dtype, k.shape, ids.dk, token),
          dv: new CudaTensor(p.dtype, v.shape, ids.dv, token),
        } as unknown as BackwardResult<T>;
      }
      return {
        dq: { dtype: p.dtype, shape: [...q.shape], data: data.dq },
        dk: { dtype: p.dtype, shape: [...k.shape], data: data.dk },
        dv: { dtype: p.dtype, shape: [...v.shape], data: data.dv },
      } as unknown as BackwardResult<T>;
    },

    async upload(host: HostTensor): Promise<DeviceTensor> {
      alive();
      checkHostTensor('host', host);
      const id = native.newId();
      try {
        await native.upload(id, host.data);
      } catch (e) {
        throw toFlashError(e, 'upload');
      }
      return new CudaTensor(host.dtype, host.shape, id, token);
    },

    async download(t: Tensor): Promise<HostTensor> {
      alive();
      if (!isDeviceTensor(t)) {
        checkHostTensor('tensor', t);
        return { dtype: t.dtype, shape: [...t.shape], data: t.data.slice() };
      }
      const ct = own(t, 'tensor');
      const data = dataArrayFor(ct.dtype, numel(ct.shape));
      try {
        await native.download(ct.id, data);
      } catch (e) {
        throw toFlashError(e, 'download');
      }
      return { dtype: ct.dtype, shape: [...ct.shape], data };
    },

    free(t: Tensor): void {
      if (!isDeviceTensor(t)) return;
      if (!(t instanceof CudaTensor) || t.owner !== token) {
        fail('INVALID_OPTION', `free: the tensor belongs to backend ${t.backend}, not to this cuda backend`);
      }
      if (t.freed || disposed) return;
      t.freed = true;
      native.free(t.id);
    },

    async stats(): Promise<NativeStats> {
      alive();
      return native.stats();
    },

    async timeForward(q, k, v, options = {}, timing = {}) {
      alive();
      const p = resolveProblem(q, k, v, options, ctx);
      const call = new Call();
      const ids = {
        q: call.input(q, 'q'),
        k: call.input(k, 'k'),
        v: call.input(v, 'v'),
        bias: p.bias ? call.input(p.bias.tensor, 'bias') : 0,
        out: 1,
        lse: p.returnLse ? 1 : 0,
      };
      const run = native.time(describeProblem(p, ids, extra), false, timing.warmup ?? 3, timing.iters ?? 10);
      call.pending.push(run);
      await call.settle('timing', []);
      const r = await run;
      return { ...r, median: median(r.ms) };
    },

    async timeBackward(dout, q, k, v, out, lse, options = {}, timing = {}) {
      alive();
      const p = resolveBackwardProblem(dout, q, k, v, out, lse, options, ctx);
      const call = new Call();
      const ids = {
        dout: call.input(dout, 'dout'),
        q: call.input(q, 'q'),
        k: call.input(k, 'k'),
        v: call.input(v, 'v'),
        out: call.input(out, 'out'),
        lseIn: call.input(lse, 'lse'),
        bias: p.bias ? call.input(p.bias.tensor, 'bias') : 0,
      };
      const desc = describeProblem(p, ids, { ...extra, pagesShared: pagesShared(p) ? 1 : 0 });
      const run = native.time(desc, true, timing.warmup ?? 3, timing.iters ?? 10);
      call.pending.push(run);
      await call.settle('timing', []);
      const r = await run;
      return { ...r, median: median(r.ms) };
    },

    async copyBench(bytes: number, iters = 10): Promise<Float64Array> {
      alive();
      try {
        return await native.copyBench(bytes, iters);
      } catch (e) {
        throw toFlashError(e, 'copy');
      }
    },

    view(t: DeviceTensor, shape: readonly number[]): DeviceTensor {
      alive();
      const ct = own(t, 'tensor');
      if (
        !Array.isArray(shape) ||
        shape.some((s) => !Number.isSafeInteger(s) || s < 0) ||
        numel(shape) !== numel(ct.shape)
      ) {
        fail(
          'INVALID_SHAPE',
          `view: shape ${describe(shape)} must hold the ${numel(ct.shape)} elements of ${describe(ct.shape)}`,
        );
      }
      return new CudaTensor(ct.dtype, shape, ct.id, token);
    },

    configure(o: Pick<CudaBackendOptions, 'forceGeneric' | 'variant' | 'deterministic'>): void {
      capabilities.deterministic = checkDeterministic(o.deterministic ?? capabilities.deterministic);
      extra = {
        forceGeneric: (o.forceGeneric ?? extra.forceGeneric === 1) ? 1 : 0,
        variant: o.variant ?? (extra.variant as number),
        nondeterministic: capabilities.deterministic ? 0 : 1,
      };
    },

    async dispose(): Promise<void> {
      if (disposed) return;
      disposed = true;
      await native.dispose().catch(() => {});
    },
  };
  return backend;
}

/** The registry's factory: device 0, kernels chosen per call. */
export async function cudaBackendFactory(): Promise<Backend> {
  return createCudaBackend();
}

export { FlashAttentionError };
