// Bundles bench/run.ts (with @flashattn/core, @flashattn/conformance and this package inlined) into one
// ES module for a machine without Node modules; `webgpu` stays external and is copied beside it.
//   node bench/bundle.mjs OUTDIR
import { cpSync, mkdirSync, rmSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { build } from 'esbuild';

const here = dirname(fileURLToPath(import.meta.url));
const out = resolve(process.argv[2] ?? join(here, '..', '..', '..', '.device', 'webgpu'));
mkdirSync(out, { recursive: true });
await build({
  entryPoints: [join(here, 'run.ts')],
  bundle: true,
  platform: 'node',
  format: 'esm',
  target: 'node20',
  outfile: join(out, 'bench.mjs'),
  external: ['webgpu'],
  banner: {
    js: "import { createRequire } from 'node:module'; const require = createRequire(import.meta.url);",
  },
  logLevel: 'warning',
});
// node_modules/webgpu with only the linux-x64 build of Dawn.
const src = join(here, '..', 'node_modules', 'webgpu');
const dst = join(out, 'node_modules', 'webgpu');
rmSync(dst, { recursive: true, force: true });
mkdirSync(join(dst, 'dist'), { recursive: true });
for (const f of ['package.json', 'index.js']) cpSync(join(src, f), join(dst, f));
cpSync(join(src, 'dist', 'linux-x64'), join(dst, 'dist', 'linux-x64'), { recursive: true });
console.log(`bundled into ${out}`);
