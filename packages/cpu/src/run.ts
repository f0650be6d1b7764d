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
