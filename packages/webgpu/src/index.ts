/**
 * @flashattn/webgpu: FlashAttention in WGSL. Importing this module registers the 'webgpu' backend at
 * priority 30; nothing touches the GPU (or loads the `webgpu` package in Node) until a backend is created.
 */
import { registerBackend } from '@flashattn/core';
import { webgpuBackendFactory } from './backend.js';

export {
  createWebGPUBackend,
  type DecodeTuning,
  type ForwardTuning,
  type WebGPUBackend,
  type WebGPUBackendOptions,
  WebGPUTensor,
  webgpuBackendFactory,
} from './backend.js';
export { acquireDevice, type GpuOptions } from './device.js';

registerBackend('webgpu', webgpuBackendFactory, 30);
