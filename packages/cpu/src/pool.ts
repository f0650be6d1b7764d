/**
 * A pool of worker threads (node:worker_threads in Node, Web Workers in browsers), started once and
 * reused. A job is posted to every worker that has something to do; each claims item after item from
 * a shared counter (Atomics.add) until none is left, so the load balances itself and the item →
 * thread assignment has no influence on the results.
 *
 * In Node the workers are unref()'d whenever they have no job, so an idle pool never keeps the
 * process alive, and ref()'d while one runs (else a script awaiting a result could exit early).
 */
import { FlashAttentionError } from '@flashattn/core';
import type { Job } from './job.js';

/** What the main thread posts. */
export interface RunMessage {
  type: 'run';
  id: number;
  job: Job;
  counter: Int32Array;
  count: number;
}

/** What a worker posts back. */
export type ReplyMessage =
  | { type: 'ready' }
  | { type: 'done'; id: number }
  | { type: 'error'; id: number; message: string; name: string };

interface Port {
  post(msg: RunMessage): void;
  terminate(): void;
  ref(): void;
  unref(): void;
}

interface PendingJob {
  remaining: number;
  resolve: () => void;
  reject: (e: unknown) => void;
  error: Error | null;
}

export function isNode(): boolean {
  return typeof process !== 'undefined' && typeof process.versions?.node === 'string';
}

/** Why shared-memory workers cannot run here, or null when they can. */
export function sharedMemoryUnavailable(): string | null {
  if (typeof SharedArrayBuffer === 'undefined' || typeof Atomics === 'undefined') {
    return 'SharedArrayBuffer is unavailable (a browser page needs cross-origin isolation: COOP same-origin and COEP require-corp)';
  }
  if (!isNode()) {
    const g = globalThis as { crossOriginIsolated?: boolean; Worker?: unknown };
    if (g.crossOriginIsolated === false) {
      return 'the page is not cross-origin isolated (COOP same-origin and COEP require-corp), so SharedArrayBuffer cannot be shared with workers';
    }
    if (typeof g.Worker !== 'function') return 'Web Workers are unavailable here';
  }
  return null;
}

// Held in variables so that bundlers for the browser do not try to resolve Node's modules.
const NODE_WORKER_THREADS = 'node:worker_threads';
const NODE_OS = 'node:os';

/** The number of cores this thread may use: os.availableParallelism() or navigator.hardwareConcurrency. */
export async function availableCores(): Promise<number> {
  try {
    if (isNode()) {
      const os = (await import(/* @vite-ignore */ NODE_OS)) as typeof import('node:os');
      return Math.max(
        1,
        typeof os.availableParallelism === 'function' ? os.availableParallelism() : os.cpus().length,
      );
    }
    const nav = (globalThis as { navigator?: { hardwareConcurrency?: number } }).navigator;
    return Math.max(1, nav?.hardwareConcurrency ?? 1);
  } catch {
    return 1;
  }
}

/** Where the worker entry is: dist/worker.js next to the bundle that contains this module. */
export function defaultWorkerUrl(): URL {
  return new URL('./worker.js', import.meta.url);
}

const START_TIMEOUT_MS = 30_000;

/**
 * The parent's Node options minus those that only make sense for the main script (node -e "...",
 * --input-type, -p): a worker inheriting them refuses to start. Loaders and other flags are kept.
 */
function workerExecArgv(): string[] {
  const all = process.execArgv;
  const kept: string[] = [];
  for (let n = 0; n < all.length; n++) {
    const a = all[n];
    if (a === '-e' || a === '--eval' || a === '-p' || a === '--print' || a === '--input-type') {
      n++;
      continue;
    }
    if (
      /^(--eval|--print|--input-type)=/.test(a) ||
      a === '-i' ||
      a === '--interactive' ||
      a === '-c' ||
      a === '--check'
    ) {
      continue;
    }
    kept.push(a);
  }
  return kept;
}

export class WorkerPool {
  private readonly ports: Port[] = [];
  private readonly busy: number[] = [];
  private readonly jobs = new Map<number, PendingJob>();
  private nextId = 1;
  /** Set when the pool can no longer run jobs (disposed, or a worker died), with the reason. */
  dead: string | null = null;

  private constructor(readonly size: number) {}

  /** Starts `size` workers and waits until each has loaded; rejects (and cleans up) if one fails. */
  static async start(size: number, url: URL | string): Promise<WorkerPool> {
    const pool = new WorkerPool(size);
    const ready: Promise<void>[] = [];
    try {
      const wt = isNode()
        ? ((await import(/* @vite-ignore */ NODE_WORKER_THREADS)) as typeof import('node:worker_threads'))
        : null;
      for (let w = 0; w < size; w++) ready.push(pool.spawn(w, url, wt));
      await Promise.all(ready);
    } catch (e) {
      pool.terminate('the pool failed to start');
      throw e;
    }
    for (const port of pool.ports) port.unref();
    return pool;
  }

  private spawn(
    w: number,
    url: URL | string,
    wt: typeof import('node:worker_threads') | null,
  ): Promise<void> {
    let onReady!: () => void;
    let onFail!: (e: Error) => void;
    const ready = new Promise<void>((resolve, reject) => {
      onReady = resolve;
      onFail = reject;
    });
    let started = false;
    const timer = setTimeout(
      () => onFail(new Error(`worker ${w} did not start within ${START_TIMEOUT_MS} ms`)),
      START_TIMEOUT_MS,
    );
    (timer as { unref?: () => void }).unref?.();
    const message = (msg: ReplyMessage) => {
      if (msg.type === 'ready') {
        started = true;
        clearTimeout(timer);
        onReady();
      } else this.reply(w, msg);
    };
    const failure = (e: Error) => {
      clearTimeout(timer);
      if (!started) onFail(e);
      else this.workerDied(e);
    };
    if (wt) {
      // The kernels allocate little that lives: a small young generation keeps each worker's RSS
      // about 5 MiB lower (PERF.md, memory) at no measurable cost.
      const worker = new wt.Worker(url, {
        execArgv: workerExecArgv(),
        resourceLimits: { maxYoungGenerationSizeMb: 2 },
      });
      worker.on('message', message);
      worker.on('error', failure);
      worker.on('exit', (code) => failure(new Error(`a worker thread exited with code ${code}`)));
      this.ports.push({
        post: (msg) => worker.postMessage(msg),
        terminate: () => void worker.terminate(),
        ref: () => worker.ref(),
        unref: () => worker.unref(),
      });
    } else {
      const worker = new Worker(url, { type: 'module', name: `flashattn-cpu-${w}` });
      worker.onmessage = (ev: MessageEvent<ReplyMessage>) => message(ev.data);
      worker.onerror = (ev: ErrorEvent) => {
        ev.preventDefault();
        failure(new Error(ev.message || 'the worker script failed to load'));
      };
      worker.onmessageerror = () => failure(new Error('a worker message could not be deserialised'));
      this.ports.push({
        post: (msg) => worker.postMessage(msg),
        terminate: () => worker.terminate(),
        ref: () => {},
        unref: () => {},
      });
    }
    this.busy.push(0);
    return ready;
  }

  /**
   * Runs items 0..count-1 of `job` on up to `size` workers, which claim them from `counter` (the
   * caller may claim some too); resolves when every worker that was posted the job is done.
   */
  run(job: Job, count: number, counter: Int32Array): Promise<void> {
    if (this.dead)
      return Promise.reject(
        new FlashAttentionError('DEVICE_LOST', `the cpu worker pool is unusable: ${this.dead}`),
      );
    const id = this.nextId++;
    const used = Math.min(this.size, count);
    return new Promise<void>((resolve, reject) => {
      this.jobs.set(id, { remaining: used, resolve, reject, error: null });
      for (let w = 0; w < used; w++) {
        if (this.busy[w]++ === 0) this.ports[w].ref();
        this.ports[w].post({ type: 'run', id, job, counter, count });
      }
    });
  }

  private reply(w: number, msg: ReplyMessage): void {
    if (msg.type === 'ready') return;
    if (--this.busy[w] === 0) this.ports[w].unref();
    const job = this.jobs.get(msg.id);
    if (!job) return;
    if (msg.type === 'error' && !job.error) {
      const err = new Error(msg.message);
      err.name = msg.name;
      job.error = err;
    }
    if (--job.remaining === 0) {
      this.jobs.delete(msg.id);
      if (job.error) job.reject(job.error);
      else job.resolve();
    }
  }

  private workerDied(e: Error): void {
    if (this.dead) return;
    const oom = /memory/i.test(e.message) || (e as { code?: string }).code === 'ERR_WORKER_OUT_OF_MEMORY';
    this.terminate(`a worker thread died: ${e.message}`, oom ? 'OUT_OF_MEMORY' : 'DEVICE_LOST');
  }

  /** Stops every worker; jobs still running are rejected with `reason`. */
  terminate(reason: string, code: 'DISPOSED' | 'DEVICE_LOST' | 'OUT_OF_MEMORY' = 'DEVICE_LOST'): void {
    if (this.dead) return;
    this.dead = reason;
    for (const port of this.ports) port.terminate();
    for (const job of this.jobs.values()) job.reject(new FlashAttentionError(code, `cpu backend: ${reason}`));
    this.jobs.clear();
  }
}
