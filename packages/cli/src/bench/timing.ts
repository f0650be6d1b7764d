/** Warm-up then timed runs; the median is what is reported. */
import { performance } from 'node:perf_hooks';

export function median(xs: readonly number[]): number {
  if (xs.length === 0) return Number.NaN;
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

/**
 * Runs `fn` `warmup` times untimed, then up to `repeat` times timed (milliseconds, each run on its
 * own). With `budgetMs` > 0, timing stops once the timed runs have taken that long (after at least one
 * run), and warm-up stops once it has. `after` runs after each call, untimed (to free device outputs).
 */
export async function timeRuns<T>(
  fn: () => Promise<T>,
  {
    warmup,
    repeat,
    budgetMs = 0,
    after,
  }: { warmup: number; repeat: number; budgetMs?: number; after?: (r: T) => void | Promise<void> },
): Promise<{ samples: number[]; last: T; warmupMs: number }> {
  let last: T | undefined;
  let warmupMs = 0;
  for (let i = 0; i < warmup; i++) {
    const t0 = performance.now();
    const r = await fn();
    warmupMs += performance.now() - t0;
    await after?.(r);
    if (budgetMs > 0 && warmupMs >= budgetMs) break;
  }
  const samples: number[] = [];
  let spent = 0;
  for (let i = 0; i < repeat; i++) {
    if (last !== undefined) await after?.(last);
    const t0 = performance.now();
    last = await fn();
    const ms = performance.now() - t0;
    samples.push(ms);
    spent += ms;
    if (budgetMs > 0 && spent >= budgetMs) break;
  }
  return { samples, last: last as T, warmupMs };
}
