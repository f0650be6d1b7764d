import { existsSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { defineConfig, type Plugin } from 'vite';

const here = dirname(fileURLToPath(import.meta.url));

/** Cross-origin isolation, so that SharedArrayBuffer (and so the threaded backends) work. */
const isolation = {
  'Cross-Origin-Opener-Policy': 'same-origin',
  'Cross-Origin-Embedder-Policy': 'require-corp',
  'Cross-Origin-Resource-Policy': 'same-origin',
};

/** The backend packages the playground loads when they are there (each registers itself on import). */
const OPTIONAL_BACKENDS = [
  { name: 'webgpu', pkg: '@flashattn/webgpu' },
  { name: 'wasm-simd', pkg: '@flashattn/wasm-simd' },
  { name: 'cpu', pkg: '@flashattn/cpu' },
] as const;

const VIRTUAL = 'virtual:flashattn-backends';

/**
 * `virtual:flashattn-backends` exports `loaders`: for each backend package that resolves from here and
 * has been built, a dynamic import of it; for one that is missing, a loader that rejects with the reason.
 * So the app builds and runs with core alone and picks each backend up once its package exists.
 */
function optionalBackends(): Plugin {
  return {
    name: 'flashattn-optional-backends',
    resolveId(id) {
      return id === VIRTUAL ? `\0${VIRTUAL}` : null;
    },
    async load(id) {
      if (id !== `\0${VIRTUAL}`) return null;
      const lines: string[] = [];
      for (const { name, pkg } of OPTIONAL_BACKENDS) {
        let why: string | null = null;
        try {
          const r = await this.resolve(pkg, resolve(here, 'src/main.ts'), { skipSelf: true });
          const installed = existsSync(resolve(here, 'node_modules', pkg, 'package.json'));
          if (!r)
            why = installed
              ? `the package ${pkg} is not built yet (run pnpm build)`
              : `the package ${pkg} is not installed (add it to apps/playground and run pnpm install)`;
          else if (!r.external && !existsSync(r.id.split('?')[0]))
            why = `the package ${pkg} is not built yet (run pnpm build)`;
        } catch (e) {
          why = `the package ${pkg} cannot be resolved: ${(e as Error).message}`;
        }
        lines.push(
          why === null
            ? `  ${JSON.stringify(name)}: () => import(${JSON.stringify(pkg)}),`
            : `  ${JSON.stringify(name)}: () => Promise.reject(new Error(${JSON.stringify(why)})),`,
        );
      }
      return `export const loaders = {\n${lines.join('\n')}\n};\n`;
    },
  };
}

export default defineConfig({
  base: './',
  plugins: [optionalBackends()],
  server: { headers: isolation },
  preview: { headers: isolation },
  worker: { format: 'es' },
  build: { target: 'es2022', chunkSizeWarningLimit: 2000 },
});
