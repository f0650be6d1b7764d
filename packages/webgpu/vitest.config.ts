import { defineConfig } from 'vitest/config';

// One GPU device per file; the lavapipe adapter compiles slowly, so timeouts are generous.
export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    setupFiles: ['test/setup.ts'],
    testTimeout: 600_000,
    hookTimeout: 600_000,
    fileParallelism: false,
  },
});
