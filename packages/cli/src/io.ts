/** Where the command writes: process streams in the bin, buffers in tests. */
export interface Io {
  out(text: string): void;
  err(text: string): void;
  /** Whether stderr is an interactive terminal (the progress bar is drawn only then). */
  errIsTTY: boolean;
  /** The stream the progress bar draws on (stderr). */
  errStream?: NodeJS.WriteStream;
}

export function processIo(): Io {
  return {
    out: (t) => process.stdout.write(t),
    err: (t) => process.stderr.write(t),
    errIsTTY: Boolean(process.stderr.isTTY),
    errStream: process.stderr,
  };
}

/** An Io that keeps everything, for tests and programmatic use. */
export function bufferIo(): Io & { stdout: () => string; stderr: () => string } {
  let o = '';
  let e = '';
  return {
    out: (t) => {
      o += t;
    },
    err: (t) => {
      e += t;
    },
    errIsTTY: false,
    stdout: () => o,
    stderr: () => e,
  };
}
