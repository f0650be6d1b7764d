/** The error codes of SPEC §6. Every bad input is reported with one of these, before any work. */
export type ErrorCode =
  | 'INVALID_SHAPE'
  | 'SHAPE_MISMATCH'
  | 'INVALID_DTYPE'
  | 'DTYPE_MISMATCH'
  | 'HEADS_NOT_DIVISIBLE'
  | 'HEAD_DIM_UNSUPPORTED'
  | 'INVALID_OPTION'
  | 'UNSUPPORTED_FEATURE'
  | 'BACKEND_UNAVAILABLE'
  | 'OUT_OF_MEMORY'
  | 'DEVICE_LOST'
  | 'DISPOSED';

export const ERROR_CODES: readonly ErrorCode[] = [
  'INVALID_SHAPE',
  'SHAPE_MISMATCH',
  'INVALID_DTYPE',
  'DTYPE_MISMATCH',
  'HEADS_NOT_DIVISIBLE',
  'HEAD_DIM_UNSUPPORTED',
  'INVALID_OPTION',
  'UNSUPPORTED_FEATURE',
  'BACKEND_UNAVAILABLE',
  'OUT_OF_MEMORY',
  'DEVICE_LOST',
  'DISPOSED',
];

export class FlashAttentionError extends Error {
  readonly code: ErrorCode;
  constructor(code: ErrorCode, message: string, options?: { cause?: unknown }) {
    super(`[${code}] ${message}`, options);
    this.name = 'FlashAttentionError';
    this.code = code;
  }
}

export function isFlashAttentionError(e: unknown): e is FlashAttentionError {
  return (
    e instanceof Error &&
    e.name === 'FlashAttentionError' &&
    typeof (e as { code?: unknown }).code === 'string'
  );
}

/** Short, readable rendering of a value for error messages. */
export function describe(value: unknown): string {
  if (value === undefined) return 'undefined';
  if (value === null) return 'null';
  if (typeof value === 'number' || typeof value === 'boolean' || typeof value === 'bigint')
    return String(value);
  if (typeof value === 'string') return JSON.stringify(value);
  if (Array.isArray(value))
    return `[${value.slice(0, 8).map(describe).join(', ')}${value.length > 8 ? ', …' : ''}]`;
  if (ArrayBuffer.isView(value))
    return `${value.constructor.name}(${(value as unknown as { length: number }).length})`;
  if (typeof value === 'function') return 'a function';
  return Object.prototype.toString.call(value).slice(8, -1);
}

export function fail(code: ErrorCode, message: string): never {
  throw new FlashAttentionError(code, message);
}
