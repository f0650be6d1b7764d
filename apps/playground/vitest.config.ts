import { defineConfig } from 'vitest/config';

// The end-to-end tests build the app, serve it with `vite preview` and drive Chromium through
// playwright-core; one file, run once, with generous time limits for slow machines.
export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    testTimeout: 240_000,
    hookTimeout: 180_000,
    fileParallelism: false,
  },
});
