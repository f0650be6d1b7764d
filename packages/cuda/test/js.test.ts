/**
 * The JavaScript side of the cuda backend, on any machine (CI has nvcc but no GPU): the install
 * script's skip path, the addon's "not built" / "no driver" / "no GPU" reasons, and the backend's
 * validation, descriptors, host/device rules and error mapping against a stand-in for the addon.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  type DeviceTensor,
  FlashAttentionError,
  type HostTensor,
  isDeviceTensor,
  isFlashAttentionError,
  listBackends,
  tensorFromArray,
} from '@flashattn/core';
import { afterEach, describe, expect, it } from 'vitest';
import type { NativeContext, NativeDesc, NativeDeviceInfo, NativePlan } from '../src/addon.js';
import { addonCandidates, loadAddon, resetAddonCache } from '../src/addon.js';
import { createCudaBackendWith } from '../src/backend.js';
import { createCudaBackend } from '../src/index.js';

const pkgDir = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const installScript = path.join(pkgDir, 'scripts', 'install.mjs');

async function code(p: Promise<unknown>): Promise<string> {
  try {
    await p;
    return 'resolved';
  } catch (e) {
    return isFlashAttentionError(e) ? e.code : `not a FlashAttentionError: ${e}`;
  }
}

// ------------------------------------------------------------------------------------------------
describe('install script', () => {
  it('finds no nvcc when PATH and the default location have none', async () => {
    const { findNvcc } = (await import(installScript)) as {
      findNvcc: (env: NodeJS.ProcessEnv) => string | null;
    };
    expect(findNvcc({ PATH: '/nonexistent', FLASHATTN_CUDA_NO_DEFAULT_CUDA: '1' })).toBeNull();
  });

  it('says why and exits 0 without nvcc', () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'fa-cuda-install-'));
    try {
      const r = spawnSync(process.execPath, [installScript], {
        env: {
          PATH: path.dirname(process.execPath),
          FLASHATTN_CUDA_NO_DEFAULT_CUDA: '1',
          FLASHATTN_CUDA_BUILD_DIR: dir,
          HOME: os.tmpdir(),
        },
        encoding: 'utf8',
      });
      expect(r.status).toBe(0);
      expect(r.stdout).toMatch(/not built: nvcc was not found/);
      const status = JSON.parse(readFileSync(path.join(dir, 'install-status.json'), 'utf8'));
      expect(status.built).toBe(false);
      expect(status.reason).toMatch(/nvcc was not found/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('skips on FLASHATTN_CUDA_SKIP_BUILD=1', () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'fa-cuda-install-'));
    try {
      const r = spawnSync(process.execPath, [installScript], {
        env: { ...process.env, FLASHATTN_CUDA_SKIP_BUILD: '1', FLASHATTN_CUDA_BUILD_DIR: dir },
        encoding: 'utf8',
      });
      expect(r.status).toBe(0);
      expect(r.stdout).toMatch(/FLASHATTN_CUDA_SKIP_BUILD=1/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('built the addon at install when nvcc and cmake were there', () => {
    const statusFile = path.join(pkgDir, 'build', 'install-status.json');
    if (!existsSync(statusFile)) return; // installed with --ignore-scripts: nothing to check
    const status = JSON.parse(readFileSync(statusFile, 'utf8'));
    if (status.nvcc && status.cmake) {
      expect(status.reason ?? '').toBe('');
      expect(status.built).toBe(true);
      expect(existsSync(path.join(pkgDir, 'build', 'Release', 'flashattn_cuda.node'))).toBe(true);
    }
  });
});

// ------------------------------------------------------------------------------------------------
describe('addon loading', () => {
  const saved = process.env.FLASHATTN_CUDA_ADDON;
  afterEach(() => {
    if (saved === undefined) delete process.env.FLASHATTN_CUDA_ADDON;
    else process.env.FLASHATTN_CUDA_ADDON = saved;
    resetAddonCache();
  });

  it('reports "not built" when the addon file is missing', async () => {
    process.env.FLASHATTN_CUDA_ADDON = path.join(os.tmpdir(), 'no-such-dir', 'flashattn_cuda.node');
    resetAddonCache();
    expect(addonCandidates()).toEqual([process.env.FLASHATTN_CUDA_ADDON]);
    const e = await createCudaBackend().catch((x: unknown) => x);
    expect(e).toBeInstanceOf(FlashAttentionError);
    expect((e as FlashAttentionError).code).toBe('BACKEND_UNAVAILABLE');
    expect((e as FlashAttentionError).message).toMatch(/not built/);
  });

  it('a built addon on a machine without a GPU throws a catchable BACKEND_UNAVAILABLE', async () => {
    let built = true;
    try {
      loadAddon();
    } catch {
      built = false;
    }
    const r = await createCudaBackend().then(
      async (b) => {
        await b.dispose();
        return null;
      },
      (x: unknown) => x,
    );
    if (r === null) return; // a GPU is here: nothing to check on this path
    expect(isFlashAttentionError(r)).toBe(true);
    const err = r as FlashAttentionError;
    expect(err.code).toBe('BACKEND_UNAVAILABLE');
    expect(err.message).toMatch(built ? /\] (no driver|no GPU):/ : /\] not built:/);
  });

  it('listBackends names cuda with its reason', async () => {
    const list = await listBackends();
    const cuda = list.find((b) => b.name === 'cuda');
    expect(cuda).toBeDefined();
    expect(cuda?.priority).toBe(40);
    if (!cuda?.available) expect(cuda?.reason).toMatch(/^(not built|no driver|no GPU)/);
  });
});

// ------------------------------------------------------------------------------------------------
// A stand-in for the native context: records descriptors, keeps byte counts per buffer id.

const INFO: NativeDeviceInfo = {
  name: 'Mock GPU',
  smCount: 4,
  totalMemory: 1 << 30,
  computeCapability: 9,
  l2Bytes: 1 << 20,
  driverVersion: 13000,
  runtimeVersion: 13000,
  sharedMemPerBlockOptin: 232448,
};

class MockNative implements NativeContext {
  descs: NativeDesc[] = [];
  live = new Map<number, number>();
  next = 1;
  failWith: { code: string; message: string } | null = null;
  async init(): Promise<NativeDeviceInfo> {
    return INFO;
  }
  newId(): number {
    return this.next++;
  }
  async upload(id: number, data: ArrayBufferView): Promise<void> {
    this.live.set(id, data.byteLength);
  }
  async download(id: number, into: ArrayBufferView): Promise<void> {
    if (!this.live.has(id)) throw Object.assign(new Error('no such buffer'), { code: 'DISPOSED' });
    new Uint8Array(into.buffer, into.byteOffset, into.byteLength).fill(0);
  }
  free(id: number): void {
    this.live.delete(id);
  }
  async forward(desc: NativeDesc): Promise<NativePlan> {
    this.descs.push(desc);
    if (this.failWith) throw Object.assign(new Error(this.failWith.message), { code: this.failWith.code });
    this.live.set(desc.out as number, desc.outBytes as number);
    if (desc.lse) this.live.set(desc.lse as number, desc.lseBytes as number);
    return { kernel: 'mock', splits: 1, scratchBytes: 0 };
  }
  async backward(desc: NativeDesc): Promise<NativePlan> {
    this.descs.push(desc);
    if (this.failWith) throw Object.assign(new Error(this.failWith.message), { code: this.failWith.code });
    for (const k of ['dq', 'dk', 'dv']) this.live.set(desc[k] as number, 1);
    return { kernel: 'mock', splits: 1, scratchBytes: 0 };
  }
  async time(): Promise<NativePlan & { ms: Float64Array }> {
    return { kernel: 'mock', splits: 1, scratchBytes: 0, ms: Float64Array.of(1, 2, 3) };
  }
  async copyBench(): Promise<Float64Array> {
    return Float64Array.of(1);
  }
  async stats() {
    return { liveBuffers: this.live.size, liveBytes: 0, peakBytes: 0, freeMemory: 0, totalMemory: 0 };
  }
  async dispose(): Promise<void> {
    this.live.clear();
  }
}

function randn(
  shape: number[],
  dtype: 'float32' | 'float16' | 'bfloat16' = 'bfloat16',
  seed = 1,
): HostTensor {
  const n = shape.reduce((a, b) => a * b, 1);
  let s = seed;
  const vals = Array.from({ length: n }, () => {
    s = (s * 1103515245 + 12345) % 2 ** 31;
    return s / 2 ** 30 - 1;
  });
  return tensorFromArray(vals, shape, dtype);
}

describe('backend over a stand-in addon', () => {
  it('validates before any work, with core error codes', async () => {
    const native = new MockNative();
    const be = await createCudaBackendWith(native);
    const q = randn([1, 4, 2, 8]);
    const k = randn([1, 5, 2, 8]);
    expect(await code(be.forward(q, k, randn([1, 5, 2, 4])))).toBe('SHAPE_MISMATCH');
    expect(await code(be.forward(q, k, k, { window: [1] as unknown as [number, number] }))).toBe(
      'INVALID_OPTION',
    );
    expect(await code(be.forward(randn([1, 4, 3, 8]), k, k))).toBe('HEADS_NOT_DIVISIBLE');
    expect(await code(be.forward(q, randn([1, 5, 2, 8], 'float16'), k))).toBe('DTYPE_MISMATCH');
    expect(await code(be.forward(randn([1, 4, 2, 300]), randn([1, 4, 2, 300]), randn([1, 4, 2, 300])))).toBe(
      'HEAD_DIM_UNSUPPORTED',
    );
    expect(await code(be.forward(q, k, k, { dropout: { p: 1, seed: 0 } }))).toBe('INVALID_OPTION');
    expect(native.descs.length).toBe(0);
    expect(native.live.size).toBe(0);
    await be.dispose();
  });

  it('flattens the problem: strides, GQA, dropout threshold, varlen arrays', async () => {
    const native = new MockNative();
    const be = await createCudaBackendWith(native);
    await be.forward(randn([2, 3, 4, 16]), randn([2, 5, 2, 16]), randn([2, 5, 2, 16]), {
      causal: true,
      window: [3, -1],
      dropout: { p: 0.25, seed: 2 ** 32 + 7, offset: 5 },
      returnLse: true,
    });
    const d = native.descs[0];
    expect(d.dtype).toBe(2);
    expect([d.batch, d.seqQ, d.seqK, d.headsQ, d.headsK, d.headDim]).toEqual([2, 3, 5, 4, 2, 16]);
    expect([d.qSb, d.qSs, d.qSh]).toEqual([3 * 4 * 16, 4 * 16, 16]);
    expect([d.kvSb, d.kvSs, d.kvSh]).toEqual([5 * 2 * 16, 2 * 16, 16]);
    expect([d.causal, d.windowLeft, d.windowRight]).toEqual([1, 3, -1]);
    expect([d.dropout, d.dropThreshold, d.key0, d.key1, d.dropOffset]).toEqual([1, 2 ** 30, 7, 1, 5]);
    expect(d.keepScale).toBeCloseTo(1 / 0.75);
    expect(d.lseBytes).toBe(2 * 4 * 3 * 4);
    await be.forward(randn([5, 2, 8], 'float16'), randn([7, 2, 8], 'float16'), randn([7, 2, 8], 'float16'), {
      cuSeqlensQ: Int32Array.of(0, 2, 5),
      cuSeqlensK: Int32Array.of(0, 3, 7),
      layout: 'bshd',
    });
    const v = native.descs[1];
    expect(v.cuSeqlensQ).toEqual(Int32Array.of(0, 2, 5));
    expect([v.batch, v.seqQ, v.seqK, v.totalQ, v.totalK, v.qSb]).toEqual([2, 3, 4, 5, 7, 0]);
    await be.forward(randn([1, 2, 3, 8]), randn([1, 2, 4, 8]), randn([1, 2, 4, 8]), { layout: 'bhsd' });
    const h = native.descs[2];
    expect([h.qSb, h.qSs, h.qSh]).toEqual([2 * 3 * 8, 8, 3 * 8]);
    await be.dispose();
  });

  it('host in, host out; temporaries freed', async () => {
    const native = new MockNative();
    const be = await createCudaBackendWith(native);
    const r = await be.forward(randn([1, 4, 2, 8]), randn([1, 6, 2, 8]), randn([1, 6, 2, 8]), {
      returnLse: true,
    });
    expect(isDeviceTensor(r.out)).toBe(false);
    expect(r.out.dtype).toBe('bfloat16');
    expect(r.out.shape).toEqual([1, 4, 2, 8]);
    expect(r.out.data).toBeInstanceOf(Uint16Array);
    expect(r.lse).toBeInstanceOf(Float32Array);
    expect(r.lse?.length).toBe(8);
    expect(native.live.size).toBe(0);
    expect(be.lastPlan?.kernel).toBe('mock');
    await be.dispose();
  });

  it('device in, device out; mixing kinds is refused', async () => {
    const native = new MockNative();
    const be = await createCudaBackendWith(native);
    const q = await be.upload(randn([1, 4, 2, 8]));
    const k = await be.upload(randn([1, 6, 2, 8]));
    const v = await be.upload(randn([1, 6, 2, 8]));
    expect(q).toMatchObject({ kind: 'device', backend: 'cuda', dtype: 'bfloat16', shape: [1, 4, 2, 8] });
    const r = await be.forward(q, k, v, { returnLse: true });
    expect(isDeviceTensor(r.out)).toBe(true);
    expect(isDeviceTensor(r.lse)).toBe(true);
    const host = await be.download(r.out);
    expect(host.shape).toEqual([1, 4, 2, 8]);
    const g = await be.backward(r.out, q, k, v, r.out, r.lse as DeviceTensor);
    expect(isDeviceTensor(g.dk)).toBe(true);
    expect(await code(be.forward(q as never, randn([1, 6, 2, 8]) as never, v as never))).toBe(
      'INVALID_OPTION',
    );
    const view = be.view(q, [1, 2, 4, 8]);
    expect(view.shape).toEqual([1, 2, 4, 8]);
    expect(() => be.view(q, [3, 3])).toThrow(FlashAttentionError);
    for (const t of [q, k, v, r.out, r.lse as DeviceTensor, g.dq, g.dk, g.dv]) be.free(t);
    expect(native.live.size).toBe(0);
    expect(await code(be.forward(q, k, v))).toBe('DISPOSED');
    await be.dispose();
    expect(await code(be.forward(randn([1, 4, 2, 8]), randn([1, 6, 2, 8]), randn([1, 6, 2, 8])))).toBe(
      'DISPOSED',
    );
  });

  it('maps native failures to FlashAttentionErrors and frees what the call made', async () => {
    const native = new MockNative();
    const be = await createCudaBackendWith(native);
    native.failWith = { code: 'OUT_OF_MEMORY', message: 'cudaMallocAsync: cudaErrorMemoryAllocation' };
    expect(await code(be.forward(randn([1, 4, 2, 8]), randn([1, 6, 2, 8]), randn([1, 6, 2, 8])))).toBe(
      'OUT_OF_MEMORY',
    );
    native.failWith = { code: 'DEVICE_LOST', message: 'cudaErrorIllegalAddress' };
    expect(await code(be.forward(randn([1, 4, 2, 8]), randn([1, 6, 2, 8]), randn([1, 6, 2, 8])))).toBe(
      'DEVICE_LOST',
    );
    expect(native.live.size).toBe(0);
    await be.dispose();
  });

  it('deterministic: false is an opt-in the addon and the capabilities see; a non-boolean is refused', async () => {
    const native = new MockNative();
    expect(await code(createCudaBackendWith(native, { deterministic: 'no' as unknown as boolean }))).toBe(
      'INVALID_OPTION',
    );
    const q = randn([1, 4, 2, 8]);
    const be = await createCudaBackendWith(native);
    expect(be.capabilities.deterministic).toBe(true);
    await be.backward(q, q, q, q, q, new Float32Array(8));
    expect(native.descs[0].nondeterministic).toBe(0);
    be.configure({ deterministic: false });
    expect(be.capabilities.deterministic).toBe(false);
    await be.backward(q, q, q, q, q, new Float32Array(8));
    expect(native.descs[1].nondeterministic).toBe(1);
    be.configure({ variant: 0 });
    await be.backward(q, q, q, q, q, new Float32Array(8));
    expect(native.descs[2].nondeterministic).toBe(1);
    expect(() => be.configure({ deterministic: 1 as unknown as boolean })).toThrow(
      /deterministic must be a boolean/,
    );
    await be.dispose();
    const nd = await createCudaBackendWith(native, { deterministic: false });
    expect(nd.capabilities.deterministic).toBe(false);
    await nd.backward(q, q, q, q, q, new Float32Array(8));
    expect(native.descs[3].nondeterministic).toBe(1);
    await nd.dispose();
  });

  it('marks pages reached twice for the serial dK/dV path', async () => {
    const native = new MockNative();
    const be = await createCudaBackendWith(native);
    const kv = randn([3, 4, 1, 8]);
    const opts = { blockTable: Int32Array.of(0, 1, 1, 2), pageSize: 4 };
    const q = randn([2, 2, 1, 8]);
    await be.backward(q, q, kv, kv, q, new Float32Array(4), opts);
    expect(native.descs[0].pagesShared).toBe(1);
    await be.backward(q, q, kv, kv, q, new Float32Array(4), {
      blockTable: Int32Array.of(0, 1, 1, 0),
      pageSize: 4,
      seqlensK: Int32Array.of(8, 4),
    });
    expect(native.descs[1].pagesShared).toBe(1);
    await be.backward(q, q, kv, kv, q, new Float32Array(4), {
      blockTable: Int32Array.of(0, 1, 2, 1),
      pageSize: 4,
      seqlensK: Int32Array.of(8, 4),
    });
    expect(native.descs[2].pagesShared).toBe(0);
    await be.dispose();
  });
});
