/**
 * The backend registry (SPEC §7). Importing a backend package registers its factory; getBackend('auto')
 * creates the highest-priority backend whose factory succeeds and remembers why the others failed.
 */
import { describe, FlashAttentionError, fail, isFlashAttentionError } from './errors.js';
import type { AttentionOptions, Backend, BackendFactory, ForwardResult, Tensor } from './types.js';

interface Entry {
  name: string;
  factory: BackendFactory;
  priority: number;
  instance?: Promise<Backend>;
  failure?: string;
}

const entries = new Map<string, Entry>();

export interface BackendStatus {
  name: string;
  priority: number;
  available: boolean;
  reason?: string;
  /** The backend's own `info`, when it has one (how it runs here, e.g. single-threaded and why). */
  note?: string;
}

/** Registers (or replaces) a backend. Priorities: cuda 40, webgpu 30, wasm-simd 20, cpu 10, reference 0. */
export function registerBackend(name: string, factory: BackendFactory, priority: number): void {
  if (typeof name !== 'string' || name === '' || name === 'auto') {
    fail(
      'INVALID_OPTION',
      `a backend name must be a non-empty string other than 'auto', got ${describe(name)}`,
    );
  }
  if (typeof factory !== 'function')
    fail('INVALID_OPTION', `the factory of backend ${name} must be a function`);
  if (!Number.isFinite(priority))
    fail('INVALID_OPTION', `the priority of backend ${name} must be a finite number`);
  const old = entries.get(name);
  if (old?.instance) old.instance.then((b) => b.dispose()).catch(() => {});
  entries.set(name, { name, factory, priority });
}

export function unregisterBackend(name: string): void {
  const old = entries.get(name);
  if (old?.instance) old.instance.then((b) => b.dispose()).catch(() => {});
  entries.delete(name);
}

function reasonOf(e: unknown): string {
  if (isFlashAttentionError(e)) return e.message.replace(/^\[[A-Z_]+\] /, '');
  if (e instanceof Error) return e.message;
  return String(e);
}

/** Creates the backend once; a failed creation is remembered with its reason and retried on the next ask. */
async function instantiate(entry: Entry): Promise<Backend> {
  if (!entry.instance) {
    entry.instance = entry.factory().then(
      (backend) => {
        entry.failure = undefined;
        return backend;
      },
      (e: unknown) => {
        entry.instance = undefined;
        entry.failure = reasonOf(e);
        throw e;
      },
    );
  }
  return entry.instance;
}

function byPriority(): Entry[] {
  return [...entries.values()].sort((a, b) => b.priority - a.priority);
}

/**
 * 'auto' returns the highest-priority backend whose factory succeeds; a name returns that backend or
 * throws BACKEND_UNAVAILABLE with its reason.
 */
export async function getBackend(name = 'auto'): Promise<Backend> {
  if (name === 'auto') {
    const reasons: string[] = [];
    for (const entry of byPriority()) {
      try {
        return await instantiate(entry);
      } catch (e) {
        reasons.push(`${entry.name}: ${reasonOf(e)}`);
      }
    }
    fail(
      'BACKEND_UNAVAILABLE',
      `no backend could be created${reasons.length ? ` (${reasons.join('; ')})` : ': none registered'}`,
    );
  }
  const entry = entries.get(name);
  if (!entry) {
    fail(
      'BACKEND_UNAVAILABLE',
      `no backend named ${JSON.stringify(name)} is registered (registered: ${[...entries.keys()].join(', ') || 'none'}); import its package, e.g. @flashattn/${name}`,
    );
  }
  try {
    return await instantiate(entry);
  } catch (e) {
    if (isFlashAttentionError(e) && e.code === 'BACKEND_UNAVAILABLE') throw e;
    throw new FlashAttentionError('BACKEND_UNAVAILABLE', `backend ${name} is unavailable: ${reasonOf(e)}`, {
      cause: e,
    });
  }
}

/** Every registered backend, highest priority first, with whether it can be created here and why not. */
export async function listBackends(): Promise<BackendStatus[]> {
  const result: BackendStatus[] = [];
  for (const entry of byPriority()) {
    try {
      const backend = await instantiate(entry);
      const status: BackendStatus = { name: entry.name, priority: entry.priority, available: true };
      if (typeof backend.info === 'string' && backend.info !== '') status.note = backend.info;
      result.push(status);
    } catch (e) {
      result.push({ name: entry.name, priority: entry.priority, available: false, reason: reasonOf(e) });
    }
  }
  return result;
}

/** Disposes every created backend (they are created again on the next ask). */
export async function disposeBackends(): Promise<void> {
  const all = [...entries.values()];
  await Promise.all(
    all.map(async (e) => {
      const inst = e.instance;
      e.instance = undefined;
      if (inst) await inst.then((b) => b.dispose()).catch(() => {});
    }),
  );
}

/** One call: pick a backend ('auto' by default) and run the forward. */
export async function attention<T extends Tensor>(
  q: T,
  k: T,
  v: T,
  options: AttentionOptions & { backend?: string } = {},
): Promise<ForwardResult<T>> {
  const { backend: name, ...rest } = options;
  const backend = await getBackend(name ?? 'auto');
  return backend.forward(q, k, v, rest);
}
