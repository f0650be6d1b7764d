import { defineConformance } from '@flashattn/conformance';
import { createCpuBackend } from '@flashattn/cpu';

// In the calling thread, and on two workers: parallelThreshold 0 sends even the smallest case to the
// workers, so the suite exercises the worker path rather than the small-call shortcut.
defineConformance('cpu (threads: 1)', async () => createCpuBackend({ threads: 1 }));
defineConformance('cpu (threads: 2)', async () => createCpuBackend({ threads: 2, parallelThreshold: 0 }));
