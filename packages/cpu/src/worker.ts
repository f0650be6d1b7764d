/**
 * The worker entry (dist/worker.js): runs the items of the jobs the pool posts, claiming them from
 * the job's shared counter. Works as a Node worker_threads worker and as a browser module worker.
 */
import type { ReplyMessage, RunMessage } from './pool.js';
import { drain } from './run.js';
import { Scratch } from './scratch.js';

const scratch = new Scratch();

function handle(msg: RunMessage, post: (reply: ReplyMessage) => void): void {
  if (msg?.type !== 'run') return;
  const { id, job, counter, count } = msg;
  try {
    drain(job, counter, count, scratch);
    post({ type: 'done', id });
  } catch (e) {
    const err = e instanceof Error ? e : new Error(String(e));
    post({ type: 'error', id, message: err.message, name: err.name });
  }
}

const NODE_WORKER_THREADS = 'node:worker_threads';

if (typeof process !== 'undefined' && typeof process.versions?.node === 'string') {
  const { parentPort } = (await import(
    /* @vite-ignore */ NODE_WORKER_THREADS
  )) as typeof import('node:worker_threads');
  if (!parentPort) throw new Error('@flashattn/cpu/worker.js must be started as a worker thread');
  const port = parentPort;
  port.on('message', (msg: RunMessage) => handle(msg, (reply) => port.postMessage(reply)));
  port.postMessage({ type: 'ready' } satisfies ReplyMessage);
} else {
  const scope = globalThis as unknown as {
    onmessage: ((ev: MessageEvent<RunMessage>) => void) | null;
    postMessage(msg: ReplyMessage): void;
  };
  scope.onmessage = (ev) => handle(ev.data, (reply) => scope.postMessage(reply));
  scope.postMessage({ type: 'ready' });
}
