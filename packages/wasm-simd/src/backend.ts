/**
 * The wasm-simd backend: copies a call's tensors into the backend's WebAssembly memory, writes the
 * parameter block and the work items, runs the AssemblyScript kernels on the calling thread or on a
 * pool of workers that share the memory, and copies the results out.
 */
import {
  ALL_FEATURES,
  type AttentionOptions,
  type Backend,
  type BackwardResult,
  type Capabilities,
  DTYPES,
  type DType,
  FlashAttentionError,
  type ForwardResult,
  fail,
  type HostTensor,
  type LseOf,
  numel,
  type Problem,
  requireHostTensors,
  resolveBackwardProblem,
  resolveProblem,
  seqLenK,
  seqLenQ,
  type Tensor,
} from '@flashattn/core';
import { COUNTER, DTYPE_CODE, HEAP_BASE, MAX_PAGES, PAGE, PARAMS, PTHRESH_F64, Slot } from './layout.js';
import { WorkerPool, workersUnavailableReason } from './pool.js';
import {
  compileVariant,
  hasRelaxedSimd,
  hasWasmSimd,
  instantiate,
  type KernelExports,
  sharedMemoryUnavailableReason,
  type Variant,
} from './wasm.js';

export const BACKEND_NAME = 'wasm-simd';

export interface WasmSimdOptions {
  /** Threads per call (workers over one shared memory). Default: the available cores. 1 = the calling thread. */
  threads?: number;
  /** Use the relaxed-SIMD (fused multiply-add) build: true, false, or 'auto' (default: when the engine validates it). */
  relaxed?: boolean | 'auto';
  /** Query rows per tile (multiple of 4). Default from the head dim. */
  blockRows?: number;
  /** Key rows per tile (multiple of 8). Default from the head dim. */
  blockCols?: number;
  /** Largest WebAssembly memory the backend may hold, in bytes (default and at most 4 GiB). */
  maxMemoryBytes?: number;
  /** Calls with fewer flops than this run on the calling thread (a worker round trip costs ~0.1 ms). Default 4e6. */
  minParallelFlops?: number;
}

/** What the backend runs with, for `flashattn info` and benchmarks. */
export interface WasmSimdInfo {
  variant: Variant;
  relaxedSimd: boolean;
  threads: number;
  /** Why the backend runs on one thread, when it does although more were asked for. */
  singleThreadReason?: string;
  maxMemoryBytes: number;
}

export interface WasmSimdBackend extends Backend {
  /** One line for listBackends(): the build and the threads, or why it runs on one thread. */
  readonly info: string;
  /** The same, structured. */
  readonly details: WasmSimdInfo;
  /** Bytes of WebAssembly memory the backend holds now (the high-water mark of past calls). */
  memoryBytes(): number;
  /** Runs the f32x4 multiply-add microbenchmark on the calling thread; returns GFLOP/s. */
  peakGflops(seconds?: number): number;
}

export type { Variant };

const CAPABILITIES: Capabilities = { dtypes: [...DTYPES], maxHeadDim: 256, features: [...ALL_FEATURES] };

/** Work below this many flops runs on the calling thread: a worker round trip costs ~0.1 ms. */
const MIN_PARALLEL_FLOPS = 4e6;

function defaultThreads(): number {
  const g = globalThis as { navigator?: { hardwareConcurrency?: number } };
  const os = nodeOs;
  if (os) {
    const n = typeof os.availableParallelism === 'function' ? os.availableParallelism() : os.cpus().length;
    if (n > 0) return n;
  }
  const hc = g.navigator?.hardwareConcurrency;
  return typeof hc === 'number' && hc > 0 ? hc : 1;
}

let nodeOs: { availableParallelism?: () => number; cpus(): unknown[] } | null = null;

async function loadNodeOs(): Promise<void> {
  if (nodeOs) return;
  const p = (globalThis as { process?: { versions?: { node?: string } } }).process;
  if (!p?.versions?.node) return;
  try {
    const spec = 'node:os';
    nodeOs = await import(/* @vite-ignore */ spec);
  } catch {
    nodeOs = null;
  }
}

function blockSizes(dp: number, opts: WasmSimdOptions): { br: number; bc: number } {
  let br = dp <= 64 ? 64 : dp <= 128 ? 48 : 32;
  let bc = dp <= 64 ? 64 : dp <= 128 ? 48 : 32;
  if (opts.blockRows !== undefined) br = opts.blockRows;
  if (opts.blockCols !== undefined) bc = opts.blockCols;
  return { br, bc };
}

function checkBackendOptions(opts: WasmSimdOptions): void {
  if (typeof opts !== 'object' || opts === null)
    fail('INVALID_OPTION', 'wasm-simd options must be an object');
  const known = new Set([
    'threads',
    'relaxed',
    'blockRows',
    'blockCols',
    'maxMemoryBytes',
    'minParallelFlops',
  ]);
  for (const k of Object.keys(opts)) {
    if (!known.has(k))
      fail(
        'INVALID_OPTION',
        `unknown wasm-simd option ${JSON.stringify(k)}; known: ${[...known].join(', ')}`,
      );
  }
  if (
    opts.threads !== undefined &&
    (!Number.isInteger(opts.threads) || opts.threads < 1 || opts.threads > 256)
  ) {
    fail('INVALID_OPTION', `threads must be an integer in 1..256, got ${String(opts.threads)}`);
  }
  if (opts.relaxed !== undefined && opts.relaxed !== 'auto' && typeof opts.relaxed !== 'boolean') {
    fail('INVALID_OPTION', `relaxed must be true, false or 'auto', got ${String(opts.relaxed)}`);
  }
  if (
    opts.blockRows !== undefined &&
    (!Number.isInteger(opts.blockRows) ||
      opts.blockRows < 4 ||
      opts.blockRows % 4 !== 0 ||
      opts.blockRows > 512)
  ) {
    fail('INVALID_OPTION', `blockRows must be a multiple of 4 in 4..512, got ${String(opts.blockRows)}`);
  }
  if (
    opts.blockCols !== undefined &&
    (!Number.isInteger(opts.blockCols) ||
      opts.blockCols < 8 ||
      opts.blockCols % 8 !== 0 ||
      opts.blockCols > 512)
  ) {
    fail('INVALID_OPTION', `blockCols must be a multiple of 8 in 8..512, got ${String(opts.blockCols)}`);
  }
  if (
    opts.maxMemoryBytes !== undefined &&
    (!Number.isFinite(opts.maxMemoryBytes) || opts.maxMemoryBytes < 1 << 20)
  ) {
    fail('INVALID_OPTION', `maxMemoryBytes must be a number >= 1 MiB, got ${String(opts.maxMemoryBytes)}`);
  }
}

function describeInfo(i: WasmSimdInfo): string {
  const build = i.relaxedSimd ? 'wasm SIMD128 + relaxed-SIMD FMA' : 'wasm SIMD128';
  if (i.threads > 1) return `${build}, up to ${i.threads} worker threads over shared memory`;
  return i.singleThreadReason
    ? `${build}, single-threaded: ${i.singleThreadReason}`
    : `${build}, single-threaded`;
}

/**
 * The f32x4 multiply-add peak of this engine on one thread, in GFLOP/s: the best of two register
 * loops, 12 dependent multiply-add chains (peak) and 12 accumulators fed from L1 (peak_loads), run
 * alternately for `seconds`. Relaxed-SIMD builds use fused multiply-add in both.
 */
export function measurePeak(kernels: KernelExports, mem: WebAssembly.Memory, seconds: number): number {
  const per = kernels.peak_flops_per_iter();
  const buf = PARAMS + 512; // 192 bytes of the parameter area, unused by the peak loops' callers
  new Float32Array(mem.buffer, buf, 48).fill(0.5);
  kernels.peak(100_000);
  kernels.peak_loads(buf, 100_000);
  let iters = 1_000_000;
  let best = 0;
  const until = performance.now() + seconds * 1000;
  let which = 0;
  while (performance.now() < until || best === 0) {
    const t0 = performance.now();
    if (which++ % 2 === 0) kernels.peak(iters);
    else kernels.peak_loads(buf, iters);
    const dt = (performance.now() - t0) / 1000;
    if (dt < 0.01) iters *= 2;
    else best = Math.max(best, (iters * per) / dt / 1e9);
  }
  return best;
}

/** A bump allocator over the wasm heap, 64-byte aligned. */
class Allocator {
  top = HEAP_BASE;
  /** `fit(end)` makes sure the memory reaches `end` (the call's total was checked before, this is the backstop). */
  constructor(private readonly fit: (end: number) => void) {}
  alloc(bytes: number): number {
    const p = this.top;
    this.top = p + Math.ceil(Math.max(bytes, 0) / 64) * 64 + 64;
    this.fit(this.top);
    return p;
  }
}

function bytesOf(dtype: DType): number {
  return dtype === 'float32' ? 4 : 2;
}

interface CallState {
  threads: number;
}

export async function createWasmSimdBackend(options: WasmSimdOptions = {}): Promise<WasmSimdBackend> {
  checkBackendOptions(options);
  if (!hasWasmSimd()) {
    fail(
      'BACKEND_UNAVAILABLE',
      'this JavaScript engine does not support WebAssembly SIMD (128-bit); use the cpu backend',
    );
  }
  await loadNodeOs();
  const relaxedAvailable = hasRelaxedSimd();
  if (options.relaxed === true && !relaxedAvailable) {
    fail(
      'BACKEND_UNAVAILABLE',
      'relaxed: true, but this engine does not validate relaxed-SIMD (in Node 20, run with --experimental-wasm-relaxed-simd)',
    );
  }
  const useRelaxed = options.relaxed === false ? false : relaxedAvailable;
  const wantThreads = options.threads ?? defaultThreads();
  let singleThreadReason: string | undefined;
  let shared = false;
  if (wantThreads > 1) {
    const why = sharedMemoryUnavailableReason() ?? (await workersUnavailableReason());
    if (why) singleThreadReason = why;
    else shared = true;
  }
  const variant: Variant = shared
    ? useRelaxed
      ? 'relaxedThreads'
      : 'simdThreads'
    : useRelaxed
      ? 'relaxed'
      : 'simd';
  const module = await compileVariant(variant);

  let maxPages = MAX_PAGES;
  if (options.maxMemoryBytes !== undefined)
    maxPages = Math.max(32, Math.min(MAX_PAGES, Math.floor(options.maxMemoryBytes / PAGE)));
  const initialPages = Math.min(32, maxPages);
  let memory: WebAssembly.Memory | null = null;
  for (const max of [maxPages, 32768, 16384, 4096]) {
    if (max > maxPages) continue;
    try {
      memory = new WebAssembly.Memory({
        initial: initialPages,
        maximum: max,
        shared,
      } as WebAssembly.MemoryDescriptor);
      maxPages = max;
      break;
    } catch {
      // a smaller reservation may succeed (32-bit hosts, memory-limited browsers)
    }
  }
  if (!memory) fail('BACKEND_UNAVAILABLE', 'could not create a WebAssembly.Memory for the wasm-simd kernels');
  const mem = memory;
  const kernels: KernelExports = await instantiate(module, mem);
  const threads = shared ? wantThreads : 1;
  const minParallelFlops = options.minParallelFlops ?? MIN_PARALLEL_FLOPS;
  let pool: WorkerPool | null = null;
  let disposed = false;
  let queue: Promise<unknown> = Promise.resolve();

  const info: WasmSimdInfo = {
    variant,
    relaxedSimd: useRelaxed,
    threads,
    maxMemoryBytes: maxPages * PAGE,
  };
  if (singleThreadReason) info.singleThreadReason = singleThreadReason;

  const ctx = { capabilities: CAPABILITIES, backend: BACKEND_NAME, extraOptionKeys: ['threads'] };

  function alive(): void {
    if (disposed) fail('DISPOSED', 'the wasm-simd backend was disposed');
  }

  /** Serialises calls: they share one memory. */
  function serial<R>(fn: () => Promise<R>): Promise<R> {
    const run = queue.then(fn, fn);
    queue = run.catch(() => {});
    return run;
  }

  function callThreads(opts: AttentionOptions): CallState {
    const t = (opts as { threads?: unknown }).threads;
    if (t === undefined) return { threads };
    if (typeof t !== 'number' || !Number.isInteger(t) || t < 1 || t > 256) {
      fail('INVALID_OPTION', `threads must be an integer in 1..256, got ${String(t)}`);
    }
    return { threads: shared ? t : 1 };
  }

  function ensureMemory(bytes: number): void {
    const need = Math.ceil(bytes / PAGE);
    const have = mem.buffer.byteLength / PAGE;
    if (need > maxPages) {
      fail(
        'OUT_OF_MEMORY',
        `this call needs ${(bytes / 2 ** 20).toFixed(1)} MiB of WebAssembly memory (inputs, outputs and work space), more than the ${(maxPages * PAGE) / 2 ** 20} MiB a wasm32 memory can hold here; split the batch or the heads into several calls`,
      );
    }
    if (need > have) {
      try {
        mem.grow(need - have);
      } catch (e) {
        throw new FlashAttentionError(
          'OUT_OF_MEMORY',
          `growing the WebAssembly memory to ${(bytes / 2 ** 20).toFixed(1)} MiB failed: ${(e as Error).message}`,
          { cause: e },
        );
      }
    }
  }

  function copyIn(ptr: number, data: ArrayBufferView): void {
    new Uint8Array(mem.buffer, ptr, data.byteLength).set(
      new Uint8Array(data.buffer, data.byteOffset, data.byteLength),
    );
  }

  function readOut(ptr: number, dtype: DType, length: number): Float32Array | Uint16Array {
    if (dtype === 'float32') return new Float32Array(mem.buffer, ptr, length).slice();
    return new Uint16Array(mem.buffer, ptr, length).slice();
  }

  async function runKernel(fn: 'fwd_run' | 'bwd_run' | 'pack_run', nThreads: number): Promise<void> {
    new Int32Array(mem.buffer, COUNTER, 1)[0] = 0;
    if (nThreads <= 1) {
      try {
        kernels[fn](0);
      } catch (e) {
        throw new FlashAttentionError(
          'OUT_OF_MEMORY',
          `the wasm-simd kernel trapped: ${(e as Error).message}`,
          {
            cause: e,
          },
        );
      }
      return;
    }
    if (pool && !pool.healthy) {
      await pool.terminate();
      pool = null;
    }
    if (!pool) pool = await WorkerPool.create(module, mem, nThreads);
    await pool.run(fn, nThreads);
  }

  /** Writes the parameter block shared by forward and backward; returns the allocator past the inputs. */
  function writeCommon(
    p: Problem,
    q: HostTensor,
    k: HostTensor,
    v: HostTensor,
    alloc: Allocator,
    ptrs: Record<string, number>,
  ): { i32: Int32Array; f32: Float32Array } {
    const i32 = new Int32Array(mem.buffer, PARAMS, 128);
    const f32 = new Float32Array(mem.buffer, PARAMS, 128);
    i32.fill(0);
    const dp = Math.ceil(p.headDim / 8) * 8;
    i32[Slot.DTYPE] = DTYPE_CODE[p.dtype];
    i32[Slot.BATCH] = p.batch;
    i32[Slot.SEQQ] = p.seqQ;
    i32[Slot.SEQK] = p.seqK;
    i32[Slot.HQ] = p.headsQ;
    i32[Slot.HK] = p.headsK;
    i32[Slot.D] = p.headDim;
    i32[Slot.DP] = dp;
    i32[Slot.GROUP] = p.groupSize;
    i32[Slot.CAUSAL] = p.causal ? 1 : 0;
    i32[Slot.WL] = p.windowLeft;
    i32[Slot.WR] = p.windowRight;
    f32[Slot.SCALE] = p.scale;
    f32[Slot.SOFTCAP] = p.softcap;
    copyIn(ptrs.q, q.data);
    copyIn(ptrs.k, k.data);
    copyIn(ptrs.v, v.data);
    i32[Slot.Q] = ptrs.q;
    i32[Slot.K] = ptrs.k;
    i32[Slot.V] = ptrs.v;
    if (p.alibiSlopes) {
      const n = p.batch * p.headsQ;
      const a = alloc.alloc(n * 4);
      const view = new Float32Array(mem.buffer, a, n);
      for (let b = 0; b < p.batch; b++)
        for (let h = 0; h < p.headsQ; h++)
          view[b * p.headsQ + h] = p.alibiSlopes[p.alibiPerBatch ? b * p.headsQ + h : h];
      i32[Slot.ALIBI] = a;
    }
    if (p.bias) {
      const t = p.bias.tensor as HostTensor;
      const a = alloc.alloc(t.data.byteLength);
      copyIn(a, t.data);
      i32[Slot.BIAS] = a;
      i32[Slot.BIASDT] = DTYPE_CODE[t.dtype];
      [i32[Slot.BSB], i32[Slot.BSH], i32[Slot.BSI], i32[Slot.BSJ]] = p.bias.strides;
    }
    const ints = (arr: Int32Array | null, slot: Slot) => {
      if (!arr) return;
      const a = alloc.alloc(arr.byteLength);
      copyIn(a, arr);
      i32[slot] = a;
    };
    ints(p.seqlensK, Slot.SEQLENSK);
    ints(p.cuSeqlensQ, Slot.CUQ);
    ints(p.cuSeqlensK, Slot.CUK);
    ints(p.blockTable, Slot.BTABLE);
    i32[Slot.PAGESIZE] = p.pageSize;
    i32[Slot.MAXPAGES] = p.maxPages;
    if (p.dropout) {
      i32[Slot.DROP] = 1;
      i32[Slot.KEY0] = p.dropout.key0 | 0;
      i32[Slot.KEY1] = p.dropout.key1 | 0;
      i32[Slot.DROPOFF] = p.dropout.offset | 0;
      f32[Slot.KEEPSCALE] = p.dropout.keepScale;
      new Float64Array(mem.buffer, PARAMS, 64)[PTHRESH_F64] = p.dropout.p * 2 ** 32;
    }
    i32[Slot.QSS] = p.qStrides.seq;
    i32[Slot.QSH] = p.qStrides.head;
    i32[Slot.QSB] = p.qStrides.batch;
    i32[Slot.KSS] = p.kvStrides.seq;
    i32[Slot.KSH] = p.kvStrides.head;
    i32[Slot.KSB] = p.kvStrides.batch;
    i32[Slot.TOTALQ] = p.totalQ;
    return { i32, f32 };
  }

  /** Bytes of the inputs and small arrays every call copies in. */
  function commonBytes(p: Problem, q: HostTensor, k: HostTensor, v: HostTensor): number {
    let n = q.data.byteLength + k.data.byteLength + v.data.byteLength + 64 * 12;
    if (p.alibiSlopes) n += p.batch * p.headsQ * 4;
    if (p.bias) n += (p.bias.tensor as HostTensor).data.byteLength;
    for (const a of [p.seqlensK, p.cuSeqlensQ, p.cuSeqlensK, p.blockTable]) if (a) n += a.byteLength;
    return n;
  }

  function scratchBytes(br: number, bc: number, dp: number): number {
    return Math.ceil((kernels.scratch_floats(br, bc, dp) * 4) / 64) * 64;
  }

  /**
   * K and V of every (b, key head) are packed once per call into float32 blocks of bc keys; each
   * sequence takes the blocks its own keys need (kbOff: prefix sums of the block counts).
   */
  function packPlan(
    p: Problem,
    bc: number,
    dp: number,
  ): { items: number[]; kbOff: Int32Array; bytes: number } {
    const kbOff = new Int32Array(p.batch + 1);
    const items: number[] = [];
    for (let b = 0; b < p.batch; b++) {
      const n = Math.ceil(seqLenK(p, b) / bc);
      kbOff[b + 1] = kbOff[b] + n;
      for (let h = 0; h < p.headsK; h++) for (let kb = 0; kb < n; kb++) items.push(b, h, kb);
    }
    return { items, kbOff, bytes: kbOff[p.batch] * p.headsK * bc * dp * 4 + kbOff.byteLength + 64 };
  }

  async function runPacks(
    i32: Int32Array,
    alloc: Allocator,
    packs: { items: number[]; kbOff: Int32Array; bytes: number },
    nThreads: number,
  ): Promise<void> {
    const kPack = alloc.alloc(packs.bytes);
    const vPack = alloc.alloc(packs.bytes);
    const kbOffPtr = alloc.alloc(packs.kbOff.byteLength);
    copyIn(kbOffPtr, packs.kbOff);
    const itemsPtr = alloc.alloc(packs.items.length * 4);
    new Int32Array(mem.buffer, itemsPtr, packs.items.length).set(packs.items);
    i32[Slot.KPACK] = kPack;
    i32[Slot.VPACK] = vPack;
    i32[Slot.KBOFF] = kbOffPtr;
    i32[Slot.ITEMS] = itemsPtr;
    i32[Slot.NITEMS] = packs.items.length / 3;
    await runKernel('pack_run', Math.min(nThreads, Math.max(1, packs.items.length / 3)));
  }

  function countPairs(p: Problem): number {
    // An upper bound is enough to decide threading: sq·sk per head.
    let n = 0;
    for (let b = 0; b < p.batch; b++) n += seqLenQ(p, b) * seqLenK(p, b);
    return n * p.headsQ;
  }

  async function forwardImpl(
    q: HostTensor,
    k: HostTensor,
    v: HostTensor,
    options: AttentionOptions,
  ): Promise<ForwardResult<HostTensor>> {
    alive();
    requireHostTensors(BACKEND_NAME, { q, k, v, bias: options.bias });
    const p = resolveProblem(q, k, v, options, ctx);
    const call = callThreads(options);
    const dp = Math.ceil(p.headDim / 8) * 8;
    const { br, bc } = blockSizes(dp, options as WasmSimdOptions);

    // Work items (b, h, q block), heaviest first when causal (later blocks see more keys).
    const items: number[] = [];
    let maxBlocks = 0;
    for (let b = 0; b < p.batch; b++) maxBlocks = Math.max(maxBlocks, Math.ceil(seqLenQ(p, b) / br));
    const heavyLast = p.causal || p.windowRight >= 0;
    for (let n = 0; n < maxBlocks; n++) {
      const qb = heavyLast ? maxBlocks - 1 - n : n;
      for (let b = 0; b < p.batch; b++) {
        if (qb * br >= seqLenQ(p, b)) continue;
        for (let h = 0; h < p.headsQ; h++) items.push(b, h, qb);
      }
    }
    const nItems = items.length / 3;
    const flops = 4 * p.headDim * countPairs(p);
    const nThreads = Math.max(1, Math.min(call.threads, nItems, flops < minParallelFlops ? 1 : call.threads));

    const outBytes = numel(p.outShape) * bytesOf(p.dtype);
    const sb = scratchBytes(br, bc, dp);
    const packs = packPlan(p, bc, dp);
    const total =
      HEAP_BASE +
      commonBytes(p, q, k, v) +
      outBytes +
      p.lseLength * 8 +
      items.length * 4 +
      packs.items.length * 4 +
      2 * packs.bytes +
      packs.kbOff.byteLength +
      sb * nThreads +
      8192; // alignment and gaps of the allocations
    ensureMemory(total);

    const alloc = new Allocator(ensureMemory);
    const ptrs = {
      q: alloc.alloc(q.data.byteLength),
      k: alloc.alloc(k.data.byteLength),
      v: alloc.alloc(v.data.byteLength),
    };
    const { i32 } = writeCommon(p, q, k, v, alloc, ptrs);
    const outPtr = alloc.alloc(outBytes);
    const mPtr = alloc.alloc(p.lseLength * 4);
    const lPtr = alloc.alloc(p.lseLength * 4);
    const itemsPtr = alloc.alloc(items.length * 4);
    new Int32Array(mem.buffer, itemsPtr, items.length).set(items);
    const scratch = alloc.alloc(sb * nThreads);
    i32[Slot.OUT] = outPtr;
    i32[Slot.M] = mPtr;
    i32[Slot.L] = lPtr;
    i32[Slot.ITEMS] = itemsPtr;
    i32[Slot.NITEMS] = nItems;
    i32[Slot.BR] = br;
    i32[Slot.BC] = bc;
    i32[Slot.SCRATCH] = scratch;
    i32[Slot.SCRATCHBYTES] = sb;
    await runPacks(i32, alloc, packs, nThreads);
    i32[Slot.ITEMS] = itemsPtr;
    i32[Slot.NITEMS] = nItems;
    await runKernel('fwd_run', nThreads);

    const out: HostTensor = {
      dtype: p.dtype,
      shape: [...p.outShape],
      data: readOut(outPtr, p.dtype, numel(p.outShape)),
    };
    const result: ForwardResult<HostTensor> = { out };
    if (p.returnLse) {
      const m = new Float32Array(mem.buffer, mPtr, p.lseLength);
      const l = new Float32Array(mem.buffer, lPtr, p.lseLength);
      const lse = new Float32Array(p.lseLength);
      for (let i = 0; i < lse.length; i++) {
        const li = l[i];
        lse[i] =
          li === 0 ? (Number.isNaN(m[i]) ? Number.NaN : Number.NEGATIVE_INFINITY) : m[i] + Math.log(li);
      }
      result.lse = lse;
    }
    return result;
  }

  async function backwardImpl(
    dout: HostTensor,
    q: HostTensor,
    k: HostTensor,
    v: HostTensor,
    out: HostTensor,
    lse: Float32Array,
    options: AttentionOptions,
  ): Promise<BackwardResult<HostTensor>> {
    alive();
    requireHostTensors(BACKEND_NAME, { dout, q, k, v, out, lse, bias: options.bias });
    const p = resolveBackwardProblem(dout, q, k, v, out, lse, options, ctx);
    const call = callThreads(options);
    const d = p.headDim;
    const dp = Math.ceil(d / 8) * 8;
    const { br, bc } = blockSizes(dp, options as WasmSimdOptions);
    const rowsQ = d === 0 ? 0 : numel(q.shape) / d;
    const rowsK = d === 0 ? 0 : numel(k.shape) / d;

    // Items (b, key head, key chunk). Paged KV: pages may be shared between sequences, so one item
    // per key head does every sequence (b = -1). Chunks split the key blocks of a sequence when there
    // are too few (b, key head) pairs to keep the threads busy; each chunk has its own dQ workspace,
    // summed in a fixed order, so the result does not depend on the thread count or the timing.
    const items: number[] = [];
    let nChunk = 1;
    const dqChunkFloats = rowsQ * dp;
    if (p.blockTable) {
      for (let h = 0; h < p.headsK; h++) items.push(-1, h, 0);
    } else {
      let maxKb = 1;
      for (let b = 0; b < p.batch; b++) maxKb = Math.max(maxKb, Math.ceil(seqLenK(p, b) / bc));
      const pairs = Math.max(1, p.batch * p.headsK);
      const byMemory = Math.max(1, Math.floor((256 * 2 ** 20) / Math.max(1, dqChunkFloats * 4)));
      nChunk = Math.max(1, Math.min(maxKb, Math.ceil(16 / pairs), byMemory));
      for (let c = 0; c < nChunk; c++)
        for (let b = 0; b < p.batch; b++) for (let h = 0; h < p.headsK; h++) items.push(b, h, c);
    }
    const nItems = items.length / 3;
    const flops = 10 * d * countPairs(p);
    const nThreads = Math.max(1, Math.min(call.threads, nItems, flops < minParallelFlops ? 1 : call.threads));

    const es = bytesOf(p.dtype);
    const qBytes = q.data.byteLength;
    const kBytes = k.data.byteLength;
    const sb = scratchBytes(br, bc, dp);
    const wsQ = nChunk * dqChunkFloats * 4 + (br + 8) * dp * 4 * p.headsQ;
    const wsK = rowsK * dp * 4;
    const total =
      HEAP_BASE +
      commonBytes(p, q, k, v) +
      2 * qBytes + // dout, out
      p.lseLength * 8 + // lse, D
      wsQ +
      2 * wsK +
      qBytes +
      2 * kBytes + // dq, dk, dv
      items.length * 4 +
      sb * nThreads +
      8192; // alignment and gaps of the allocations
    ensureMemory(total);

    const alloc = new Allocator(ensureMemory);
    const ptrs = { q: alloc.alloc(qBytes), k: alloc.alloc(kBytes), v: alloc.alloc(v.data.byteLength) };
    const { i32 } = writeCommon(p, q, k, v, alloc, ptrs);
    const doPtr = alloc.alloc(qBytes);
    const outPtr = alloc.alloc(qBytes);
    copyIn(doPtr, dout.data);
    copyIn(outPtr, out.data);
    const lsePtr = alloc.alloc(p.lseLength * 4);
    copyIn(lsePtr, lse);
    const dPtr = alloc.alloc(p.lseLength * 4);
    const dqws = alloc.alloc(wsQ);
    const dkws = alloc.alloc(wsK);
    const dvws = alloc.alloc(wsK);
    new Uint8Array(mem.buffer, dqws, wsQ).fill(0);
    new Uint8Array(mem.buffer, dkws, wsK).fill(0);
    new Uint8Array(mem.buffer, dvws, wsK).fill(0);
    const dqPtr = alloc.alloc(qBytes);
    const dkPtr = alloc.alloc(kBytes);
    const dvPtr = alloc.alloc(kBytes);
    const itemsPtr = alloc.alloc(items.length * 4);
    new Int32Array(mem.buffer, itemsPtr, items.length).set(items);
    const scratch = alloc.alloc(sb * nThreads);
    i32[Slot.OUT] = outPtr;
    i32[Slot.DO] = doPtr;
    i32[Slot.LSE] = lsePtr;
    i32[Slot.DD] = dPtr;
    i32[Slot.DQWS] = dqws;
    i32[Slot.DKWS] = dkws;
    i32[Slot.DVWS] = dvws;
    i32[Slot.NCHUNK] = nChunk;
    i32[Slot.DQCHUNK] = dqChunkFloats;
    i32[Slot.ITEMS] = itemsPtr;
    i32[Slot.NITEMS] = nItems;
    i32[Slot.BR] = br;
    i32[Slot.BC] = bc;
    i32[Slot.SCRATCH] = scratch;
    i32[Slot.SCRATCHBYTES] = sb;

    kernels.bwd_prep();
    await runKernel('bwd_run', nThreads);
    kernels.finish_rows(dqPtr, dqws, rowsQ, nChunk, dqChunkFloats, p.scale);
    kernels.finish_rows(dkPtr, dkws, rowsK, 1, 0, 1);
    kernels.finish_rows(dvPtr, dvws, rowsK, 1, 0, 1);
    const n = (ptr: number, t: HostTensor): HostTensor => ({
      dtype: p.dtype,
      shape: [...t.shape],
      data: readOut(ptr, p.dtype, numel(t.shape)),
    });
    void es;
    return { dq: n(dqPtr, q), dk: n(dkPtr, k), dv: n(dvPtr, v) };
  }

  const backend: WasmSimdBackend = {
    name: BACKEND_NAME,
    capabilities: CAPABILITIES,
    info: describeInfo(info),
    details: info,
    forward<T extends Tensor>(q: T, k: T, v: T, opts: AttentionOptions = {}): Promise<ForwardResult<T>> {
      return serial(() =>
        forwardImpl(q as HostTensor, k as HostTensor, v as HostTensor, opts),
      ) as unknown as Promise<ForwardResult<T>>;
    },
    backward<T extends Tensor>(
      dout: T,
      q: T,
      k: T,
      v: T,
      out: T,
      lse: LseOf<T>,
      opts: AttentionOptions = {},
    ): Promise<BackwardResult<T>> {
      return serial(() =>
        backwardImpl(
          dout as HostTensor,
          q as HostTensor,
          k as HostTensor,
          v as HostTensor,
          out as HostTensor,
          lse as Float32Array,
          opts,
        ),
      ) as unknown as Promise<BackwardResult<T>>;
    },
    memoryBytes: () => mem.buffer.byteLength,
    peakGflops(seconds = 0.3): number {
      alive();
      return measurePeak(kernels, mem, seconds);
    },
    async dispose(): Promise<void> {
      if (disposed) return;
      disposed = true;
      await queue.catch(() => {});
      if (pool) await pool.terminate();
      pool = null;
    },
  };
  return backend;
}
