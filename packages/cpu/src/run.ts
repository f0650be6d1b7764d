import { backwardItem } from './backward.js';
import { forwardItem } from './forward.js';
import { itemCount, type Job } from './job.js';
import type { Scratch } from './scratch.js';

export function runItem(job: Job, n: number, s: Scratch): void {
  if (job.kind === 'forward') forwardItem(job, n, s);
  else backwardItem(job, n, s);
}

/** Every item of a job, in order, in the calling thread. */
export function runAll(job: Job, s: Scratch): void {
  const count = itemCount(job);
  for (let n = 0; n < count; n++) runItem(job, n, s);
}

/**
 * Claims items of `job` from the shared counter and runs them until none is left: what every worker
 * and, when it takes a share, the calling thread do. On an error the counter is pushed to the end so
 * that the other threads stop early (the job has failed anyway), and the error is rethrown.
 */
export function drain(job: Job, counter: Int32Array, count: number, s: Scratch): void {
  try {
    for (;;) {
      const n = Atomics.add(counter, 0, 1);
      if (n >= count) return;
      runItem(job, n, s);
    }
  } catch (e) {
    Atomics.store(counter, 0, count);
    throw e;
  }
}
