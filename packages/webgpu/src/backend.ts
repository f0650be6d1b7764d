/**
 * The `webgpu` backend: validation by core's resolveProblem, then WGSL kernels (forward, split-KV decode,
 * FlashAttention-2 backward) dispatched over chunks of batches/heads that fit the adapter's binding limit.
 * Tensors stay on the GPU between calls (upload/download/free); 16-bit tensors are stored packed (two per
 * u32) and unpacked to float32 in a shader, results rounded back to nearest even in a shader.
 */
import {
  ALL_FEATURES,
  type AttentionOptions,
  type Backend,
  type BackwardResult,
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
  isFlashAttentionError,
  type LseOf,
  numel,
  type Problem,
  resolveBackwardProblem,
  resolveProblem,
  type Tensor,
  toFloat32,
} from '@flashattn/core';
import { type AcquiredDevice, acquireDevice, type GpuOptions } from './device.js';
import { FLAG, PARAM_BYTES, type Params, packParams } from './params.js';
import {
  backwardBindings,
  backwardDkvShader,
  backwardDqShader,
  backwardStorage,
  preprocessBindings,
  preprocessShader,
} from './wgsl-backward.js';
import {
  combineBindings,
  combineShader,
  DECODE_ROWS,
  DECODE_THREADS,
  type DecodeConfig,
  decodeBindings,
  decodeShader,
  decodeStorage,
  packShader,
  unpackShader,
} from './wgsl-decode.js';
import { forwardBindings, forwardShader, forwardStorage, type TileConfig } from './wgsl-forward.js';

const BU = { MAP_READ: 1, COPY_SRC: 4, COPY_DST: 8, UNIFORM: 64, STORAGE: 128 } as const;
const STORAGE_USAGE = BU.STORAGE | BU.COPY_SRC | BU.COPY_DST;
const COMPUTE_STAGE = 4;

export interface WebGPUBackendOptions extends GpuOptions {
  /** Use subgroup operations where the adapter has them (default true; false turns off both uses below). */
  subgroups?: boolean;
  /**
   * Reduce the forward's row max and row sum with subgroup shuffles where the adapter's subgroups have at
   * least 16 lanes (default true; elsewhere, lavapipe's 4 or 8 lanes included, through workgroup memory).
   * On an H200, like for like (fastest of 5–7 alternated calls; PERF.md change 22), the shuffles were
   * 0.2–2.8% faster at s ≤ 4096 and −0.3% to +1.3% at s = 8192 and 16384. The decode kernel's cross-lane
   * sums use shuffles whenever `subgroups` allows.
   */
  forwardSubgroups?: boolean;
  /** For tests: treat storage bindings as at most this many bytes, which forces the chunked path. */
  maxBindingBytes?: number;
  /** Split-KV decode for calls whose longest query sequence is at most this (default 16). */
  decodeMaxSeqQ?: number;
  /**
   * Head-dim buckets the kernels are compiled for (each bucket is one set of pipelines; a head dim runs
   * in the smallest bucket that holds it). Default [64, 128, 256]; fewer buckets mean fewer compilations,
   * which matters on software adapters (lavapipe compiles one attention pipeline in about a minute).
   */
  headDimBuckets?: number[];
  /** Decode tuning, for benchmarks (see DECODE_DEFAULTS). */
  decode?: DecodeTuning;
  /** Forward kernel variants, for timing them like for like (defaults: the fastest measured). */
  forward?: ForwardTuning;
}

export interface ForwardTuning {
  /** Global loads of the next stage issued before the arithmetic on this one. */
  prefetch?: boolean;
  /** Query rows per thread: 4 or 8. */
  rows?: number;
  /** Head-dim chunk of the S phase (a multiple of 4 among the tile table's), where it fits. */
  headChunk?: number;
  /** Row max by subgroup shuffles (where the adapter allows; overrides forwardSubgroups). */
  subgroups?: boolean;
  /** Threads per tile side: 16 (64×64 tiles, 256 threads) or 8 (32×32, 64 threads), where it fits. */
  tile?: number;
  /** Each workgroup takes Q blocks nb − 1 − x and x in one tile loop (TileConfig.pairs). */
  pairs?: boolean;
  /** Workgroups started longest first: Q blocks outermost in the grid (TileConfig.longestFirst). */
  longestFirst?: boolean;
  /** Each head's Q blocks started last first (TileConfig.reverse). */
  reverse?: boolean;
  /** Causal-diagonal tiles skip their wholly masked quads in S and P·V (TileConfig.diagonalSkip). */
  diagonalSkip?: boolean;
}

export interface DecodeTuning {
  /** Keys each lane group loads per loop pass: 1, 2 or 4. */
  keysPerPass?: number;
  /** Head-dim columns per lane: 8 or 16 (lanes per key = head-dim bucket / this). */
  laneColumns?: number;
  /** Loads of the next pass issued before this pass's arithmetic. */
  prefetch?: boolean;
  /** How many workgroups the key splits aim at. */
  workgroups?: number;
}

// Fastest of the forward variants timed on an H200 (PERF.md, runs 6 and 7): loads one stage ahead, 4 rows
// per thread, the S-phase head-dim chunk from the tile table (32 where it fits), 64×64 tiles, one Q block
// per workgroup in grid order (32×32 tiles, pairs of blocks, longest-first and reversed orders all lost,
// under a causal mask too; the diagonal skip gained at most 1.7%, at causal s ≤ 1024 only, and lost ~1%
// everywhere else).
const FORWARD_DEFAULTS: ForwardTuning = { prefetch: true, rows: 4, tile: 16, pairs: false };

// Fastest of the variants timed on an H200 (PERF.md, run 4): one key per lane group and pass with the
// next pass's loads in flight, 16 columns per lane, splits for about 256 workgroups.
const DECODE_DEFAULTS: Required<DecodeTuning> = {
  keysPerPass: 1,
  laneColumns: 16,
  prefetch: true,
  workgroups: 256,
};

type BindingKind = 'uniform' | 'read' | 'rw';

interface Ctx {
  acquired: AcquiredDevice;
  device: GPUDevice;
  epoch: number;
  lost: string | null;
  pipelines: Map<string, Promise<GPUComputePipeline>>;
  layouts: Map<string, GPUBindGroupLayout>;
  maxBinding: number;
  maxBuffer: number;
  align: number;
  maxGroups: number;
  storage: number;
  useSubgroups: boolean;
  /** Smallest subgroup size where subgroup operations may be used (0: none). */
  subgroupMin: number;
  scratch: Map<string, GPUBuffer>;
  buckets: number[];
}

let epochCounter = 0;

/** A tensor on the GPU. 16-bit dtypes are stored as packed bit patterns (two elements per u32). */
export class WebGPUTensor implements DeviceTensor {
  readonly kind = 'device' as const;
  readonly backend = 'webgpu';
  constructor(
    readonly dtype: DType,
    readonly shape: readonly number[],
    /** @internal */ public buffer: GPUBuffer | null,
    /** @internal */ readonly epoch: number,
    /** @internal */ readonly owner: object,
  ) {}
  get freed(): boolean {
    return this.buffer === null;
  }
}

function align4(n: number): number {
  return Math.max(4, Math.ceil(n / 4) * 4);
}

/** Buffer and binding sizes: whole vec4s, so that a kernel may read any tensor as array<vec4<f32>>. */
function align16(n: number): number {
  return Math.max(16, Math.ceil(n / 16) * 16);
}

function headDimBucket(d: number, buckets: number[] = [64, 128, 256]): number {
  for (const b of [...buckets].sort((x, y) => x - y))
    if (d <= b && (b === 64 || b === 128 || b === 256)) return b;
  return 256;
}

function tileConfig(
  DP: number,
  storage: number,
  subgroups: boolean,
  backward: boolean,
  headChunk?: number,
  tile?: number,
): TileConfig {
  const table: [number, number, number][] = [
    [16, 32, 16],
    [16, 32, 8],
    [16, 16, 16],
    [16, 16, 8],
    [16, 8, 8],
    [16, 8, 4],
    [8, 16, 8],
    [8, 8, 8],
    [8, 8, 4],
    [8, 4, 4],
  ];
  const pick = (t: [number, number, number]) =>
    (headChunk === undefined || t[1] === headChunk) && (tile === undefined || t[0] === tile);
  const tries = [...table.filter(pick), ...table];
  for (const [T, DC, VC] of tries) {
    const c: TileConfig = { T, DP, DC, VC, subgroups };
    const need = backward ? backwardStorage(c) : forwardStorage(c);
    if (need <= storage) {
      // Longer key chunks in the P·V phase where they fit in the space the S phase uses anyway
      // (fewer barriers per tile, no extra workgroup memory).
      while (c.VC * 2 <= 4 * T && c.VC * 2 * (DP / 4) <= 2 * 4 * T * (DC / 4 + 1)) c.VC *= 2;
      return c;
    }
  }
  return fail(
    'BACKEND_UNAVAILABLE',
    `the adapter's ${storage} bytes of workgroup storage are too few for head dim ${DP}`,
  );
}

function decodeConfig(
  DP: number,
  storage: number,
  subgroupMin: number,
  t: Required<DecodeTuning>,
): DecodeConfig {
  const G = Math.min(32, DP / (t.laneColumns === 8 ? 8 : 16));
  const NB = [1, 2, 4].includes(t.keysPerPass) ? t.keysPerPass : 2;
  for (const S of [4, 2, 1]) {
    const c: DecodeConfig = { DP, G, NB, S, shuffle: subgroupMin >= G, prefetch: t.prefetch };
    if (decodeStorage(c) <= storage) return c;
  }
  return fail(
    'BACKEND_UNAVAILABLE',
    `the adapter's ${storage} bytes of workgroup storage are too few for decode at head dim ${DP}`,
  );
}

interface Binding {
  buffer: GPUBuffer;
  offset: number;
  size: number;
}

/** An element range [lo, hi) of a tensor a chunk of work touches. */
type Window = [number, number];

interface Chunk {
  b0: number;
  b1: number;
  /** Key-head range; query heads are [kh0 * group, kh1 * group). */
  kh0: number;
  kh1: number;
}

/** Work of one call: temporary buffers, one command encoder, error scopes. */
class Run {
  temps: GPUBuffer[] = [];
  encoder: GPUCommandEncoder;
  constructor(
    readonly be: WebGPUBackendImpl,
    readonly ctx: Ctx,
  ) {
    this.encoder = ctx.device.createCommandEncoder();
  }

  buffer(bytes: number, usage: number = STORAGE_USAGE, temp = true): GPUBuffer {
    const size = align16(bytes);
    if (size > this.ctx.maxBuffer) {
      fail(
        'OUT_OF_MEMORY',
        `a buffer of ${size} bytes exceeds the adapter's maxBufferSize of ${this.ctx.maxBuffer}`,
      );
    }
    const b = this.ctx.device.createBuffer({ size, usage });
    if (temp) this.temps.push(b);
    return b;
  }

  upload(data: ArrayBufferView, temp = true): GPUBuffer {
    const bytes = data.byteLength;
    const b = this.buffer(bytes, STORAGE_USAGE, temp);
    writeBytes(this.ctx.device, b, data);
    return b;
  }

  /** float32 buffer of a tensor's values (the tensor's own buffer when it is a float32 device tensor). */
  f32(t: Tensor): GPUBuffer {
    const n = numel(t.shape);
    if (isDeviceTensor(t)) {
      const g = this.be.own(t, this.ctx);
      if (t.dtype === 'float32') return g;
      return this.unpack(g, n, t.dtype);
    }
    const h = t as HostTensor;
    if (h.dtype === 'float32') return this.upload(h.data);
    return this.unpack(this.upload(h.data), n, h.dtype);
  }

  unpack(src: GPUBuffer, n: number, dtype: DType): GPUBuffer {
    const dst = this.buffer(n * 4);
    this.convert('unpack', src, dst, n, dtype);
    return dst;
  }

  pack(src: GPUBuffer, n: number, dtype: DType, temp: boolean): GPUBuffer {
    const dst = this.buffer(n * 2, STORAGE_USAGE, temp);
    this.convert('pack', src, dst, n, dtype);
    return dst;
  }

  private convert(kind: 'unpack' | 'pack', src: GPUBuffer, dst: GPUBuffer, n: number, dtype: DType): void {
    if (n === 0) return;
    // Element chunks that start on a multiple of 128 elements keep both bindings 256-byte aligned.
    const per = Math.max(128, Math.floor(Math.min(this.ctx.maxBinding / 4, 2 ** 24 * 16) / 128) * 128);
    for (let e0 = 0; e0 < n; e0 += per) {
      const cnt = Math.min(per, n - e0);
      const f32Off = e0 * 4;
      const u16Off = e0 * 2;
      const f32Size = cnt * 4;
      const u16Size = align4(cnt * 2);
      const s = kind === 'unpack' ? { offset: u16Off, size: u16Size } : { offset: f32Off, size: f32Size };
      const d = kind === 'unpack' ? { offset: f32Off, size: f32Size } : { offset: u16Off, size: u16Size };
      const threads = kind === 'unpack' ? cnt : Math.ceil(cnt / 2);
      const groups = Math.ceil(threads / 256);
      const gx = Math.min(groups, this.ctx.maxGroups);
      const gy = Math.ceil(groups / gx);
      this.dispatch(
        kind,
        [
          { buffer: src, ...s },
          { buffer: dst, ...d },
        ],
        { n_elem: cnt, mode: dtype === 'bfloat16' ? 1 : 0 },
        [gx, gy, 1],
      );
    }
  }

  dispatch(key: string, bindings: Binding[], params: Params, grid: [number, number, number]): void {
    if (grid[0] === 0 || grid[1] === 0 || grid[2] === 0) return;
    const pipeline = this.be.pipelineSync(this.ctx, key);
    const ub = this.buffer(PARAM_BYTES, BU.UNIFORM | BU.COPY_DST);
    this.ctx.device.queue.writeBuffer(ub, 0, packParams(params));
    const entries: GPUBindGroupEntry[] = [{ binding: 0, resource: { buffer: ub } }];
    bindings.forEach((b, i) => {
      entries.push({ binding: i + 1, resource: { buffer: b.buffer, offset: b.offset, size: b.size } });
    });
    const group = this.ctx.device.createBindGroup({ layout: pipeline.getBindGroupLayout(0), entries });
    const pass = this.encoder.beginComputePass();
    pass.setPipeline(pipeline);
    pass.setBindGroup(0, group);
    pass.dispatchWorkgroups(grid[0], grid[1], grid[2]);
    pass.end();
  }

  /** Submits the work; with `reads`, copies those buffers out and returns their bytes. */
  async finish(reads: { buffer: GPUBuffer; bytes: number }[] = []): Promise<ArrayBuffer[]> {
    const staging = reads.map((r) => {
      const s = this.buffer(r.bytes, BU.MAP_READ | BU.COPY_DST);
      if (r.bytes > 0) this.encoder.copyBufferToBuffer(r.buffer, 0, s, 0, align4(r.bytes));
      return s;
    });
    this.ctx.device.queue.submit([this.encoder.finish()]);
    const out: ArrayBuffer[] = [];
    for (let i = 0; i < reads.length; i++) {
      const s = staging[i];
      await s.mapAsync(1);
      out.push(s.getMappedRange().slice(0, reads[i].bytes));
      s.unmap();
    }
    if (reads.length === 0) await this.ctx.device.queue.onSubmittedWorkDone();
    return out;
  }

  release(): void {
    for (const b of this.temps) b.destroy();
    this.temps = [];
  }
}

/** writeBuffer rejects views of shared memory and sizes that are not a multiple of 4: copy when needed. */
function writeBytes(device: GPUDevice, buffer: GPUBuffer, data: ArrayBufferView): void {
  const n = data.byteLength;
  if (n === 0) return;
  let src = new Uint8Array(data.buffer, data.byteOffset, n);
  const shared = typeof SharedArrayBuffer !== 'undefined' && data.buffer instanceof SharedArrayBuffer;
  if (shared || n % 4 !== 0 || data.byteOffset % 4 !== 0) {
    const copy = new Uint8Array(align4(n));
    copy.set(src);
    src = copy;
  }
  device.queue.writeBuffer(buffer, 0, src.buffer, src.byteOffset, src.byteLength);
}

interface MetaLayout {
  data: Int32Array;
  cuq: number;
  cuk: number;
  seqk: number;
  table: number;
  alibi: number;
}

function buildMeta(p: Problem): MetaLayout {
  const parts: Int32Array[] = [];
  let n = 0;
  const add = (a: Int32Array | null): number => {
    const at = n;
    if (a) {
      parts.push(a);
      n += a.length;
    }
    return at;
  };
  const cuq = add(p.cuSeqlensQ);
  const cuk = add(p.cuSeqlensK);
  const seqk = add(p.seqlensK);
  const table = add(p.blockTable);
  const alibi = add(p.alibiSlopes ? new Int32Array(Float32Array.from(p.alibiSlopes).buffer) : null);
  const data = new Int32Array(Math.max(1, n));
  let at = 0;
  for (const a of parts) {
    data.set(a, at);
    at += a.length;
  }
  return { data, cuq, cuk, seqk, table, alibi };
}

function baseParams(p: Problem, meta: MetaLayout): Params {
  let flags = 0;
  if (p.causal) flags |= FLAG.CAUSAL;
  if (p.cuSeqlensQ) flags |= FLAG.CU;
  if (p.seqlensK) flags |= FLAG.SEQK;
  if (p.blockTable) flags |= FLAG.PAGED;
  if (p.softcap > 0) flags |= FLAG.SOFTCAP;
  if (p.alibiSlopes) flags |= FLAG.ALIBI;
  if (p.bias) flags |= FLAG.BIAS;
  const params: Params = {
    batch: p.batch,
    sq: p.seqQ,
    sk: p.seqK,
    hq: p.headsQ,
    hk: p.headsK,
    group: p.groupSize,
    d: p.headDim,
    q_sb: p.qStrides.batch,
    q_ss: p.qStrides.seq,
    q_sh: p.qStrides.head,
    k_sb: p.kvStrides.batch,
    k_ss: p.kvStrides.seq,
    k_sh: p.kvStrides.head,
    lse_sb: p.cuSeqlensQ ? 0 : p.headsQ * p.seqQ,
    lse_sh: p.cuSeqlensQ ? p.totalQ : p.seqQ,
    scale: p.scale,
    softcap: p.softcap,
    wl: p.windowLeft,
    wr: p.windowRight,
    page_size: p.pageSize,
    max_pages: p.maxPages,
    m_cuq: meta.cuq,
    m_cuk: meta.cuk,
    m_seqk: meta.seqk,
    m_table: meta.table,
    m_alibi: meta.alibi,
    alibi_pb: p.alibiPerBatch ? 1 : 0,
  };
  if (p.bias) {
    const s = p.bias.strides;
    Object.assign(params, { bs0: s[0], bs1: s[1], bs2: s[2], bs3: s[3] });
  }
  if (p.dropout) {
    const thresh = Math.ceil(p.dropout.p * 2 ** 32);
    flags |= FLAG.DROP;
    if (thresh >= 2 ** 32) flags |= FLAG.DROPALL;
    Object.assign(params, {
      drop_thresh: Math.min(thresh, 2 ** 32 - 1),
      drop_k0: p.dropout.key0,
      drop_k1: p.dropout.key1,
      drop_off: p.dropout.offset,
      drop_scale: p.dropout.keepScale,
    });
  }
  params.flags = flags;
  return params;
}

// ---- element windows of a chunk, per tensor role
function qWindow(p: Problem, c: Chunk): Window {
  const s = p.qStrides;
  const h0 = c.kh0 * p.groupSize;
  const h1 = c.kh1 * p.groupSize;
  if (p.cuSeqlensQ) {
    const r0 = p.cuSeqlensQ[c.b0];
    const r1 = p.cuSeqlensQ[c.b1];
    if (r1 <= r0) return [0, 0];
    return [r0 * s.seq + h0 * s.head, (r1 - 1) * s.seq + (h1 - 1) * s.head + p.headDim];
  }
  if (p.seqQ === 0) return [0, 0];
  return [
    c.b0 * s.batch + h0 * s.head,
    (c.b1 - 1) * s.batch + (p.seqQ - 1) * s.seq + (h1 - 1) * s.head + p.headDim,
  ];
}

function kvWindow(p: Problem, c: Chunk): Window {
  const s = p.kvStrides;
  if (p.blockTable) return [0, p.totalK * s.seq];
  if (p.cuSeqlensK) {
    const r0 = p.cuSeqlensK[c.b0];
    const r1 = p.cuSeqlensK[c.b1];
    if (r1 <= r0) return [0, 0];
    return [r0 * s.seq + c.kh0 * s.head, (r1 - 1) * s.seq + (c.kh1 - 1) * s.head + p.headDim];
  }
  if (p.seqK === 0) return [0, 0];
  return [
    c.b0 * s.batch + c.kh0 * s.head,
    (c.b1 - 1) * s.batch + (p.seqK - 1) * s.seq + (c.kh1 - 1) * s.head + p.headDim,
  ];
}

function lseWindow(p: Problem, c: Chunk): Window {
  const h0 = c.kh0 * p.groupSize;
  const h1 = c.kh1 * p.groupSize;
  if (p.cuSeqlensQ) {
    const r0 = p.cuSeqlensQ[c.b0];
    const r1 = p.cuSeqlensQ[c.b1];
    return [h0 * p.totalQ + r0, (h1 - 1) * p.totalQ + r1];
  }
  return [(c.b0 * p.headsQ + h0) * p.seqQ, ((c.b1 - 1) * p.headsQ + h1 - 1) * p.seqQ + p.seqQ];
}

function biasWindow(p: Problem, c: Chunk): Window {
  if (!p.bias) return [0, 1];
  const s = p.bias.strides;
  const h0 = c.kh0 * p.groupSize;
  const h1 = c.kh1 * p.groupSize;
  if (p.seqQ === 0 || p.seqK === 0) return [0, 1];
  return [
    c.b0 * s[0] + h0 * s[1],
    (c.b1 - 1) * s[0] + (h1 - 1) * s[1] + (p.seqQ - 1) * s[2] + (p.seqK - 1) * s[3] + 1,
  ];
}

type Role = 'q' | 'kv' | 'lse' | 'bias';
const WINDOW: Record<Role, (p: Problem, c: Chunk) => Window> = {
  q: qWindow,
  kv: kvWindow,
  lse: lseWindow,
  bias: biasWindow,
};

class WebGPUBackendImpl implements Backend {
  readonly name = 'webgpu';
  capabilities: Capabilities;
  private ctx: Ctx | null = null;
  private ctxPromise: Promise<Ctx> | null = null;
  private disposed = false;
  private queue: Promise<unknown> = Promise.resolve();
  readonly adapterInfo: { adapter: string; subgroups: boolean; shaderF16: boolean };
  readonly info: string;

  constructor(
    readonly options: WebGPUBackendOptions,
    first: Ctx,
  ) {
    this.ctx = first;
    this.capabilities = { dtypes: [...DTYPES], maxHeadDim: 256, features: [...ALL_FEATURES] };
    if (first.acquired.device.limits.maxStorageBuffersPerShaderStage < 9) {
      this.capabilities.features = this.capabilities.features.filter((f) => f !== 'backward');
    }
    this.adapterInfo = {
      adapter: first.acquired.description,
      subgroups: first.subgroupMin > 0,
      shaderF16: first.acquired.shaderF16,
    };
    this.info = `${first.acquired.description}; subgroups ${first.subgroupMin > 0 ? `on (min size ${first.subgroupMin})` : 'off'}, forward row max through ${first.useSubgroups ? 'shuffles' : 'workgroup memory'}; shader-f16 ${
      first.acquired.shaderF16 ? 'present (16-bit data is unpacked from u32 either way)' : 'absent'
    }`;
  }

  static async makeCtx(options: WebGPUBackendOptions): Promise<Ctx> {
    const acquired = await acquireDevice(options);
    const { device } = acquired;
    const L = device.limits;
    const ctx: Ctx = {
      acquired,
      device,
      epoch: ++epochCounter,
      lost: null,
      pipelines: new Map(),
      layouts: new Map(),
      maxBinding: Math.min(
        L.maxStorageBufferBindingSize,
        options.maxBindingBytes ?? Number.POSITIVE_INFINITY,
      ),
      maxBuffer: L.maxBufferSize,
      align: L.minStorageBufferOffsetAlignment,
      maxGroups: L.maxComputeWorkgroupsPerDimension,
      storage: L.maxComputeWorkgroupStorageSize,
      useSubgroups:
        (options.subgroups ?? true) &&
        (options.forwardSubgroups ?? true) &&
        acquired.subgroups &&
        acquired.subgroupMinSize >= 16,
      subgroupMin: (options.subgroups ?? true) && acquired.subgroups ? acquired.subgroupMinSize : 0,
      scratch: new Map(),
      // Software adapters compile slowly (about a minute per attention pipeline on lavapipe): fewer buckets.
      buckets:
        options.headDimBuckets ??
        (/llvmpipe|lavapipe|swiftshader/i.test(acquired.description) ? [64, 256] : [64, 128, 256]),
    };
    device.lost.then((info) => {
      ctx.lost = `${info.reason}: ${info.message}`;
    });
    return ctx;
  }

  /** The live device context; a lost one is replaced by a new device here (the call after a loss). */
  private async context(): Promise<Ctx> {
    if (this.ctx && !this.ctx.lost) return this.ctx;
    if (!this.ctxPromise) {
      this.ctx = null;
      this.ctxPromise = WebGPUBackendImpl.makeCtx(this.options).then(
        (c) => {
          this.ctx = c;
          this.ctxPromise = null;
          return c;
        },
        (e) => {
          this.ctxPromise = null;
          throw e;
        },
      );
    }
    return this.ctxPromise;
  }

  /** The device currently in use (for benchmarks and tests). */
  async gpuDevice(): Promise<GPUDevice> {
    return (await this.context()).device;
  }

  /** For tests: destroys the device as a driver reset would; the next call gets a new one. */
  async loseDeviceForTest(): Promise<void> {
    const ctx = await this.context();
    ctx.device.destroy();
    await ctx.device.lost;
  }

  private alive(): void {
    if (this.disposed) fail('DISPOSED', 'the webgpu backend was disposed');
  }

  /** Calls run one after another: error scopes are per device, and results equal the serial order. */
  private serial<R>(fn: () => Promise<R>): Promise<R> {
    const next = this.queue.then(fn, fn);
    this.queue = next.catch(() => {});
    return next;
  }

  own(t: DeviceTensor, ctx: Ctx): GPUBuffer {
    if (!(t instanceof WebGPUTensor) || t.owner !== this) {
      fail(
        'INVALID_OPTION',
        `a device tensor of backend ${describe(t.backend)} was given to this webgpu backend (download it first)`,
      );
    }
    if (t.buffer === null) fail('INVALID_OPTION', 'a webgpu tensor was used after free()');
    if (t.epoch !== ctx.epoch) {
      fail('DEVICE_LOST', 'this tensor lived on a GPU device that was lost; upload its data again');
    }
    return t.buffer;
  }

  pipelineSync(ctx: Ctx, key: string): GPUComputePipeline {
    const p = (ctx as Ctx & { ready?: Map<string, GPUComputePipeline> }).ready?.get(key);
    if (!p) throw new Error(`internal: pipeline ${key} was not prepared`);
    return p;
  }

  /** Compiles (once per device and configuration) the pipelines named by keys. */
  private async prepare(ctx: Ctx, keys: string[]): Promise<void> {
    const c = ctx as Ctx & { ready?: Map<string, GPUComputePipeline> };
    c.ready ??= new Map();
    await Promise.all(
      keys.map(async (key) => {
        if (c.ready?.has(key)) return;
        let pr = ctx.pipelines.get(key);
        if (!pr) {
          pr = this.compile(ctx, key);
          ctx.pipelines.set(key, pr);
          pr.catch(() => ctx.pipelines.delete(key));
        }
        c.ready?.set(key, await pr);
      }),
    );
  }

  private async compile(ctx: Ctx, key: string): Promise<GPUComputePipeline> {
    const [kind, ...rest] = key.split(':');
    const nums = rest.map(Number);
    let code: string;
    let kinds: BindingKind[];
    if (kind === 'fwd' || kind === 'dq' || kind === 'dkv') {
      const [T, DP, DC, VC, sg, pf, rows, pairs, lpt, rev, dg] = nums;
      const tc: TileConfig = {
        T,
        DP,
        DC,
        VC,
        subgroups: sg === 1,
        prefetch: pf === 1,
        rows,
        pairs: pairs === 1,
        longestFirst: lpt === 1,
        reverse: rev === 1,
        diagonalSkip: dg === 1,
      };
      code =
        kind === 'fwd' ? forwardShader(tc) : kind === 'dq' ? backwardDqShader(tc) : backwardDkvShader(tc);
      kinds = kind === 'fwd' ? forwardBindings() : backwardBindings(kind === 'dq' ? 1 : 2);
    } else if (kind === 'dec') {
      const [DP, G, NB, S, sh, pf] = nums;
      code = decodeShader({ DP, G, NB, S, shuffle: sh === 1, prefetch: pf === 1 });
      kinds = decodeBindings();
    } else if (kind === 'comb') {
      code = combineShader(nums[0]);
      kinds = combineBindings();
    } else if (kind === 'pre') {
      code = preprocessShader();
      kinds = preprocessBindings();
    } else if (kind === 'unpack' || kind === 'pack') {
      code = kind === 'unpack' ? unpackShader() : packShader();
      kinds = ['uniform', 'read', 'rw'];
    } else {
      throw new Error(`internal: unknown kernel ${key}`);
    }
    const layoutKey = kinds.join(',');
    let layout = ctx.layouts.get(layoutKey);
    if (!layout) {
      layout = ctx.device.createBindGroupLayout({
        entries: kinds.map((k, i) => ({
          binding: i,
          visibility: COMPUTE_STAGE,
          buffer: { type: k === 'uniform' ? 'uniform' : k === 'read' ? 'read-only-storage' : 'storage' },
        })),
      });
      ctx.layouts.set(layoutKey, layout);
    }
    const module = ctx.device.createShaderModule({ code, label: key });
    try {
      return await ctx.device.createComputePipelineAsync({
        label: key,
        layout: ctx.device.createPipelineLayout({ bindGroupLayouts: [layout] }),
        compute: { module, entryPoint: 'main' },
      });
    } catch (e) {
      const info = await module.getCompilationInfo();
      const msgs = info.messages.map((m) => `${m.type} ${m.lineNum}:${m.linePos} ${m.message}`).join('\n');
      throw new Error(`internal: compiling ${key} failed: ${(e as Error).message}\n${msgs}`);
    }
  }

  /** Runs fn with a Run on the live device, turning device loss and allocation failures into SPEC errors. */
  private async withRun<R>(fn: (run: Run, ctx: Ctx) => Promise<R>): Promise<R> {
    const ctx = await this.context();
    const device = ctx.device;
    const run = new Run(this, ctx);
    device.pushErrorScope('out-of-memory');
    device.pushErrorScope('validation');
    let result: R;
    try {
      result = await fn(run, ctx);
    } catch (e) {
      await device.popErrorScope().catch(() => null);
      await device.popErrorScope().catch(() => null);
      run.release();
      if (ctx.lost && !isFlashAttentionError(e)) {
        throw new FlashAttentionError(
          'DEVICE_LOST',
          `the GPU device was lost (${ctx.lost}); the next call uses a new device`,
          {
            cause: e,
          },
        );
      }
      throw e;
    }
    const validation = await device.popErrorScope().catch(() => null);
    const oom = await device.popErrorScope().catch(() => null);
    run.release();
    if (ctx.lost) {
      fail('DEVICE_LOST', `the GPU device was lost (${ctx.lost}); the next call uses a new device`);
    }
    if (oom) fail('OUT_OF_MEMORY', `the GPU ran out of memory: ${oom.message}`);
    if (validation) throw new Error(`internal WebGPU validation error: ${validation.message}`);
    return result;
  }

  // ---------------------------------------------------------------------------------------------
  async upload(host: HostTensor): Promise<Tensor> {
    this.alive();
    return this.serial(() =>
      this.withRun(async (run, ctx) => {
        if (typeof host !== 'object' || host === null || !DTYPES.includes(host.dtype)) {
          fail(
            'INVALID_DTYPE',
            `upload needs a host tensor with a dtype of ${DTYPES.join(', ')}, got ${describe(host)}`,
          );
        }
        const n = numel(host.shape);
        const ok =
          host.dtype === 'float32' ? host.data instanceof Float32Array : host.data instanceof Uint16Array;
        if (!ok || host.data.length !== n) {
          fail(
            'INVALID_SHAPE',
            `upload: data must be a ${host.dtype === 'float32' ? 'Float32Array' : 'Uint16Array'} of ${n} elements`,
          );
        }
        const buf = run.upload(host.data, false);
        await run.finish();
        return new WebGPUTensor(host.dtype, [...host.shape], buf, ctx.epoch, this);
      }),
    );
  }

  async download(t: Tensor): Promise<HostTensor> {
    this.alive();
    if (!isDeviceTensor(t)) return t as HostTensor;
    return this.serial(() =>
      this.withRun(async (run, ctx) => {
        const buf = this.own(t, ctx);
        const n = numel(t.shape);
        const [bytes] = await run.finish([{ buffer: buf, bytes: t.dtype === 'float32' ? n * 4 : n * 2 }]);
        const data = dataArrayFor(t.dtype, n);
        new Uint8Array(data.buffer).set(new Uint8Array(bytes));
        return { dtype: t.dtype, shape: [...t.shape], data };
      }),
    );
  }

  free(t: Tensor): void {
    if (t instanceof WebGPUTensor && t.owner === this && t.buffer) {
      t.buffer.destroy();
      t.buffer = null;
    }
  }

  async dispose(): Promise<void> {
    if (this.disposed) return;
    this.disposed = true;
    await this.queue.catch(() => {});
    const ctx = this.ctx;
    this.ctx = null;
    if (ctx && !ctx.lost) {
      ctx.lost = 'disposed';
      ctx.device.destroy();
    }
  }

  // ---------------------------------------------------------------------------------------------
  private checkKinds(tensors: Record<string, unknown>): boolean {
    const entries = Object.entries(tensors).filter(([, t]) => t !== undefined);
    const dev = entries.filter(([, t]) => isDeviceTensor(t));
    if (dev.length > 0 && dev.length !== entries.length) {
      fail(
        'INVALID_OPTION',
        `${dev.map(([n]) => n).join(', ')} ${dev.length === 1 ? 'is a device tensor' : 'are device tensors'} but ${entries
          .filter(([, t]) => !isDeviceTensor(t))
          .map(([n]) => n)
          .join(', ')} not: give all host tensors or all device tensors`,
      );
    }
    return dev.length > 0;
  }

  /** Chunks of (batches × key heads) whose windows fit one binding each. */
  private plan(p: Problem, ctx: Ctx, roles: Role[], extra: (c: Chunk) => number = () => 0): Chunk[] {
    const limit = ctx.maxBinding;
    const fits = (c: Chunk): boolean => {
      for (const r of roles) {
        const [lo, hi] = WINDOW[r](p, c);
        const start = Math.floor((lo * 4) / ctx.align) * ctx.align;
        if (align16(hi * 4) - start > limit) return false;
      }
      return extra(c) <= limit;
    };
    const chunks: Chunk[] = [];
    const maxB = Math.min(p.batch, ctx.maxGroups);
    const all: Chunk = { b0: 0, b1: p.batch, kh0: 0, kh1: p.headsK };
    if (p.batch <= maxB && fits(all)) return [all];
    let b = 0;
    while (b < p.batch) {
      let n = 1;
      if (fits({ b0: b, b1: b + 1, kh0: 0, kh1: p.headsK })) {
        let lo = 1;
        let hi = Math.min(maxB, p.batch - b);
        while (lo < hi) {
          const mid = Math.ceil((lo + hi) / 2);
          if (fits({ b0: b, b1: b + mid, kh0: 0, kh1: p.headsK })) lo = mid;
          else hi = mid - 1;
        }
        n = lo;
        chunks.push({ b0: b, b1: b + n, kh0: 0, kh1: p.headsK });
      } else {
        let kh = 0;
        while (kh < p.headsK) {
          let m = 0;
          while (kh + m < p.headsK && fits({ b0: b, b1: b + 1, kh0: kh, kh1: kh + m + 1 })) m++;
          if (m === 0) {
            fail(
              'OUT_OF_MEMORY',
              `one batch and key head of this problem needs a storage binding larger than the adapter's maxStorageBufferBindingSize (${limit} bytes)`,
            );
          }
          chunks.push({ b0: b, b1: b + 1, kh0: kh, kh1: kh + m });
          kh += m;
        }
      }
      b += n;
    }
    return chunks;
  }

  private bind(ctx: Ctx, buffer: GPUBuffer, w: Window, whole: boolean, elemOffset = 0): [Binding, number] {
    if (whole) return [{ buffer, offset: 0, size: buffer.size }, 0];
    const lo = w[0] + elemOffset;
    const hi = w[1] + elemOffset;
    const start = Math.min(Math.floor((lo * 4) / ctx.align) * ctx.align, Math.max(0, buffer.size - 16));
    const end = Math.min(buffer.size, Math.max(start + 16, align16(hi * 4)));
    return [{ buffer, offset: start, size: end - start }, -(start / 4)];
  }

  // ---------------------------------------------------------------------------------------------
  async forward<T extends Tensor>(
    q: T,
    k: T,
    v: T,
    options: AttentionOptions = {},
  ): Promise<ForwardResult<T>> {
    return this.forwardInternal(q, k, v, options) as Promise<ForwardResult<T>>;
  }

  /**
   * For benchmarks: seconds per forward of device-resident inputs, the call encoded `reps` times into one
   * submission (so host overhead is not timed).
   */
  async timeForward(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    options: AttentionOptions,
    reps: number,
  ): Promise<number> {
    return (await this.forwardInternal(q, k, v, options, reps)) as number;
  }

  /** For benchmarks: seconds per backward of device-resident inputs (see timeForward). */
  async timeBackward(
    dout: Tensor,
    q: Tensor,
    k: Tensor,
    v: Tensor,
    out: Tensor,
    lse: DeviceTensor,
    options: AttentionOptions,
    reps: number,
  ): Promise<number> {
    return (await this.backwardInternal(dout, q, k, v, out, lse, options, reps)) as number;
  }

  private async timed(run: Run, ctx: Ctx, encode: () => void, reps: number): Promise<number> {
    encode();
    run.ctx.device.queue.submit([run.encoder.finish()]);
    await ctx.device.queue.onSubmittedWorkDone();
    run.encoder = ctx.device.createCommandEncoder();
    for (let r = 0; r < reps; r++) encode();
    const cb = run.encoder.finish();
    const t0 = performance.now();
    ctx.device.queue.submit([cb]);
    await ctx.device.queue.onSubmittedWorkDone();
    const t = (performance.now() - t0) / 1000 / reps;
    run.encoder = ctx.device.createCommandEncoder();
    return t;
  }

  private async forwardInternal<T extends Tensor>(
    q: T,
    k: T,
    v: T,
    options: AttentionOptions = {},
    reps = 0,
  ): Promise<ForwardResult<T> | number> {
    this.alive();
    const p = resolveProblem(q, k, v, options, { capabilities: this.capabilities, backend: 'webgpu' });
    const onDevice = this.checkKinds({ q, k, v });
    return this.serial(() =>
      this.withRun(async (run, ctx) => {
        const DP = headDimBucket(p.headDim, ctx.buckets);
        const decode = p.seqQ <= (this.options.decodeMaxSeqQ ?? 16) && p.seqK > 0;
        const ft = { ...FORWARD_DEFAULTS, ...this.options.forward };
        const sg = ft.subgroups === undefined ? ctx.useSubgroups : ft.subgroups && ctx.subgroupMin >= 16;
        const tc = tileConfig(DP, ctx.storage, sg, false, ft.headChunk, ft.tile);
        tc.prefetch = ft.prefetch === true;
        tc.rows = tc.T === 16 && ft.rows === 8 ? 8 : 4;
        tc.pairs = ft.pairs === true;
        tc.longestFirst = ft.longestFirst === true;
        tc.reverse = ft.reverse === true;
        tc.diagonalSkip = ft.diagonalSkip === true;
        const tune = { ...DECODE_DEFAULTS, ...this.options.decode };
        const dc = decodeConfig(DP, ctx.storage, ctx.subgroupMin, tune);
        const fwdKey = `fwd:${tc.T}:${DP}:${tc.DC}:${tc.VC}:${tc.subgroups ? 1 : 0}:${tc.prefetch ? 1 : 0}:${tc.rows}:${tc.pairs ? 1 : 0}:${tc.longestFirst ? 1 : 0}:${tc.reverse ? 1 : 0}:${tc.diagonalSkip ? 1 : 0}`;
        const decKey = `dec:${DP}:${dc.G}:${dc.NB}:${dc.S}:${dc.shuffle ? 1 : 0}:${dc.prefetch ? 1 : 0}`;
        const keys = decode ? [decKey, `comb:${DP}`] : [fwdKey];
        if (p.dtype !== 'float32' || (p.bias && p.bias.tensor.dtype !== 'float32'))
          keys.push('unpack', 'pack');
        await this.prepare(ctx, keys);

        const qb = run.f32(q);
        const kb = run.f32(k);
        const vb = run.f32(v);
        const biasB = p.bias ? this.biasBuffer(run, p.bias.tensor) : run.buffer(4);
        const meta = buildMeta(p);
        const metaB = run.upload(meta.data);
        const nOut = numel(p.outShape);
        const outIsFinal = p.dtype === 'float32';
        const outF = run.buffer(nOut * 4, STORAGE_USAGE, !(outIsFinal && onDevice));
        const lseB = run.buffer(p.lseLength * 4, STORAGE_USAGE, !onDevice);
        const base = baseParams(p, meta);

        const buffers = { qb, kb, vb, biasB, metaB, outF, lseB };
        const encode = () => {
          if (decode) this.encodeDecode(run, ctx, p, base, DP, dc, tune, decKey, buffers);
          else this.encodeForward(run, ctx, p, base, tc, fwdKey, buffers);
        };
        if (reps > 0) {
          const t = await this.timed(run, ctx, encode, reps);
          outF.destroy();
          lseB.destroy();
          return t;
        }
        encode();

        const outB = outIsFinal ? outF : run.pack(outF, nOut, p.dtype, !onDevice);
        if (onDevice) {
          await run.finish();
          const out = new WebGPUTensor(p.dtype, p.outShape, outB, ctx.epoch, this);
          const res: ForwardResult<DeviceTensor> = { out };
          if (p.returnLse) res.lse = new WebGPUTensor('float32', p.lseShape, lseB, ctx.epoch, this);
          else lseB.destroy();
          return res as unknown as ForwardResult<T>;
        }
        const reads = [{ buffer: outB, bytes: p.dtype === 'float32' ? nOut * 4 : nOut * 2 }];
        if (p.returnLse) reads.push({ buffer: lseB, bytes: p.lseLength * 4 });
        const [ob, lb] = await run.finish(reads);
        const data = dataArrayFor(p.dtype, nOut);
        new Uint8Array(data.buffer).set(new Uint8Array(ob));
        const res: ForwardResult<HostTensor> = { out: { dtype: p.dtype, shape: [...p.outShape], data } };
        if (p.returnLse) res.lse = new Float32Array(lb);
        return res as unknown as ForwardResult<T>;
      }),
    );
  }

  private biasBuffer(run: Run, t: Tensor): GPUBuffer {
    if (isDeviceTensor(t)) return run.f32(t);
    return run.upload(toFloat32(t as HostTensor));
  }

  private encodeForward(
    run: Run,
    ctx: Ctx,
    p: Problem,
    base: Params,
    tc: TileConfig,
    key: string,
    b: {
      qb: GPUBuffer;
      kb: GPUBuffer;
      vb: GPUBuffer;
      biasB: GPUBuffer;
      metaB: GPUBuffer;
      outF: GPUBuffer;
      lseB: GPUBuffer;
    },
  ): void {
    const chunks = this.plan(p, ctx, ['q', 'kv', 'lse', 'bias']);
    const whole = chunks.length === 1;
    const BR = 4 * tc.T;
    const blocks = Math.ceil(p.seqQ / BR);
    const nx = tc.pairs ? Math.ceil(blocks / 2) : blocks;
    for (const c of chunks) {
      const [qB, qBase] = this.bind(ctx, b.qb, qWindow(p, c), whole);
      const [kB, kBase] = this.bind(ctx, b.kb, kvWindow(p, c), whole);
      const [vB, vBase] = this.bind(ctx, b.vb, kvWindow(p, c), whole);
      const [oB, oBase] = this.bind(ctx, b.outF, qWindow(p, c), whole);
      const [lB, lBase] = this.bind(ctx, b.lseB, lseWindow(p, c), whole);
      const [bB, bBase] = this.bind(ctx, b.biasB, biasWindow(p, c), whole || !p.bias);
      const params: Params = {
        ...base,
        q_base: qBase,
        k_base: kBase,
        v_base: vBase,
        o_base: oBase,
        lse_base: lBase,
        bias_base: bBase,
        b0: c.b0,
        h0: c.kh0 * p.groupSize,
      };
      run.dispatch(
        key,
        [qB, kB, vB, { buffer: b.metaB, offset: 0, size: b.metaB.size }, bB, oB, lB],
        params,
        tc.longestFirst
          ? [(c.kh1 - c.kh0) * p.groupSize, c.b1 - c.b0, nx]
          : [nx, (c.kh1 - c.kh0) * p.groupSize, c.b1 - c.b0],
      );
    }
  }

  /**
   * A scratch buffer kept on the device between calls (the split partials): a fresh buffer per call would
   * also be cleared by the implementation before first use. Calls are serial, so one copy suffices; a
   * buffer outgrown is destroyed only after this call's work (it may still be in an earlier encoding).
   */
  private scratch(run: Run, name: 'op' | 'lp', bytes: number): GPUBuffer {
    const ctx = run.ctx;
    const old = ctx.scratch.get(name);
    if (old && old.size >= bytes) return old;
    if (old) run.temps.push(old);
    const b = run.buffer(bytes, STORAGE_USAGE, false);
    ctx.scratch.set(name, b);
    return b;
  }

  private encodeDecode(
    run: Run,
    ctx: Ctx,
    p: Problem,
    base: Params,
    DP: number,
    dc: DecodeConfig,
    tune: Required<DecodeTuning>,
    key: string,
    b: {
      qb: GPUBuffer;
      kb: GPUBuffer;
      vb: GPUBuffer;
      biasB: GPUBuffer;
      metaB: GPUBuffer;
      outF: GPUBuffer;
      lseB: GPUBuffer;
    },
  ): void {
    // Decode is a pure stream of K and V: enough splits that about decodeWorkgroups workgroups (several
    // per multiprocessor on a large GPU) keep loads in flight, each split at least four loop passes long.
    const rowBlocks = Math.ceil((p.seqQ * p.groupSize) / DECODE_ROWS);
    const units = Math.max(1, p.batch * p.headsK * rowBlocks);
    const perPass = (DECODE_THREADS / dc.G) * dc.NB;
    const maxSplits = Math.max(1, Math.ceil(p.seqK / (4 * perPass)));
    let nSplit = Math.min(maxSplits, Math.max(1, Math.ceil(tune.workgroups / units)), 1024);
    nSplit = Math.max(1, Math.min(nSplit, Math.floor(ctx.maxGroups / p.headsK)));
    const rows = p.lseLength;
    const opB = this.scratch(run, 'op', rows * nSplit * DP * 4);
    const lpB = this.scratch(run, 'lp', rows * nSplit * 4);
    const partBytes = (c: Chunk) => {
      const [lo, hi] = lseWindow(p, c);
      return (hi - lo) * nSplit * DP * 4;
    };
    const chunks = this.plan(p, ctx, ['q', 'kv', 'lse', 'bias'], partBytes);
    const whole = chunks.length === 1 && opB.size <= ctx.maxBinding;
    for (const c of chunks) {
      const [qB, qBase] = this.bind(ctx, b.qb, qWindow(p, c), whole);
      const [kB, kBase] = this.bind(ctx, b.kb, kvWindow(p, c), whole);
      const [vB, vBase] = this.bind(ctx, b.vb, kvWindow(p, c), whole);
      const [bB, bBase] = this.bind(ctx, b.biasB, biasWindow(p, c), whole || !p.bias);
      const lw = lseWindow(p, c);
      // Partials are indexed by absolute lse row: bind them whole when they fit, else by window.
      const opW: Window = [lw[0] * nSplit * DP, lw[1] * nSplit * DP];
      const lpW: Window = [lw[0] * nSplit, lw[1] * nSplit];
      const [opBind, opBase] = this.bind(ctx, opB, opW, whole);
      const [lpBind, lpBase] = this.bind(ctx, lpB, lpW, whole);
      const meta = { buffer: b.metaB, offset: 0, size: b.metaB.size };
      const params: Params = {
        ...base,
        q_base: qBase,
        k_base: kBase,
        v_base: vBase,
        bias_base: bBase,
        b0: c.b0,
        h0: c.kh0,
        n_split: nSplit,
        x_base: opBase,
        y_base: lpBase,
      };
      run.dispatch(key, [qB, kB, vB, meta, bB, opBind, lpBind], params, [
        nSplit * (c.kh1 - c.kh0),
        rowBlocks,
        c.b1 - c.b0,
      ]);
      const [oB, oBase] = this.bind(ctx, b.outF, qWindow(p, c), whole);
      const [lB, lBase] = this.bind(ctx, b.lseB, lseWindow(p, c), whole);
      run.dispatch(
        `comb:${DP}`,
        [opBind, lpBind, meta, bB, oB, lB],
        {
          ...base,
          o_base: oBase,
          lse_base: lBase,
          b0: c.b0,
          h0: c.kh0 * p.groupSize,
          n_split: nSplit,
          x_base: opBase,
          y_base: lpBase,
        },
        [p.seqQ, (c.kh1 - c.kh0) * p.groupSize, c.b1 - c.b0],
      );
    }
  }

  // ---------------------------------------------------------------------------------------------
  async backward<T extends Tensor>(
    dout: T,
    q: T,
    k: T,
    v: T,
    out: T,
    lse: LseOf<T>,
    options: AttentionOptions = {},
  ): Promise<BackwardResult<T>> {
    return this.backwardInternal(dout, q, k, v, out, lse as Float32Array | DeviceTensor, options) as Promise<
      BackwardResult<T>
    >;
  }

  private async backwardInternal<T extends Tensor>(
    dout: T,
    q: T,
    k: T,
    v: T,
    out: T,
    lse: Float32Array | DeviceTensor,
    options: AttentionOptions = {},
    reps = 0,
  ): Promise<BackwardResult<T> | number> {
    this.alive();
    const p = resolveBackwardProblem(dout, q, k, v, out, lse as Float32Array | DeviceTensor, options, {
      capabilities: this.capabilities,
      backend: 'webgpu',
    });
    const onDevice = this.checkKinds({ dout, q, k, v, out });
    if (onDevice !== isDeviceTensor(lse)) {
      fail(
        'INVALID_OPTION',
        `lse must be ${onDevice ? 'a device tensor' : 'a Float32Array'} like the other inputs`,
      );
    }
    let accumulate = false;
    if (p.blockTable) {
      // A page shared by several sequences gets the sum of their gradients: one sequence per pass.
      const seen = new Map<number, number>();
      for (let b = 0; b < p.batch; b++) {
        const len = p.seqlensK ? p.seqlensK[b] : p.seqK;
        const pages = Math.ceil(len / p.pageSize);
        for (let i = 0; i < pages; i++) {
          const page = p.blockTable[b * p.maxPages + i];
          const prev = seen.get(page);
          if (prev === b) {
            fail(
              'UNSUPPORTED_FEATURE',
              `webgpu backward: blockTable[${b}] names page ${page} twice within one sequence`,
            );
          }
          if (prev !== undefined) accumulate = true;
          seen.set(page, b);
        }
      }
    }
    return this.serial(() =>
      this.withRun(async (run, ctx) => {
        const DP = headDimBucket(p.headDim, ctx.buckets);
        const tc = tileConfig(DP, ctx.storage, false, true);
        const tail = `${tc.T}:${DP}:${tc.DC}:${tc.VC}:0`;
        const keys = [`dq:${tail}`, `dkv:${tail}`, 'pre'];
        if (p.dtype !== 'float32' || (p.bias && p.bias.tensor.dtype !== 'float32'))
          keys.push('unpack', 'pack');
        await this.prepare(ctx, keys);
        const qb = run.f32(q);
        const kb = run.f32(k);
        const vb = run.f32(v);
        const dob = run.f32(dout);
        const ob = run.f32(out);
        const biasB = p.bias ? this.biasBuffer(run, p.bias.tensor) : run.buffer(4);
        const meta = buildMeta(p);
        const metaB = run.upload(meta.data);
        const L = p.lseLength;
        const ld = run.buffer(2 * L * 4);
        if (isDeviceTensor(lse)) {
          if (L > 0) run.encoder.copyBufferToBuffer(this.own(lse, ctx), 0, ld, 0, L * 4);
        } else {
          writeBytes(ctx.device, ld, lse as Float32Array);
        }
        const nq = numel(q.shape);
        const nk = numel(k.shape);
        const keep = !(onDevice && p.dtype === 'float32');
        const dq = run.buffer(nq * 4, STORAGE_USAGE, keep);
        const dk = run.buffer(nk * 4, STORAGE_USAGE, keep);
        const dv = run.buffer(nk * 4, STORAGE_USAGE, keep);
        const base = baseParams(p, meta);
        const metaBind = { buffer: metaB, offset: 0, size: metaB.size };
        const lseInD = (c: Chunk): number => {
          const [lo, hi] = lseWindow(p, c);
          return (hi - lo + L) * 4;
        };
        const chunks = this.plan(p, ctx, ['q', 'kv', 'lse', 'bias'], lseInD);
        const whole = chunks.length === 1;
        const BR = 4 * tc.T;
        const encode = () => {
          for (const c of chunks) {
            const qw = qWindow(p, c);
            const kw = kvWindow(p, c);
            const lw = lseWindow(p, c);
            const [qB, qBase] = this.bind(ctx, qb, qw, whole);
            const [kB, kBase] = this.bind(ctx, kb, kw, whole);
            const [vB, vBase] = this.bind(ctx, vb, kw, whole);
            const [doB, doBase] = this.bind(ctx, dob, qw, whole);
            const [oB, oBase] = this.bind(ctx, ob, qw, whole);
            const [bB, bBase] = this.bind(ctx, biasB, biasWindow(p, c), whole || !p.bias);
            // lse at [0, L) and D at [L, 2L) of one buffer: bind from the lse window's start to D's end.
            const [ldB, ldBase] = this.bind(ctx, ld, [lw[0], lw[1] + L], whole);
            const [dqB, dqBase] = this.bind(ctx, dq, qw, whole);
            const [dkB, dkBase] = this.bind(ctx, dk, kw, whole);
            const [dvB, dvBase] = this.bind(ctx, dv, kw, whole);
            const common: Params = {
              ...base,
              q_base: qBase,
              k_base: kBase,
              v_base: vBase,
              x_base: doBase,
              y_base: oBase,
              lse_base: ldBase,
              w_base: ldBase + L,
              bias_base: bBase,
              b0: c.b0,
              h0: c.kh0 * p.groupSize,
            };
            const nh = (c.kh1 - c.kh0) * p.groupSize;
            const nb = c.b1 - c.b0;
            run.dispatch('pre', [doB, oB, metaBind, ldB, bB], common, [Math.ceil(p.seqQ / 64), nh, nb]);
            run.dispatch(
              `dq:${tail}`,
              [qB, kB, vB, metaBind, bB, doB, ldB, dqB],
              { ...common, o_base: dqBase },
              [Math.ceil(p.seqQ / BR), nh, nb],
            );
            const kvParams: Params = {
              ...common,
              h0: c.kh0,
              o_base: dkBase,
              y_base: dvBase,
              accum: accumulate ? 1 : 0,
            };
            if (accumulate) {
              for (let bb = c.b0; bb < c.b1; bb++) {
                run.dispatch(
                  `dkv:${tail}`,
                  [qB, kB, vB, metaBind, bB, doB, ldB, dkB, dvB],
                  { ...kvParams, b0: bb },
                  [Math.ceil(p.seqK / BR), c.kh1 - c.kh0, 1],
                );
              }
            } else {
              run.dispatch(`dkv:${tail}`, [qB, kB, vB, metaBind, bB, doB, ldB, dkB, dvB], kvParams, [
                Math.ceil(p.seqK / BR),
                c.kh1 - c.kh0,
                nb,
              ]);
            }
          }
        };
        if (reps > 0) {
          const t = await this.timed(run, ctx, encode, reps);
          for (const x of [dq, dk, dv]) x.destroy();
          return t;
        }
        encode();
        const outs = [
          { f: dq, n: nq, shape: q.shape },
          { f: dk, n: nk, shape: k.shape },
          { f: dv, n: nk, shape: v.shape },
        ].map((o) => ({ ...o, b: p.dtype === 'float32' ? o.f : run.pack(o.f, o.n, p.dtype, !onDevice) }));
        if (onDevice) {
          await run.finish();
          const [a, bq, cq] = outs.map((o) => new WebGPUTensor(p.dtype, [...o.shape], o.b, ctx.epoch, this));
          return { dq: a, dk: bq, dv: cq } as unknown as BackwardResult<T>;
        }
        const bytes = await run.finish(
          outs.map((o) => ({ buffer: o.b, bytes: p.dtype === 'float32' ? o.n * 4 : o.n * 2 })),
        );
        const [a, bq, cq] = outs.map((o, i) => {
          const data = dataArrayFor(p.dtype, o.n);
          new Uint8Array(data.buffer).set(new Uint8Array(bytes[i]));
          return { dtype: p.dtype, shape: [...o.shape], data } as HostTensor;
        });
        return { dq: a, dk: bq, dv: cq } as unknown as BackwardResult<T>;
      }),
    );
  }
}

export type WebGPUBackend = Backend & {
  readonly adapterInfo: { adapter: string; subgroups: boolean; shaderF16: boolean };
  timeForward(q: Tensor, k: Tensor, v: Tensor, options: AttentionOptions, reps: number): Promise<number>;
  timeBackward(
    dout: Tensor,
    q: Tensor,
    k: Tensor,
    v: Tensor,
    out: Tensor,
    lse: DeviceTensor,
    options: AttentionOptions,
    reps: number,
  ): Promise<number>;
  upload(host: HostTensor): Promise<Tensor>;
  download(t: Tensor): Promise<HostTensor>;
  free(t: Tensor): void;
  gpuDevice(): Promise<GPUDevice>;
  loseDeviceForTest(): Promise<void>;
};

/** Creates a webgpu backend on a new device; throws BACKEND_UNAVAILABLE with the reason when there is none. */
export async function createWebGPUBackend(options: WebGPUBackendOptions = {}): Promise<WebGPUBackend> {
  const ctx = await WebGPUBackendImpl.makeCtx(options);
  return new WebGPUBackendImpl(options, ctx) as unknown as WebGPUBackend;
}

export async function webgpuBackendFactory(): Promise<Backend> {
  return createWebGPUBackend();
}
