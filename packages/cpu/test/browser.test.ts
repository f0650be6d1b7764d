import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { expect, it } from 'vitest';

// The built package in headless Chromium: Web Workers with cross-origin isolation, single-threaded
// (and saying why in listBackends) without. Skipped where no Chromium is installed.
const chromium = process.env.FLASHATTN_CHROMIUM ?? '/usr/bin/chromium';

it.skipIf(!existsSync(chromium))(
  'runs in a browser: Web Workers when isolated, single-threaded otherwise',
  () => {
    const script = fileURLToPath(new URL('./browser/run.mjs', import.meta.url));
    const r = spawnSync(process.execPath, [script, chromium], { encoding: 'utf8', timeout: 150_000 });
    expect(r.status, `${r.stdout}\n${r.stderr}`).toBe(0);
    expect(r.stdout).toMatch(/"info":"2 worker threads \(Web Workers, SharedArrayBuffer\)","identical":true/);
    expect(r.stdout).toMatch(/"callerInfo":"2 threads: the calling thread and 1 worker \(Web Workers/);
    expect(r.stdout).toMatch(/"note":"single-threaded: SharedArrayBuffer is unavailable/);
  },
);
