/** Promise wrapper around the reference worker; one worker, requests answered in order. */
import type { RefEnvelope, RefRequest, RefResponse } from './ref-protocol.js';

export class RefError extends Error {
  constructor(
    message: string,
    readonly code: string | null,
  ) {
    super(message);
  }
}

let worker: Worker | null = null;
let nextId = 1;
const pending = new Map<number, { resolve: (r: RefResponse) => void; reject: (e: Error) => void }>();

function getWorker(): Worker {
  if (!worker) {
    worker = new Worker(new URL('./ref-worker.ts', import.meta.url), { type: 'module' });
    worker.onmessage = (ev: MessageEvent<RefEnvelope<RefResponse>>) => {
      const { id, ...res } = ev.data;
      const p = pending.get(id);
      if (!p) return;
      pending.delete(id);
      if (res.kind === 'error') p.reject(new RefError(res.message, res.code));
      else p.resolve(res as RefResponse);
    };
    worker.onerror = (ev) => {
      ev.preventDefault();
      const err = new Error(`reference worker failed: ${ev.message}`);
      for (const p of pending.values()) p.reject(err);
      pending.clear();
      worker?.terminate();
      worker = null;
    };
  }
  return worker;
}

export function refCall<K extends RefRequest['kind']>(
  req: Extract<RefRequest, { kind: K }>,
): Promise<Extract<RefResponse, { kind: K }>> {
  const id = nextId++;
  return new Promise((resolve, reject) => {
    pending.set(id, { resolve: resolve as (r: RefResponse) => void, reject });
    getWorker().postMessage({ id, ...req });
  });
}
