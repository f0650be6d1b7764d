/**
 * The whole conformance suite against the cuda backend. Without a built addon or a GPU (CI) the suite
 * shows one skipped block that says why; on the GPU machine it runs through scripts/device/cuda-run.sh
 * (bundled, outside vitest), whose counts are in docs/BENCHMARKS.md.
 */

import { defineConformance } from '@flashattn/conformance';
import { isFlashAttentionError } from '@flashattn/core';
import { createCudaBackend } from '../src/index.js';

async function skipReason(): Promise<string | undefined> {
  try {
    const backend = await createCudaBackend();
    await backend.dispose();
    return undefined;
  } catch (e) {
    if (isFlashAttentionError(e) && e.code === 'BACKEND_UNAVAILABLE')
      return e.message.replace(/^\[[A-Z_]+\] /, '');
    throw e;
  }
}

defineConformance('cuda', () => createCudaBackend(), { skipReason: await skipReason() });
