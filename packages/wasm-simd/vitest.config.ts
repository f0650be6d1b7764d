import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    testTimeout: 120_000,
    projects: [
      {
        extends: true,
        test: { name: 'wasm-simd', include: ['test/**/*.test.ts'], exclude: ['test/relaxed.test.ts'] },
      },
      {
        // Node 20 validates relaxed SIMD only behind this flag (Chromium has it on).
        extends: true,
        test: {
          name: 'wasm-simd relaxed-simd',
          include: ['test/relaxed.test.ts'],
          execArgv: ['--experimental-wasm-relaxed-simd'],
        },
      },
    ],
  },
});
