/**
 * @flashattn/cpu: FlashAttention-2 forward and backward in TypeScript, on worker threads.
 * Importing this module registers the backend as 'cpu' (priority 10).
 */
import { registerBackend } from '@flashattn/core';
import { cpuBackendFactory } from './backend.js';

export {
  type CpuBackend,
  type CpuBackendOptions,
  cpuBackendFactory,
  cpuBlockSizes,
  createCpuBackend,
  DEFAULT_CACHE_BYTES,
  sharedTensor,
  toShared,
} from './backend.js';

registerBackend('cpu', cpuBackendFactory, 10);
