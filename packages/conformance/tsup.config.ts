import { defineConfig } from 'tsup';

export default defineConfig({
  // index: everything, defineConformance included (imports vitest, so ESM inside a vitest run).
  // cases: the runner-free part (cases, runCase, checkClose, makeInputs) for `flashattn verify` and CJS.
  entry: ['src/index.ts', 'src/cases.ts'],
  format: ['esm', 'cjs'],
  dts: true,
  clean: true,
  target: 'es2022',
  sourcemap: false,
  external: ['vitest', '@flashattn/core', 'fast-check'],
});
