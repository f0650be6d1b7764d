/**
 * The cpu backend: validation through core's resolveProblem, then the tiled kernels, either in the
 * calling thread or spread over a pool of worker threads through SharedArrayBuffers.
 */
import {
  ALL_FEATURES,
  type AttentionOptions,
  type Backend,
  type BackwardResult,
  type Capabilities,
  DTYPES,
  type DType,
  describe,
  FlashAttentionError,
  type ForwardResult,
  fail,
  flashBlockSizes,
  type HostTensor,
  type LseOf,
  numel,
  type Problem,
  requireHostTensors,
  resolveBackwardProblem,
  resolveProblem,
  type Tensor,
} from '@flashattn/core';
import { computeD } from './backward.js';
import {
  BACKWARD_ITEM,
  type BackwardJob,
  backwardItems,
  type Data,
  FORWARD_ITEM,
  type ForwardJob,
  forwardItems,
  itemCount,
  type Job,
  pagesShared,
} from './job.js';
import { availableCores, defaultWorkerUrl, isNode, sharedMemoryUnavailable, WorkerPool } from './pool.js';
import { drain, runAll } from './run.js';
import { Scratch } from './scratch.js';

export interface CpuBackendOptions {
  /**
   * Threads that compute, the calling thread included when `callerComputes`. Default: the available
   * cores (os.availableParallelism() in Node, navigator.hardwareConcurrency in browsers). 1 runs
   * every call in the calling thread, with no workers.
   */
  threads?: number;
  /**
   * Whether the calling thread computes a share of a threaded call (then `threads - 1` workers are
   * started) instead of waiting for `threads` workers. Saves one worker's memory (~10–15 MiB in
   * Node) at the cost of blocking the caller's event loop for the call, as a single-threaded call
   * does. Default: true, except on a browser page's main thread, where blocking would freeze the page.
   */
  callerComputes?: boolean;
  /** Query rows per tile (Br). Default: from the cost model and `cacheBytes`. */
  blockQ?: number;
  /** Keys per tile (Bc). Default: from the cost model and `cacheBytes`. */
  blockK?: number;
  /** The per-core cache budget M (in bytes; M/4 float32 elements) that the block sizes are derived from. */
  cacheBytes?: number;
  /** Where dist/worker.js is, for bundlers that move it. Default: next to this module. */
  workerUrl?: string | URL;
  /**
   * Calls with fewer FLOPs than this run in the calling thread even when workers are available
   * (posting a job costs about a millisecond). Default 4e6; 0 sends every call to the workers.
   */
  parallelThreshold?: number;
}

export interface CpuBackend extends Backend {
  /** How the backend runs here: its thread count, or why it is single-threaded. */
  readonly info: string;
  /** The tile sizes used for head dim d. */
  blockSizes(headDim: number): { blockQ: number; blockK: number };
  /** Starts the worker pool now rather than on the first large call; resolves once it is up (or known to be unavailable). */
  ready(): Promise<void>;
}

/** The default cache budget: half this machine class's 512 KiB L2, measured best in PERF.md. */
export const DEFAULT_CACHE_BYTES = 128 * 1024;
/** Below this much arithmetic a call runs in the calling thread: posting to workers costs more. */
const PARALLEL_MIN_FLOPS = 4e6;
/**
 * (query head, Q block) units per forward item, sharing each decoded K/V block: the heads of a GQA
 * group, else consecutive Q blocks of one head. Decoding K and V costs O(Bc·d) per block against
 * O(Br·Bc·d) arithmetic per unit, so sharing it is what makes Br = 64 tiles pay (PERF.md).
 */
const FORWARD_UNITS = 4;
const MAX_BLOCK = 1024;

function clamp(x: number, lo: number, hi: number): number {
  return Math.min(hi, Math.max(lo, x));
}

/**
 * Tile sizes for head dim d: the FlashAttention rule (core's flashBlockSizes, Bc = ceil(M / 4d),
 * Br = min(Bc, d)) with M = cacheBytes / 4, clamped to [16, 128] rows
 * and [16, 256] keys: a tile narrower than 16 wastes the micro-kernel, and one wider than the cache
 * budget only adds misses.
 */
export function cpuBlockSizes(
  headDim: number,
  options: { blockQ?: number; blockK?: number; cacheBytes?: number } = {},
): { blockQ: number; blockK: number } {
  const { Bc, Br } = flashBlockSizes((options.cacheBytes ?? DEFAULT_CACHE_BYTES) / 4, headDim);
  return {
    blockQ: options.blockQ ?? clamp(Br, 16, 128),
    blockK: options.blockK ?? clamp(Bc, 16, 256),
  };
}

function checkPositiveInt(name: string, x: unknown, max: number): void {
  if (x === undefined) return;
  if (typeof x !== 'number' || !Number.isSafeInteger(x) || x < 1 || x > max) {
    fail('INVALID_OPTION', `cpu backend option ${name} must be an integer in 1..${max}, got ${describe(x)}`);
  }
}

/** A view of `data` on a SharedArrayBuffer: `data` itself when it already is one, else a copy. */
export function toShared<T extends Data | Float64Array>(data: T): T {
  if (typeof SharedArrayBuffer !== 'undefined' && data.buffer instanceof SharedArrayBuffer) return data;
  const Ctor = data.constructor as new (buffer: SharedArrayBuffer) => T;
  const copy = new Ctor(new SharedArrayBuffer(data.byteLength));
  (copy as unknown as { set(a: ArrayLike<number>): void }).set(data);
  return copy;
}

/**
 * A zero-filled tensor whose data lives on a SharedArrayBuffer. Inputs built this way reach the
 * worker threads without a copy (see README: memory).
 */
export function sharedTensor(dtype: DType, shape: readonly number[]): HostTensor {
  const n = numel(shape);
  const bytes = dtype === 'float32' ? 4 : 2;
  const buffer = new SharedArrayBuffer(n * bytes);
  return {
    dtype,
    shape: [...shape],
    data: dtype === 'float32' ? new Float32Array(buffer) : new Uint16Array(buffer),
  };
}

function allocate<T>(what: string, make: () => T): T {
  try {
    return make();
  } catch (e) {
    if (e instanceof RangeError) {
      throw new FlashAttentionError(
        'OUT_OF_MEMORY',
        `cpu backend: could not allocate ${what}: ${e.message}`,
        { cause: e },
      );
    }
    throw e;
  }
}

function dataFor(dtype: DType, n: number, shared: boolean): Data {
  const bytes = dtype === 'float32' ? 4 : 2;
  const buffer = shared ? new SharedArrayBuffer(n * bytes) : new ArrayBuffer(n * bytes);
  return dtype === 'float32' ? new Float32Array(buffer) : new Uint16Array(buffer);
}

function f32For(n: number, shared: boolean): Float32Array {
  return new Float32Array(shared ? new SharedArrayBuffer(n * 4) : new ArrayBuffer(n * 4));
}

function f64For(n: number, shared: boolean): Float64Array {
  return new Float64Array(shared ? new SharedArrayBuffer(n * 8) : new ArrayBuffer(n * 8));
}

/** The Problem with its bias data on shared memory (the other arrays in it are small and cloned). */
function shareProblem(p: Problem): Problem {
  if (!p.bias) return p;
  const t = p.bias.tensor as HostTensor;
  return {
    ...p,
    bias: { ...p.bias, tensor: { dtype: t.dtype, shape: [...t.shape], data: toShared(t.data) } },
  };
}

/** A browser page's main thread (not Node, not a Web Worker): blocking it freezes the page. */
function onPageMainThread(): boolean {
  return !isNode() && typeof (globalThis as { document?: unknown }).document !== 'undefined';
}

export function createCpuBackend(options: CpuBackendOptions = {}): CpuBackend {
  if (typeof options !== 'object' || options === null) {
    fail('INVALID_OPTION', `cpu backend options must be an object, got ${describe(options)}`);
  }
  checkPositiveInt('threads', options.threads, 1024);
  checkPositiveInt('blockQ', options.blockQ, MAX_BLOCK);
  checkPositiveInt('blockK', options.blockK, MAX_BLOCK);
  if (
    options.cacheBytes !== undefined &&
    !(typeof options.cacheBytes === 'number' && options.cacheBytes >= 1024)
  ) {
    fail(
      'INVALID_OPTION',
      `cpu backend option cacheBytes must be a number >= 1024, got ${describe(options.cacheBytes)}`,
    );
  }
  if (options.callerComputes !== undefined && typeof options.callerComputes !== 'boolean') {
    fail(
      'INVALID_OPTION',
      `cpu backend option callerComputes must be a boolean, got ${describe(options.callerComputes)}`,
    );
  }
  const callerComputes = options.callerComputes ?? !onPageMainThread();
  const threshold = options.parallelThreshold ?? PARALLEL_MIN_FLOPS;
  if (typeof threshold !== 'number' || !(threshold >= 0)) {
    fail(
      'INVALID_OPTION',
      `cpu backend option parallelThreshold must be a number >= 0, got ${describe(threshold)}`,
    );
  }
  const capabilities: Capabilities = { dtypes: [...DTYPES], maxHeadDim: 256, features: [...ALL_FEATURES] };
  const ctx = { capabilities, backend: 'cpu' };
  const scratch = new Scratch();
  let disposed = false;
  const noSharedMemory = options.threads === 1 ? null : sharedMemoryUnavailable();
  let info =
    options.threads === 1
      ? 'single-threaded (threads: 1)'
      : noSharedMemory
        ? `single-threaded: ${noSharedMemory}`
        : `up to ${options.threads ?? 'one per core'} threads (workers started on the first large call)`;
  let poolPromise: Promise<WorkerPool | null> | null = null;

  const alive = () => {
    if (disposed) fail('DISPOSED', 'the cpu backend was disposed');
  };

  async function startPool(): Promise<WorkerPool | null> {
    if (options.threads === 1) return null;
    const reason = sharedMemoryUnavailable();
    if (reason) {
      info = `single-threaded: ${reason}`;
      return null;
    }
    const threads = options.threads ?? (await availableCores());
    if (threads <= 1) {
      info = 'single-threaded: one core available';
      return null;
    }
    const workers = callerComputes ? threads - 1 : threads;
    try {
      const pool = await WorkerPool.start(workers, options.workerUrl ?? defaultWorkerUrl());
      if (disposed) {
        pool.terminate('disposed', 'DISPOSED');
        return null;
      }
      const kind = `${isNode() ? 'worker_threads' : 'Web Workers'}, SharedArrayBuffer`;
      info = callerComputes
        ? `${threads} threads: the calling thread and ${workers} worker${workers === 1 ? '' : 's'} (${kind})`
        : `${threads} worker threads (${kind})`;
      return pool;
    } catch (e) {
      info = `single-threaded: the worker threads failed to start (${e instanceof Error ? e.message : String(e)})`;
      return null;
    }
  }

  /** The pool, started (or restarted after a worker died) on demand; null = run in this thread. */
  async function getPool(): Promise<WorkerPool | null> {
    if (!poolPromise) poolPromise = startPool();
    const pool = await poolPromise;
    if (pool?.dead && !disposed) {
      poolPromise = startPool();
      return poolPromise;
    }
    return pool;
  }

  async function execute(job: Job, parallel: boolean, share: () => Job): Promise<void> {
    const count = itemCount(job);
    if (count === 0) return;
    const pool = parallel ? await getPool() : null;
    alive();
    if (!pool) {
      runAll(job, scratch);
      return;
    }
    const counter = new Int32Array(new SharedArrayBuffer(4));
    const sharedJob = share();
    const workersDone = pool.run(sharedJob, count, counter);
    if (!callerComputes) return workersDone;
    // Delivering the job to the workers does not need this thread's event loop: they pick it up
    // and claim items from the same counter while this thread claims its own.
    let failure: unknown = null;
    try {
      drain(sharedJob, counter, count, scratch);
    } catch (e) {
      failure = e;
    }
    // Even after an error, wait for the workers: they may still be writing into the outputs.
    try {
      await workersDone;
    } catch (e) {
      failure ??= e;
    }
    if (failure !== null) throw failure;
  }

  function wantsPool(flops: number): boolean {
    return options.threads !== 1 && flops >= threshold && sharedMemoryUnavailable() === null;
  }

  const sizes = (d: number) => cpuBlockSizes(d, options);

  const backend: CpuBackend = {
    name: 'cpu',
    capabilities,
    get info() {
      return info;
    },
    blockSizes: sizes,
    async ready() {
      alive();
      await getPool();
    },

    async forward<T extends Tensor>(
      q: T,
      k: T,
      v: T,
      opts: AttentionOptions = {},
    ): Promise<ForwardResult<T>> {
      alive();
      requireHostTensors('cpu', { q, k, v, bias: opts.bias });
      const p = resolveProblem(q, k, v, opts, ctx);
      const { blockQ, blockK } = sizes(p.headDim);
      const { items, pairs } = forwardItems(p, blockQ, FORWARD_UNITS);
      const flops = 4 * p.headDim * pairs;
      // Decide up front whether the outputs must be shared with workers.
      const shared = wantsPool(flops) && items.length / FORWARD_ITEM > 1;
      const out = allocate('the output', () => dataFor(p.dtype, numel(p.outShape), shared));
      const lse = p.returnLse ? allocate('lse', () => f32For(p.lseLength, shared)) : null;
      const job: ForwardJob = {
        kind: 'forward',
        p,
        q: (q as HostTensor).data,
        k: (k as HostTensor).data,
        v: (v as HostTensor).data,
        out,
        lse,
        blockQ,
        blockK,
        items,
      };
      await execute(job, shared, () =>
        allocate('shared copies of the inputs', () => ({
          ...job,
          p: shareProblem(p),
          q: toShared(job.q),
          k: toShared(job.k),
          v: toShared(job.v),
        })),
      );
      const result: ForwardResult<HostTensor> = {
        out: { dtype: p.dtype, shape: [...p.outShape], data: out },
      };
      if (lse) result.lse = lse;
      return result as unknown as ForwardResult<T>;
    },

    async backward<T extends Tensor>(
      dout: T,
      q: T,
      k: T,
      v: T,
      out: T,
      lse: LseOf<T>,
      opts: AttentionOptions = {},
    ): Promise<BackwardResult<T>> {
      alive();
      requireHostTensors('cpu', { dout, q, k, v, out, lse, bias: opts.bias });
      const p = resolveBackwardProblem(dout, q, k, v, out, lse as Float32Array, opts, ctx);
      const { blockQ, blockK } = sizes(p.headDim);
      const sharedPages = pagesShared(p);
      const items = backwardItems(p, blockQ, blockK, sharedPages);
      const { pairs } = forwardItems(p, blockQ, 1);
      const flops = 10 * p.headDim * pairs;
      const shared = wantsPool(flops) && items.length > BACKWARD_ITEM;
      const D = allocate('D', () => f64For(p.lseLength, shared));
      computeD(p, (dout as HostTensor).data, (out as HostTensor).data, D, scratch);
      const dq = allocate('dq', () => dataFor(p.dtype, numel(q.shape), shared));
      const dk = allocate('dk', () => dataFor(p.dtype, numel(k.shape), shared));
      const dv = allocate('dv', () => dataFor(p.dtype, numel(v.shape), shared));
      const kvLength = numel(k.shape);
      const job: BackwardJob = {
        kind: 'backward',
        p,
        q: (q as HostTensor).data,
        k: (k as HostTensor).data,
        v: (v as HostTensor).data,
        dout: (dout as HostTensor).data,
        lse: lse as Float32Array,
        D,
        dq,
        dk,
        dv,
        dkAcc: sharedPages ? allocate('dk accumulators', () => f64For(kvLength, shared)) : null,
        dvAcc: sharedPages ? allocate('dv accumulators', () => f64For(kvLength, shared)) : null,
        blockQ,
        blockK,
        items,
      };
      await execute(job, shared, () =>
        allocate('shared copies of the inputs', () => ({
          ...job,
          p: shareProblem(p),
          q: toShared(job.q),
          k: toShared(job.k),
          v: toShared(job.v),
          dout: toShared(job.dout),
          lse: toShared(job.lse),
        })),
      );
      return {
        dq: { dtype: p.dtype, shape: [...q.shape], data: dq },
        dk: { dtype: p.dtype, shape: [...k.shape], data: dk },
        dv: { dtype: p.dtype, shape: [...v.shape], data: dv },
      } as unknown as BackwardResult<T>;
    },

    async dispose() {
      if (disposed) return;
      disposed = true;
      info = 'disposed';
      const pending = poolPromise;
      poolPromise = null;
      const pool = pending ? await pending.catch(() => null) : null;
      pool?.terminate('the cpu backend was disposed', 'DISPOSED');
    },
  };
  return backend;
}

/** The registry's factory: a cpu backend with default options, its worker pool already started. */
export async function cpuBackendFactory(): Promise<Backend> {
  const backend = createCpuBackend();
  await backend.ready();
  return backend;
}
