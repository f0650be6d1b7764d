import { createReferenceBackend } from '@flashattn/core';
import { defineConformance } from '../src/index.js';

// The suite on core's float64 reference backend: the full list (the ~1000-long cases included).
defineConformance('reference', async () => createReferenceBackend());
