/**
 * Finding and loading the native addon, lazily (at backend creation, never at import), and saying why
 * it cannot be used: "not built", "no driver" or "no GPU".
 */
import { existsSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { FlashAttentionError } from '@flashattn/core';

/** What the addon's Context offers (native/addon.cc). Internal: the backend wraps it. */
export interface NativeContext {
  init(): Promise<NativeDeviceInfo>;
  newId(): number;
  upload(id: number, data: ArrayBufferView): Promise<void>;
  download(id: number, into: ArrayBufferView): Promise<void>;
  free(id: number): void;
  forward(desc: NativeDesc): Promise<NativePlan>;
  backward(desc: NativeDesc): Promise<NativePlan>;
  time(
    desc: NativeDesc,
    backward: boolean,
    warmup: number,
    iters: number,
  ): Promise<NativePlan & { ms: Float64Array }>;
  copyBench(bytes: number, iters: number): Promise<Float64Array>;
  stats(): Promise<NativeStats>;
  dispose(): Promise<void>;
}

export interface NativeDeviceInfo {
  name: string;
  smCount: number;
  totalMemory: number;
  computeCapability: number;
  l2Bytes: number;
  driverVersion: number;
  runtimeVersion: number;
  sharedMemPerBlockOptin: number;
}

export interface NativePlan {
  kernel: string;
  splits: number;
  scratchBytes: number;
}

export interface NativeStats {
  liveBuffers: number;
  liveBytes: number;
  peakBytes: number;
  freeMemory: number;
  totalMemory: number;
}

/** The flattened Problem the kernels read (fields of native/attn_params.h, by name). */
export type NativeDesc = Record<string, number | Int32Array | Float32Array | undefined>;

export interface NativeAddon {
  Context: new (device: number) => NativeContext;
  abiVersion: number;
  runtimeVersion: number;
}

const ADDON_FILE = 'flashattn_cuda.node';

function moduleDir(): string {
  // tsup's shims give import.meta.url in the CommonJS build too.
  return path.dirname(fileURLToPath(import.meta.url));
}

/** The package root: the folder above dist/ (or src/ when run from source). */
export function packageRoot(): string {
  return path.resolve(moduleDir(), '..');
}

/** Where the addon is looked for, in order. */
export function addonCandidates(): string[] {
  // FLASHATTN_CUDA_ADDON names the one file to load (device bundles, tests).
  if (process.env.FLASHATTN_CUDA_ADDON) return [path.resolve(process.env.FLASHATTN_CUDA_ADDON)];
  const list: string[] = [];
  list.push(path.join(packageRoot(), 'build', 'Release', ADDON_FILE));
  list.push(path.join(moduleDir(), ADDON_FILE));
  return list;
}

interface InstallStatus {
  built?: boolean;
  reason?: string;
}

function installStatus(): InstallStatus | null {
  try {
    return JSON.parse(
      readFileSync(path.join(packageRoot(), 'build', 'install-status.json'), 'utf8'),
    ) as InstallStatus;
  } catch {
    return null;
  }
}

let cached: NativeAddon | null = null;

/** Forgets a loaded addon's handle (tests that change FLASHATTN_CUDA_ADDON). */
export function resetAddonCache(): void {
  cached = null;
}

/** Loads the addon or throws BACKEND_UNAVAILABLE whose message starts with "not built". */
export function loadAddon(): NativeAddon {
  if (cached) return cached;
  const candidates = addonCandidates();
  const file = candidates.find((c) => existsSync(c));
  if (!file) {
    const status = installStatus();
    const why = status?.reason
      ? `: ${status.reason}`
      : ' (no build/install-status.json: the install script did not run)';
    throw new FlashAttentionError(
      'BACKEND_UNAVAILABLE',
      `not built: the CUDA addon was not found (looked at ${candidates.join(', ')})${why}; install the CUDA toolkit (nvcc) and cmake, then run \`pnpm rebuild @flashattn/cuda\``,
    );
  }
  try {
    const require = createRequire(import.meta.url);
    cached = require(file) as NativeAddon;
    return cached;
  } catch (e) {
    throw new FlashAttentionError(
      'BACKEND_UNAVAILABLE',
      `not built: the CUDA addon at ${file} could not be loaded (${(e as Error).message}); rebuild it with \`pnpm rebuild @flashattn/cuda\``,
      { cause: e },
    );
  }
}

/** A native rejection ({code, message}) as a FlashAttentionError. */
export function toFlashError(e: unknown, where: string): FlashAttentionError {
  if (e instanceof FlashAttentionError) return e;
  const err = e as { code?: string; message?: string };
  const code = err?.code;
  switch (code) {
    case 'OUT_OF_MEMORY':
    case 'DEVICE_LOST':
    case 'DISPOSED':
    case 'SHAPE_MISMATCH':
      return new FlashAttentionError(code, `cuda ${where}: ${err.message}`, { cause: e });
    case 'NO_DRIVER':
      return new FlashAttentionError('BACKEND_UNAVAILABLE', `no driver: ${err.message}`, { cause: e });
    case 'NO_GPU':
      return new FlashAttentionError('BACKEND_UNAVAILABLE', `no GPU: ${err.message}`, { cause: e });
    default:
      return new FlashAttentionError('DEVICE_LOST', `cuda ${where}: ${err?.message ?? String(e)}`, {
        cause: e,
      });
  }
}
