/**
 * Finding what is installed. Each backend package is an optional peer dependency, loaded with a
 * dynamic import() so that the command works with any subset; importing one registers its backend
 * with @flashattn/core's registry (SPEC §7).
 */
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import {
  type Backend,
  type BackendStatus,
  FlashAttentionError,
  getBackend,
  listBackends,
} from '@flashattn/core';
import { CliError, shortMessage } from './errors.js';

export interface BackendPackageInfo {
  /** npm package name. */
  pkg: string;
  /** The name it registers. */
  backend: string;
  priority: number;
  /** Exported factory taking options ({ threads }), used when --threads is given. */
  create: string;
  /** Keeps data on a device (upload/download): benchmarked on the GPU shapes. */
  device: boolean;
}

/** The backend packages of the project, highest priority first (SPEC §7). */
export const BACKEND_PACKAGES: readonly BackendPackageInfo[] = [
  { pkg: '@flashattn/cuda', backend: 'cuda', priority: 40, create: 'createCudaBackend', device: true },
  { pkg: '@flashattn/webgpu', backend: 'webgpu', priority: 30, create: 'createWebGPUBackend', device: true },
  {
    pkg: '@flashattn/wasm-simd',
    backend: 'wasm-simd',
    priority: 20,
    create: 'createWasmSimdBackend',
    device: false,
  },
  { pkg: '@flashattn/cpu', backend: 'cpu', priority: 10, create: 'createCpuBackend', device: false },
];

export const DEVICE_BACKENDS = new Set(BACKEND_PACKAGES.filter((p) => p.device).map((p) => p.backend));

export interface PackageStatus {
  pkg: string;
  backend?: string;
  installed: boolean;
  /** Installed and imported without error. */
  loaded: boolean;
  version?: string;
  /** Why it could not be imported (installed but broken or not built). */
  error?: string;
}

const require = createRequire(import.meta.url);

/** The version in a package's package.json, if it can be found from here. */
export function packageVersion(pkg: string): string | undefined {
  try {
    const file = require.resolve(`${pkg}/package.json`);
    return (JSON.parse(readFileSync(file, 'utf8')) as { version?: string }).version;
  } catch {
    return undefined;
  }
}

/** Is the error the package itself missing (as opposed to a file inside it, e.g. an unbuilt dist)? */
function isMissingPackage(e: unknown, pkg: string): boolean {
  const code = (e as { code?: string })?.code;
  if (code !== 'ERR_MODULE_NOT_FOUND' && code !== 'MODULE_NOT_FOUND') return false;
  const msg = e instanceof Error ? e.message : String(e);
  return msg.includes(`'${pkg}'`) || msg.includes(`"${pkg}"`) || msg.includes(`${pkg} `);
}

/**
 * import() a module by a name only known at run time. The specifier is a variable so that neither tsc
 * nor the bundler needs the optional package.
 */
export async function importOptional<T = Record<string, unknown>>(
  specifier: string,
): Promise<{ module?: T; installed: boolean; error?: string }> {
  try {
    const module = (await import(/* @vite-ignore */ specifier)) as T;
    return { module, installed: true };
  } catch (e) {
    const pkg = specifier.startsWith('@')
      ? specifier.split('/').slice(0, 2).join('/')
      : specifier.split('/')[0];
    if (isMissingPackage(e, pkg)) return { installed: false };
    if ((e as { code?: string })?.code === 'ERR_MODULE_NOT_FOUND') {
      // A file of the package itself is missing: it is installed (a workspace link) but not built.
      const missing = /Cannot find module '([^']+)'/.exec(e instanceof Error ? e.message : '')?.[1];
      const at = missing?.lastIndexOf(`/${pkg}/`) ?? -1;
      const file = missing && at >= 0 ? missing.slice(at + pkg.length + 2) : missing;
      return { installed: true, error: `not built (${file ?? 'a file'} is missing): run \`pnpm build\`` };
    }
    return { installed: true, error: shortMessage(e) };
  }
}

const modules = new Map<string, Record<string, unknown>>();
let loading: Promise<PackageStatus[]> | undefined;

/** Imports every installed backend package once (registering its backend) and reports on each. */
/** The module of an installed, loaded backend package. */
export function backendModule(name: string): Record<string, unknown> | undefined {
  return modules.get(name);
}

export function loadBackendPackages(): Promise<PackageStatus[]> {
  loading ??= (async () => {
    const statuses: PackageStatus[] = [
      {
        pkg: '@flashattn/core',
        backend: 'reference',
        installed: true,
        loaded: true,
        version: packageVersion('@flashattn/core'),
      },
    ];
    for (const info of BACKEND_PACKAGES) {
      const r = await importOptional(info.pkg);
      if (r.module) modules.set(info.backend, r.module);
      statuses.push({
        pkg: info.pkg,
        backend: info.backend,
        installed: r.installed,
        loaded: Boolean(r.module),
        version: r.installed ? packageVersion(info.pkg) : undefined,
        error: r.error,
      });
    }
    return statuses;
  })();
  return loading;
}

/**
 * Does the backend keep data on a device (benchmarked on the GPU shapes)? The project's own backends
 * are known by name (cpu and wasm-simd also offer upload, as the identity); another backend counts as
 * a device backend when its upload gives a device tensor... which is only known after a call, so by
 * having both upload and download.
 */
export function isDeviceBackend(name: string, backend?: Backend): boolean {
  if (BACKEND_PACKAGES.some((p) => p.backend === name) || name === 'reference')
    return DEVICE_BACKENDS.has(name);
  return typeof backend?.upload === 'function' && typeof backend?.download === 'function';
}

/**
 * The thread count a backend says it uses, if it says: a numeric `threads` (or `info.threads`), else
 * read from its `info` line ("2 worker threads (...)", "single-threaded: ...", SPEC §7's note).
 */
export function threadsOf(backend: Backend): number | undefined {
  const b = backend as unknown as { threads?: unknown; info?: unknown; options?: { threads?: unknown } };
  const info = b.info as { threads?: unknown } | string | undefined;
  const objectThreads = typeof info === 'object' && info !== null ? info.threads : undefined;
  for (const t of [b.threads, objectThreads, b.options?.threads]) if (typeof t === 'number') return t;
  if (typeof info === 'string') {
    if (/single[- ]threaded/i.test(info)) return 1;
    const m = /(\d+) (?:worker )?threads?\b/i.exec(info);
    if (m) return Number(m[1]);
  }
  return undefined;
}

/** The backend's `info` line (SPEC §7, shown by listBackends as `note`), if it is a string. */
export function noteOf(backend: Backend): string | undefined {
  const info = (backend as unknown as { info?: unknown }).info;
  return typeof info === 'string' && info !== '' ? info : undefined;
}

/** Starts what a backend starts lazily (the cpu backend's worker pool), so timing does not include it. */
export async function readyBackend(backend: Backend): Promise<void> {
  const ready = (backend as unknown as { ready?: () => Promise<void> }).ready;
  if (typeof ready === 'function') await ready.call(backend);
}

/** What a backend says about itself beyond its capabilities (a plain `info` object: variant, threads ...). */
export function detailsOf(backend: Backend): Record<string, string | number | boolean> | undefined {
  const info = (backend as unknown as { info?: unknown }).info;
  if (!info || typeof info !== 'object') return undefined;
  const out: Record<string, string | number | boolean> = {};
  for (const [k, v] of Object.entries(info)) {
    if (typeof v === 'string' || typeof v === 'number' || typeof v === 'boolean') out[k] = v;
  }
  return Object.keys(out).length ? out : undefined;
}

/** The package's factory that takes options: its known name, else any create…Backend export. */
export function createFunction(
  info: BackendPackageInfo,
  mod: Record<string, unknown> | undefined,
): ((options?: object) => Backend | Promise<Backend>) | undefined {
  if (!mod) return undefined;
  const names = [info.create, ...Object.keys(mod).filter((k) => /^create\w*Backend$/i.test(k))];
  for (const n of names) {
    if (typeof mod[n] === 'function') return mod[n] as (options?: object) => Backend | Promise<Backend>;
  }
  return undefined;
}

export interface OpenedBackend {
  name: string;
  backend: Backend;
  /** Made here with explicit options (disposed by the caller), not the registry's shared instance. */
  owned: boolean;
  threads?: number;
}

/**
 * The backend `name`, from the registry, or, when `threads` is given and the package exports a factory
 * taking options (createCpuBackend({ threads }) ...), a fresh instance with that many threads.
 */
export async function openBackend(name: string, opts: { threads?: number } = {}): Promise<OpenedBackend> {
  await loadBackendPackages();
  const info = BACKEND_PACKAGES.find((p) => p.backend === name);
  if (opts.threads !== undefined && info && !info.device) {
    const create = createFunction(info, modules.get(name));
    if (create) {
      try {
        const backend = await create({ threads: opts.threads });
        await readyBackend(backend);
        return { name, backend, owned: true, threads: threadsOf(backend) ?? opts.threads };
      } catch (e) {
        throw new FlashAttentionError(
          'BACKEND_UNAVAILABLE',
          `backend ${name} is unavailable: ${shortMessage(e)}`,
          {
            cause: e,
          },
        );
      }
    }
  }
  const backend = await getBackend(name);
  await readyBackend(backend);
  return { name, backend, owned: false, threads: threadsOf(backend) };
}

export interface Selection {
  /** Backends to run: highest priority first for 'all', else in the order given. */
  names: string[];
  /** Registered but unavailable (only reported for 'all'). */
  skipped: BackendStatus[];
}

/**
 * Resolves --backend: 'auto' (the highest-priority available backend), 'all' (every available backend)
 * or a comma-separated list of names (each must be registered and available, else BACKEND_UNAVAILABLE).
 */
export async function selectBackends(spec: string): Promise<Selection> {
  await loadBackendPackages();
  const wanted = spec
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean);
  if (wanted.length === 0) throw new CliError('--backend needs a value: auto, all or a list of names', 2);
  if (wanted.length === 1 && wanted[0] === 'all') {
    const statuses = await listBackends();
    return {
      names: statuses.filter((s) => s.available).map((s) => s.name),
      skipped: statuses.filter((s) => !s.available),
    };
  }
  if (wanted.includes('all')) throw new CliError('--backend all cannot be combined with other names', 2);
  // Only the backends asked for are created (listBackends would start every one).
  const names: string[] = [];
  for (const w of wanted) {
    // getBackend throws BACKEND_UNAVAILABLE naming the registered backends, or saying why this one cannot start.
    const name = (await getBackend(w)).name;
    if (!names.includes(name)) names.push(name);
  }
  return { names, skipped: [] };
}
