import { rmSync } from 'node:fs';
import { defineConfig } from 'tsup';

// The two builds below run in parallel, so neither may clean dist itself: it is cleaned once here.
rmSync(new URL('./dist', import.meta.url), { recursive: true, force: true });

export default defineConfig([
  {
    // The package entry. `shims` turns import.meta.url into a __filename-based URL in the CJS build,
    // so that both builds find dist/worker.js next to themselves.
    entry: ['src/index.ts'],
    format: ['esm', 'cjs'],
    dts: true,
    clean: false,
    shims: true,
    target: 'es2022',
    sourcemap: false,
  },
  {
    // The worker entry: one self-contained ES module (core bundled in), so that it loads as a Node
    // worker, as a browser module worker, or as a plain asset copied by a bundler.
    entry: ['src/worker.ts'],
    format: ['esm'],
    dts: false,
    clean: false,
    splitting: false,
    noExternal: ['@flashattn/core'],
    target: 'es2022',
    sourcemap: false,
  },
]);
