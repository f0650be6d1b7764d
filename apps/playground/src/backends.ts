/**
 * The backends the page can use. core's 'reference' backend is always there; each backend package
 * (webgpu, wasm-simd, cpu) registers itself with core's registry when imported, and is imported here
 * only if it is installed and built (see the virtual module in vite.config.ts).
 */

import { loaders } from 'virtual:flashattn-backends';
import { type Backend, getBackend, listBackends } from '@flashattn/core';

export interface BackendInfo {
  name: string;
  available: boolean;
  reason?: string;
  /** The package exports create<Name>Backend taking { threads }. */
  threaded: boolean;
}

/** Order shown on the page: fastest first, as the registry's priorities. */
export const BACKEND_ORDER = ['webgpu', 'wasm-simd', 'cpu', 'reference'];

const modules = new Map<string, Record<string, unknown>>();
const missing = new Map<string, string>();
let loading: Promise<void> | null = null;

function factoryName(name: string): string {
  const pascal = name
    .split('-')
    .map((s) => (s === 'simd' ? 'Simd' : s === 'webgpu' ? 'WebGpu' : s[0].toUpperCase() + s.slice(1)))
    .join('');
  return `create${pascal}Backend`;
}

/** The module's create<Name>Backend, however the package capitalises it. */
function findFactory(mod: Record<string, unknown>, name: string): ((o?: object) => unknown) | null {
  const want = factoryName(name).toLowerCase();
  for (const [k, v] of Object.entries(mod)) {
    if (k.toLowerCase() === want && typeof v === 'function') return v as (o?: object) => unknown;
  }
  return null;
}

/** Imports every backend package that is there; remembers why the others are not. */
export function loadBackendPackages(): Promise<void> {
  loading ??= (async () => {
    await Promise.all(
      Object.entries(loaders).map(async ([name, load]) => {
        try {
          modules.set(name, await load());
        } catch (e) {
          missing.set(name, e instanceof Error ? e.message : String(e));
        }
      }),
    );
  })();
  return loading;
}

export async function backendStatuses(): Promise<BackendInfo[]> {
  await loadBackendPackages();
  const listed = await listBackends();
  const out: BackendInfo[] = [];
  for (const name of BACKEND_ORDER) {
    const s = listed.find((x) => x.name === name);
    const mod = modules.get(name);
    const threaded = name === 'cpu' || name === 'wasm-simd' ? !!(mod && findFactory(mod, name)) : false;
    if (s) out.push({ name, available: s.available, reason: s.reason, threaded });
    else
      out.push({
        name,
        available: false,
        reason: missing.get(name) ?? `${name} did not register itself with @flashattn/core`,
        threaded: false,
      });
  }
  for (const s of listed) {
    if (!BACKEND_ORDER.includes(s.name) && s.name !== 'cuda')
      out.push({ name: s.name, available: s.available, reason: s.reason, threaded: false });
  }
  return out;
}

const explicit = new Map<string, Promise<Backend>>();

/**
 * The registered backend, or, for cpu and wasm-simd with a thread count, one made with the package's
 * own factory (kept for reuse; the previous one of that name is disposed).
 */
export async function backendFor(name: string, threads?: number): Promise<Backend> {
  await loadBackendPackages();
  if (threads && threads > 0 && (name === 'cpu' || name === 'wasm-simd')) {
    const key = `${name}:${threads}`;
    let b = explicit.get(key);
    if (!b) {
      const mod = modules.get(name);
      const make = mod && findFactory(mod, name);
      if (!make) return getBackend(name);
      for (const [k, old] of explicit) {
        if (k.startsWith(`${name}:`)) {
          explicit.delete(k);
          old.then((x) => x.dispose()).catch(() => {});
        }
      }
      b = Promise.resolve(make({ threads }) as Backend | Promise<Backend>);
      explicit.set(key, b);
      b.catch(() => explicit.delete(key));
    }
    return b;
  }
  return getBackend(name);
}

/**
 * What a backend says it holds or allocated (SPEC §10: the model is held against this), if it says:
 * a number property or method such as wasm-simd's `memoryBytes()`, or a stats object.
 */
export function reportedBytes(backend: Backend): number | null {
  const b = backend as unknown as Record<string, unknown>;
  for (const key of [
    'memoryBytes',
    'lastAllocatedBytes',
    'allocatedBytes',
    'peakBytes',
    'memoryStats',
    'stats',
  ]) {
    let v = b[key];
    try {
      if (typeof v === 'function') v = (v as () => unknown).call(backend);
    } catch {
      continue;
    }
    if (typeof v === 'number' && Number.isFinite(v)) return v;
    if (v && typeof v === 'object') {
      const o = v as Record<string, unknown>;
      for (const k of ['allocatedBytes', 'peakBytes', 'bytes', 'workspaceBytes']) {
        if (typeof o[k] === 'number') return o[k] as number;
      }
    }
  }
  return null;
}

/** A backend's own description of itself (adapter, threads, variant…), as one short line. */
export function backendInfo(backend: Backend, headDim?: number): string | null {
  const b = backend as unknown as {
    info?: unknown;
    blockSizes?: (d: number) => { blockQ?: number; blockK?: number };
  };
  const parts: string[] = [];
  if (typeof b.info === 'string') parts.push(b.info);
  else if (b.info && typeof b.info === 'object') {
    for (const [k, v] of Object.entries(b.info as Record<string, unknown>)) {
      if (v == null || typeof v === 'object' || typeof v === 'function') continue;
      parts.push(`${k}: ${String(v)}`);
    }
  }
  if (headDim && typeof b.blockSizes === 'function') {
    try {
      const t = b.blockSizes(headDim);
      if (t?.blockQ && t.blockK) parts.push(`tiles ${t.blockQ}×${t.blockK} (Br×Bc)`);
    } catch {
      // a backend without tile sizes for this d: say nothing
    }
  }
  return parts.length ? parts.join(', ') : null;
}

let statusPromise: Promise<BackendInfo[]> | null = null;

/** backendStatuses(), asked once and shared by the tabs. */
export function statusesOnce(): Promise<BackendInfo[]> {
  statusPromise ??= backendStatuses();
  return statusPromise;
}
