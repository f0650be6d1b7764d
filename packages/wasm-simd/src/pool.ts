/**
 * A pool of workers (worker_threads in Node, Web Workers in browsers) that each instantiate the
 * threads build of the kernels over the backend's one shared WebAssembly.Memory. A job posts
 * `{fn, worker}` to n workers; each runs fn(worker), which takes work items from an atomic counter
 * in the shared memory until none are left, and answers. Idle workers are unref'd in Node so that
 * they never keep a process alive; dispose() terminates them.
 */
import { FlashAttentionError } from '@flashattn/core';

// Runs as a CommonJS script in a Node worker (eval) and as a classic script in a Web Worker.
const WORKER_SOURCE = `'use strict';
let port;
let exportsOf = null;
function onMessage(msg) {
  try {
    if (msg.type === 'init') {
      exportsOf = new WebAssembly.Instance(msg.module, { env: { memory: msg.memory } }).exports;
      port.postMessage({ type: 'ready' });
    } else if (msg.type === 'run') {
      exportsOf[msg.fn](msg.worker);
      port.postMessage({ type: 'done', id: msg.id });
    }
  } catch (e) {
    port.postMessage({ type: 'error', id: msg.id, message: String((e && e.stack) || e) });
  }
}
if (typeof self === 'undefined' && typeof require === 'function') {
  port = require('node:worker_threads').parentPort;
  port.on('message', onMessage);
} else {
  port = self;
  self.onmessage = (e) => onMessage(e.data);
}
`;

interface Msg {
  type: 'ready' | 'done' | 'error';
  id?: number;
  message?: string;
}

interface WorkerHandle {
  post(msg: unknown): void;
  onMessage(cb: (m: Msg) => void): void;
  onFailure(cb: (e: Error) => void): void;
  ref(): void;
  unref(): void;
  terminate(): Promise<void>;
}

type NodeWorkerCtor = new (
  code: string,
  opts: { eval: true },
) => {
  postMessage(m: unknown): void;
  on(ev: string, cb: (x: never) => void): void;
  ref(): void;
  unref(): void;
  terminate(): Promise<number>;
};

const isNode =
  typeof process === 'object' &&
  process !== null &&
  typeof process.versions === 'object' &&
  typeof process.versions.node === 'string';

let nodeWorkerCtor: Promise<NodeWorkerCtor | null> | undefined;

function loadNodeWorker(): Promise<NodeWorkerCtor | null> {
  if (!nodeWorkerCtor) {
    // A variable specifier keeps bundlers for the browser from trying to resolve a Node builtin.
    const spec = 'node:worker_threads';
    nodeWorkerCtor = import(/* @vite-ignore */ spec).then(
      (m: { Worker: NodeWorkerCtor }) => m.Worker,
      () => null,
    );
  }
  return nodeWorkerCtor;
}

/** Why workers cannot be started here, or null. */
export async function workersUnavailableReason(): Promise<string | null> {
  if (isNode) return (await loadNodeWorker()) ? null : 'node:worker_threads could not be loaded';
  return typeof Worker === 'function' ? null : 'Web Workers are not available in this environment';
}

async function spawn(): Promise<WorkerHandle> {
  if (isNode) {
    const W = await loadNodeWorker();
    if (!W) throw new Error('node:worker_threads could not be loaded');
    const w = new W(WORKER_SOURCE, { eval: true });
    return {
      post: (m) => w.postMessage(m),
      onMessage: (cb) => w.on('message', cb as (x: never) => void),
      onFailure: (cb) => {
        w.on('error', cb as (x: never) => void);
        w.on('exit', ((code: number) => cb(new Error(`a wasm-simd worker exited with code ${code}`))) as (
          x: never,
        ) => void);
      },
      ref: () => w.ref(),
      unref: () => w.unref(),
      terminate: async () => {
        await w.terminate();
      },
    };
  }
  const url = URL.createObjectURL(new Blob([WORKER_SOURCE], { type: 'text/javascript' }));
  const w = new Worker(url);
  URL.revokeObjectURL(url);
  return {
    post: (m) => w.postMessage(m),
    onMessage: (cb) => {
      w.onmessage = (e: MessageEvent) => cb(e.data as Msg);
    },
    onFailure: (cb) => {
      w.onerror = (e: ErrorEvent) => cb(new Error(`a wasm-simd worker failed: ${e.message}`));
    },
    ref: () => {},
    unref: () => {},
    terminate: async () => w.terminate(),
  };
}

interface Slot {
  handle: WorkerHandle;
  /** Resolves the job this worker is on. */
  pending: { resolve: () => void; reject: (e: Error) => void } | null;
  dead: boolean;
}

export class WorkerPool {
  private slots: Slot[] = [];
  private nextId = 1;
  private broken: Error | null = null;

  private constructor(
    private readonly module: WebAssembly.Module,
    private readonly memory: WebAssembly.Memory,
  ) {}

  static async create(
    module: WebAssembly.Module,
    memory: WebAssembly.Memory,
    n: number,
  ): Promise<WorkerPool> {
    const pool = new WorkerPool(module, memory);
    await pool.grow(n);
    return pool;
  }

  get size(): number {
    return this.slots.length;
  }

  /** Starts workers until there are n. */
  async grow(n: number): Promise<void> {
    const started: Promise<void>[] = [];
    while (this.slots.length < n) {
      const index = this.slots.length;
      const slot: Slot = { handle: undefined as unknown as WorkerHandle, pending: null, dead: false };
      this.slots.push(slot);
      started.push(
        spawn().then(
          (handle) =>
            new Promise<void>((resolve, reject) => {
              slot.handle = handle;
              let ready = false;
              handle.onMessage((m) => {
                if (!ready) {
                  if (m.type === 'ready') {
                    ready = true;
                    handle.unref();
                    resolve();
                  } else reject(new Error(m.message ?? 'worker failed to start'));
                  return;
                }
                const p = slot.pending;
                slot.pending = null;
                if (!p) return;
                if (m.type === 'done') p.resolve();
                else p.reject(new Error(m.message ?? 'worker error'));
              });
              handle.onFailure((e) => {
                slot.dead = true;
                this.broken = e;
                if (!ready) reject(e);
                const p = slot.pending;
                slot.pending = null;
                p?.reject(e);
              });
              handle.post({ type: 'init', module: this.module, memory: this.memory });
            }),
          (e: unknown) => {
            slot.dead = true;
            throw e;
          },
        ),
      );
      void index;
    }
    try {
      await Promise.all(started);
    } catch (e) {
      await this.terminate();
      throw e;
    }
  }

  /** Runs fn(worker) on workers 0..n-1 and waits for all of them. */
  async run(fn: string, n: number): Promise<void> {
    if (this.broken) throw this.broken;
    if (n > this.slots.length) await this.grow(n);
    const jobs: Promise<void>[] = [];
    for (let w = 0; w < n; w++) {
      const slot = this.slots[w];
      const id = this.nextId++;
      slot.handle.ref();
      jobs.push(
        new Promise<void>((resolve, reject) => {
          slot.pending = { resolve, reject };
          slot.handle.post({ type: 'run', fn, worker: w, id });
        }).finally(() => slot.handle.unref()),
      );
    }
    const results = await Promise.allSettled(jobs);
    const failed = results.find((r) => r.status === 'rejected') as PromiseRejectedResult | undefined;
    if (failed) {
      throw new FlashAttentionError(
        'DEVICE_LOST',
        `a wasm-simd worker failed: ${(failed.reason as Error).message}`,
        { cause: failed.reason },
      );
    }
  }

  get healthy(): boolean {
    return this.broken === null && this.slots.every((s) => !s.dead);
  }

  async terminate(): Promise<void> {
    const slots = this.slots;
    this.slots = [];
    await Promise.all(
      slots.map(async (s) => {
        s.dead = true;
        s.pending?.reject(new FlashAttentionError('DISPOSED', 'the wasm-simd backend was disposed'));
        s.pending = null;
        if (s.handle) await s.handle.terminate().catch(() => {});
      }),
    );
  }
}
