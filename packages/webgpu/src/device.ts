/**
 * Finding a GPU: `navigator.gpu` in browsers (and in runtimes that have it), else the `webgpu` package
 * (Dawn) in Node, imported only here, when a backend is created, so that it stays an optional peer.
 */
import { FlashAttentionError } from '@flashattn/core';

export interface GpuOptions {
  /** A GPU object to use instead of navigator.gpu or the webgpu package. */
  gpu?: GPU;
  powerPreference?: GPUPowerPreference;
  /** Options passed to the webgpu package's create() (Dawn toggles), Node only. */
  dawnOptions?: string[];
}

let nodeGpu: Promise<GPU> | undefined;

async function loadNodeGpu(dawnOptions: string[]): Promise<GPU> {
  if (!nodeGpu) {
    nodeGpu = (async () => {
      let mod: { create: (opts: string[]) => GPU; globals?: Record<string, unknown> };
      try {
        // The specifier is kept in a variable so that bundlers for the browser leave it alone.
        const name = 'webgpu';
        mod = (await import(/* @vite-ignore */ name)) as typeof mod;
      } catch (e) {
        throw new FlashAttentionError(
          'BACKEND_UNAVAILABLE',
          `WebGPU is not available: no navigator.gpu, and the optional peer dependency 'webgpu' (Dawn for Node) could not be loaded (${(e as Error).message}); install it with: npm install webgpu`,
          { cause: e },
        );
      }
      const g = globalThis as Record<string, unknown>;
      // Dawn's objects check these constants; define them where the runtime has none.
      if (mod.globals) for (const [k, v] of Object.entries(mod.globals)) if (g[k] === undefined) g[k] = v;
      return mod.create(dawnOptions);
    })().catch((e) => {
      nodeGpu = undefined;
      throw e;
    });
  }
  return nodeGpu;
}

export async function getGpu(opts: GpuOptions): Promise<GPU> {
  if (opts.gpu) return opts.gpu;
  const nav = (globalThis as { navigator?: { gpu?: GPU } }).navigator;
  if (nav?.gpu) return nav.gpu;
  return loadNodeGpu(opts.dawnOptions ?? []);
}

export interface AcquiredDevice {
  adapter: GPUAdapter;
  device: GPUDevice;
  subgroups: boolean;
  subgroupMinSize: number;
  shaderF16: boolean;
  description: string;
}

/** Requests an adapter and a device with the adapter's full limits; throws BACKEND_UNAVAILABLE with the reason. */
export async function acquireDevice(opts: GpuOptions): Promise<AcquiredDevice> {
  const gpu = await getGpu(opts);
  let adapter: GPUAdapter | null;
  try {
    adapter = await gpu.requestAdapter({ powerPreference: opts.powerPreference ?? 'high-performance' });
  } catch (e) {
    throw new FlashAttentionError('BACKEND_UNAVAILABLE', `requestAdapter failed: ${(e as Error).message}`, {
      cause: e,
    });
  }
  if (!adapter) {
    throw new FlashAttentionError(
      'BACKEND_UNAVAILABLE',
      'WebGPU returned no adapter (no GPU, or no Vulkan/Metal/D3D12 driver Dawn can use; on Linux without a GPU install Mesa lavapipe and set VK_ICD_FILENAMES)',
    );
  }
  const want: GPUFeatureName[] = [];
  const subgroups = adapter.features.has('subgroups' as GPUFeatureName);
  if (subgroups) want.push('subgroups' as GPUFeatureName);
  const shaderF16 = adapter.features.has('shader-f16');
  const L = adapter.limits;
  const requiredLimits: Record<string, number> = {
    maxStorageBufferBindingSize: L.maxStorageBufferBindingSize,
    maxBufferSize: L.maxBufferSize,
    maxComputeWorkgroupStorageSize: L.maxComputeWorkgroupStorageSize,
    maxComputeInvocationsPerWorkgroup: L.maxComputeInvocationsPerWorkgroup,
    maxComputeWorkgroupSizeX: L.maxComputeWorkgroupSizeX,
    maxStorageBuffersPerShaderStage: L.maxStorageBuffersPerShaderStage,
    maxComputeWorkgroupsPerDimension: L.maxComputeWorkgroupsPerDimension,
  };
  let device: GPUDevice;
  try {
    device = await adapter.requestDevice({ requiredFeatures: want, requiredLimits });
  } catch (e) {
    throw new FlashAttentionError('BACKEND_UNAVAILABLE', `requestDevice failed: ${(e as Error).message}`, {
      cause: e,
    });
  }
  const info = (adapter as { info?: GPUAdapterInfo }).info;
  const sgMin = (info as { subgroupMinSize?: number } | undefined)?.subgroupMinSize ?? 0;
  const description = info
    ? [info.vendor, info.architecture, info.device, info.description].filter(Boolean).join(' ')
    : 'unknown adapter';
  return { adapter, device, subgroups, subgroupMinSize: sgMin, shaderF16, description };
}
