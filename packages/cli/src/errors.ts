/**
 * How the command reports problems: a user error (a bad flag, a backend that is not there, a
 * FlashAttentionError from a backend) is one line on stderr and a non-zero exit, never a stack trace.
 */
import { isFlashAttentionError } from '@flashattn/core';

/** A mistake in how the command was called: printed as one line, exit code 2 (usage) or 1. */
export class CliError extends Error {
  readonly exitCode: number;
  constructor(message: string, exitCode = 1) {
    super(message);
    this.name = 'CliError';
    this.exitCode = exitCode;
  }
}

/** The one line printed for an error (without the `flashattn: ` prefix). */
export function errorLine(e: unknown): string {
  // FlashAttentionError messages already start with "[CODE] ".
  if (isFlashAttentionError(e)) return e.message;
  if (e instanceof CliError) return e.message;
  if (e instanceof Error) return `${e.name === 'Error' ? '' : `${e.name}: `}${e.message}`;
  return String(e);
}

/** Whether an error is the user's (reported in one line) rather than a bug in the command. */
export function isUserError(e: unknown): boolean {
  return isFlashAttentionError(e) || e instanceof CliError;
}

/** A short message for any thrown value, for table cells and JSON. */
export function shortMessage(e: unknown, max = 200): string {
  const line = errorLine(e).split('\n')[0];
  return line.length > max ? `${line.slice(0, max - 1)}…` : line;
}
