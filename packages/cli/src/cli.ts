/** The `flashattn` bin. */
import { run } from './program.js';

const code = await run(process.argv.slice(2));
// Backends may keep handles (worker pools, GPU devices) after dispose: exit once output is flushed.
process.stdout.write('', () => process.stderr.write('', () => process.exit(code)));
