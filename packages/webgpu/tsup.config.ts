import { defineConfig } from 'tsup';

export default defineConfig({
  entry: ['src/index.ts'],
  format: ['esm', 'cjs'],
  dts: true,
  clean: true,
  target: 'es2022',
  sourcemap: false,
  // Loaded with a dynamic import only when a backend is created in Node, never bundled.
  external: ['webgpu'],
});
