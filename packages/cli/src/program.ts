/**
 * The `flashattn` command line: commander for parsing, one async action per command. run() is the
 * whole program without process.exit, so tests can call it in-process.
 */
import { DTYPES, type DType } from '@flashattn/core';
import { Command, CommanderError, InvalidArgumentError, Option } from 'commander';
import { packageVersion } from './backends.js';
import { benchCommand } from './bench/run.js';
import { SHAPE_SETS, type ShapeSetName } from './bench/shapes.js';
import { errorLine, isUserError } from './errors.js';
import { infoCommand } from './info.js';
import { type Io, processIo } from './io.js';
import { verifyCommand } from './verify.js';

function positiveInt(name: string) {
  return (value: string): number => {
    const n = Number(value);
    if (!Number.isSafeInteger(n) || n < 1)
      throw new InvalidArgumentError(`${name} must be a positive integer.`);
    return n;
  };
}

function nonNegativeInt(name: string) {
  return (value: string): number => {
    const n = Number(value);
    if (!Number.isSafeInteger(n) || n < 0)
      throw new InvalidArgumentError(`${name} must be a non-negative integer.`);
    return n;
  };
}

function nonNegativeNumber(name: string) {
  return (value: string): number => {
    const n = Number(value);
    if (!Number.isFinite(n) || n < 0)
      throw new InvalidArgumentError(`${name} must be a non-negative number.`);
    return n;
  };
}

function intList(value: string): number[] {
  const xs = value.split(',').map((s) => Number(s.trim()));
  if (xs.length === 0 || xs.some((n) => !Number.isSafeInteger(n) || n < 1)) {
    throw new InvalidArgumentError('expected a comma-separated list of positive integers, e.g. 128,256.');
  }
  return xs;
}

const BACKEND_HELP =
  "'auto' (the highest-priority available backend), 'all', or names: cpu,wasm-simd,webgpu,cuda,reference";

export function createProgram(io: Io, exit: { code: number }, argv: string[] = []): Command {
  const program = new Command();
  program
    .name('flashattn')
    .description('Benchmark, verify and inspect the installed FlashAttention backends (@flashattn/*).')
    .version(packageVersion('@flashattn/cli') ?? '0.0.0', '-V, --version')
    .showHelpAfterError('(run flashattn --help for usage)')
    .exitOverride()
    .configureOutput({ writeOut: (s) => io.out(s), writeErr: (s) => io.err(s) });

  program
    .command('info')
    .description(
      'the backends installed, which are available here and why not, their capabilities, the machine',
    )
    .option('--json', 'print the report as JSON')
    .action(async (o: { json?: boolean }) => {
      exit.code = await infoCommand(o, io);
    });

  program
    .command('bench')
    .description(
      'time the SPEC §9 shapes on the chosen backends; each result checked against float64 on sampled rows',
    )
    .option('-b, --backend <spec>', BACKEND_HELP, 'auto')
    .addOption(
      new Option('-s, --shapes <set>', 'shape set: quick (seconds) or standard (SPEC §9)')
        .choices(SHAPE_SETS)
        .default('standard'),
    )
    .addOption(new Option('-d, --dtype <dtype>', 'element type').choices(DTYPES).default('float32'))
    .option(
      '-t, --threads <n>',
      'threads for the cpu and wasm-simd backends (default: their own, the available cores)',
      positiveInt('--threads'),
    )
    .option('--backward', 'also time the backward pass (FLOPs = 2.5 × forward)', false)
    .option(
      '--anchors',
      'also run onnxruntime-node (MultiHeadAttention and MatMul-Softmax-MatMul, 1 and 2 threads) on the CPU shapes',
      false,
    )
    .option(
      '-r, --repeat <n>',
      'timed runs per result, the median is reported (default: 3 quick, 5 standard)',
      positiveInt('--repeat'),
    )
    .option('-w, --warmup <n>', 'untimed warm-up runs per result', nonNegativeInt('--warmup'), 1)
    .option('--seq <list>', 'replace the sequence lengths of the shape set, e.g. 128,256', intList)
    .option(
      '--rows <n>',
      'query rows checked against the float64 reference per result',
      positiveInt('--rows'),
      8,
    )
    .option(
      '--budget <seconds>',
      'seconds of timed runs per result (fewer runs once spent); shapes predicted to need over twice this for one run are skipped; 0 = no limit (default: 1.5 quick, 30 standard)',
      nonNegativeNumber('--budget'),
    )
    .option('--json <file>', 'also write every result with the machine info to FILE')
    .option('--no-progress', 'no progress bar (it is only drawn on a terminal anyway)')
    .action(
      async (o: {
        backend: string;
        shapes: ShapeSetName;
        dtype: DType;
        threads?: number;
        backward: boolean;
        anchors: boolean;
        repeat?: number;
        warmup: number;
        seq?: number[];
        rows: number;
        budget?: number;
        json?: string;
        progress: boolean;
      }) => {
        exit.code = await benchCommand(o, io, argv);
      },
    );

  program
    .command('verify')
    .description(
      'run the conformance suite (@flashattn/conformance) against every installed, available backend',
    )
    .option('-b, --backend <spec>', BACKEND_HELP, 'all')
    .option('--quick', 'the quick case list', true)
    .option('--full', 'the whole case list instead of the quick one')
    .option('--filter <text>', 'only cases whose name contains TEXT')
    .option('-t, --threads <n>', 'threads for the cpu and wasm-simd backends', positiveInt('--threads'))
    .option(
      '-v, --verbose',
      'also list the unsupported cases (and, off a terminal, each case as it runs)',
      false,
    )
    .option('--no-progress', 'no progress bar')
    .action(
      async (o: {
        backend: string;
        quick: boolean;
        full?: boolean;
        filter?: string;
        threads?: number;
        verbose: boolean;
        progress: boolean;
      }) => {
        exit.code = await verifyCommand({ ...o, quick: !o.full }, io);
      },
    );

  return program;
}

/**
 * Runs the command line `argv` (without node and the script) and returns the exit code. User errors
 * (bad flags, FlashAttentionError) are one line on stderr; anything else also says how to get the stack.
 */
export async function run(argv: string[], io: Io = processIo()): Promise<number> {
  const exit = { code: 0 };
  const program = createProgram(io, exit, argv);
  try {
    if (argv.length === 0) {
      program.outputHelp();
      return 0;
    }
    await program.parseAsync(argv, { from: 'user' });
    return exit.code;
  } catch (e) {
    if (e instanceof CommanderError) {
      // Commander has printed its one-line message (or the help / version) already.
      return e.exitCode === 0 ? 0 : 2;
    }
    if (isUserError(e)) {
      io.err(`flashattn: ${errorLine(e)}\n`);
      return (e as { exitCode?: number }).exitCode ?? 1;
    }
    io.err(`flashattn: internal error: ${errorLine(e)}\n`);
    if (process.env.FLASHATTN_DEBUG) io.err(`${(e as Error)?.stack ?? ''}\n`);
    else io.err('(set FLASHATTN_DEBUG=1 to see the stack trace)\n');
    return 1;
  }
}
