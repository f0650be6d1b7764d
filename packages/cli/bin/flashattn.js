#!/usr/bin/env node
// The `flashattn` bin. pnpm links a workspace package's bins at install time, before anything is built,
// and skips a bin whose file does not exist yet (so `pnpm install && pnpm start` on a fresh clone would
// find no command): this committed file always exists and runs the build, dist/cli.js.
import { existsSync } from 'node:fs';

const cli = new URL('../dist/cli.js', import.meta.url);
if (!existsSync(cli)) {
  process.stderr.write(
    'flashattn: @flashattn/cli is not built (dist/cli.js is missing): run `pnpm build` first\n',
  );
  process.exit(1);
}
await import(cli.href);
