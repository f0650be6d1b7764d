/**
 * @flashattn/cuda: FlashAttention-2-class CUDA kernels for Node through a native addon.
 * Importing registers the 'cuda' backend at priority 40; the addon itself loads only when the backend
 * is created (getBackend('cuda'), getBackend('auto'), listBackends()).
 */
import { registerBackend } from '@flashattn/core';
import { cudaBackendFactory } from './backend.js';

export type { NativeDeviceInfo, NativePlan, NativeStats } from './addon.js';
export { addonCandidates, loadAddon } from './addon.js';
export type { CudaBackend, CudaBackendOptions, Timing, TimingOptions } from './backend.js';
export { createCudaBackend, cudaBackendFactory } from './backend.js';

registerBackend('cuda', cudaBackendFactory, 40);
