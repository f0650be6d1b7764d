/** A progress bar on stderr (cli-progress), drawn only when stderr is a terminal. */
import cliProgress from 'cli-progress';
import type { Io } from './io.js';

export interface Progress {
  /** Draws the bar at `value` of `total` (0 by default; a restarted bar carries on). */
  start(total: number, task: string, value?: number): void;
  /** Names the task now running (the bar does not move). */
  update(task: string): void;
  /** One task done. */
  tick(task?: string): void;
  stop(): void;
}

const silent: Progress = { start() {}, update() {}, tick() {}, stop() {} };

export function createProgress(io: Io, enabled = true): Progress {
  if (!enabled || !io.errIsTTY || !io.errStream) return silent;
  const bar = new cliProgress.SingleBar(
    {
      stream: io.errStream,
      format: '{bar} {value}/{total} {duration_formatted} | {task}',
      hideCursor: true,
      clearOnComplete: true,
      stopOnComplete: false,
      etaBuffer: 4,
      fps: 10,
    },
    cliProgress.Presets.shades_classic,
  );
  let running = false;
  return {
    start(total, task, value = 0) {
      bar.start(total, value, { task });
      running = true;
    },
    update(task) {
      if (running) bar.update({ task });
    },
    tick(task) {
      if (running) bar.increment(1, task === undefined ? undefined : { task });
    },
    stop() {
      if (running) bar.stop();
      running = false;
    },
  };
}
