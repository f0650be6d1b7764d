// Bundles the device runners (cuda-verify.ts, cuda-bench.ts) into self-contained .mjs files under
// .device/, every dependency inlined from the workspace sources (the GPU machine has no node_modules).
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const require = createRequire(path.join(root, 'packages', 'cuda', 'package.json'));
const esbuild = require('esbuild');
const outdir = process.argv[2] ?? path.join(root, '.device');

const alias = {
  '@flashattn/core': path.join(root, 'packages/core/src/index.ts'),
  '@flashattn/conformance/cases': path.join(root, 'packages/conformance/src/cases.ts'),
  '@flashattn/cuda': path.join(root, 'packages/cuda/src/index.ts'),
};

for (const name of ['cuda-verify', 'cuda-bench']) {
  await esbuild.build({
    entryPoints: [path.join(root, 'scripts/device', `${name}.ts`)],
    outfile: path.join(outdir, `${name}.mjs`),
    bundle: true,
    platform: 'node',
    format: 'esm',
    target: 'node20',
    alias,
    banner: {
      js: "import { createRequire as __cr } from 'node:module'; const require = __cr(import.meta.url);",
    },
    logLevel: 'warning',
  });
  console.log(`bundled ${path.relative(root, path.join(outdir, `${name}.mjs`))}`);
}
