import { fileURLToPath } from 'node:url';
import { defineConfig } from 'vitest/config';

// Tests run against the built package (dist), so that the worker entry, which is a separate bundle
// loaded with new URL('./worker.js', import.meta.url), is exercised exactly as users get it.
export default defineConfig({
  resolve: {
    alias: { '@flashattn/cpu': fileURLToPath(new URL('./dist/index.js', import.meta.url)) },
  },
  test: { include: ['test/**/*.test.ts'], testTimeout: 120_000, hookTimeout: 60_000 },
});
