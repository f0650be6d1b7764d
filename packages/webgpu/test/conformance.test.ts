/**
 * The whole conformance suite on this machine's WebGPU adapter. In CI that is Mesa's lavapipe (see
 * scripts/ci/install-lavapipe.sh); a missing adapter fails the suite rather than skipping it.
 */
import { defineConformance } from '@flashattn/conformance';
import { createWebGPUBackend } from '../src/index.js';

defineConformance('webgpu', async () => createWebGPUBackend(), { timeout: 900_000 });
