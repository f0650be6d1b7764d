import { defineConfig } from 'tsup';

export default defineConfig({
  entry: { cli: 'src/cli.ts', index: 'src/index.ts' },
  format: ['esm'],
  dts: { entry: { index: 'src/index.ts' } },
  clean: true,
  target: 'node20',
  platform: 'node',
  sourcemap: false,
  // dist/cli.js is the `flashattn` bin; a hashbang in index.js is harmless.
  banner: { js: '#!/usr/bin/env node' },
});
