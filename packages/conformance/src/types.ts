import type {
  AttentionOptions,
  Backend,
  DType,
  ErrorCode,
  Feature,
  HostTensor,
  Layout,
} from '@flashattn/core';

/**
 * One attention problem, as data: the sizes, the options and how to fill the tensors. makeInputs turns
 * it into HostTensors and AttentionOptions, deterministically from `seed`.
 */
export interface ProblemSpec {
  batch: number;
  /** Query rows per sequence (ignored with varlen, which gives its own lengths). */
  sq: number;
  /** Key rows per sequence (with paged KV: the longest sequence; pages hold ceil(sk / pageSize) each). */
  sk: number;
  hq: number;
  hk: number;
  d: number;
  dtype: DType;
  layout?: Layout;
  scale?: number;
  causal?: boolean;
  window?: [number, number];
  softcap?: number;
  /** 'heads': slopes [hq]; 'batch': slopes [b*hq]. */
  alibi?: 'heads' | 'batch';
  /**
   * An additive bias of this shape (right-aligned broadcast to [b, hq, sq, sk]), N(0, 1) values.
   * maskTail: the last maskTail keys get -Infinity (a key padding mask; needs sk as the last dim).
   * maskBatch: every key of this batch index gets -Infinity (rows masked by the bias alone; needs b as dim 0 of 4).
   */
  bias?: { shape: number[]; maskTail?: number; maskBatch?: number };
  /** Key padding / KV cache lengths, [b]. */
  seqlensK?: number[];
  /** Varlen: per-sequence query and key lengths (batch = their count). */
  varlen?: { q: number[]; k: number[] };
  /**
   * Paged KV: pages of pageSize keys, shuffled, with extraPages unused pages of finite junk.
   * padTable: table entries past the pages a sequence reaches are -1 (only reached pages must be valid).
   */
  paged?: { pageSize: number; extraPages?: number; padTable?: boolean };
  dropout?: { p: number; seed: number; offset?: number };
  /** Ask for lse: 'always' (needs the 'lse' feature), 'if-supported' (default), 'never'. */
  lse?: 'always' | 'if-supported' | 'never';
  /** Standard deviation of the q and k entries (default 1). */
  magnitude?: number;
  /** Put a NaN at one element: tensor, batch, position, head, channel (bshd/bhsd, not varlen). */
  nan?: { tensor: 'q' | 'k' | 'v'; b: number; s: number; h: number; c: number };
  /** Fill q with zeros and v with a one-hot per key (v[j][c] = c === j): out then shows P~ itself. */
  identityV?: boolean;
  seed: number;
}

export type CaseKind =
  | 'forward'
  | 'backward'
  | 'error'
  | 'dropout-stats'
  | 'concurrency'
  | 'device'
  | 'disposed'
  | 'unsupported-features'
  | 'immutability';

/** The mutable bundle an error case edits before the call. */
export interface ErrorInputs {
  q: HostTensor;
  k: HostTensor;
  v: HostTensor;
  dout: HostTensor;
  out: HostTensor;
  lse: Float32Array;
  options: AttentionOptions & Record<string, unknown>;
}

export interface ErrorCaseSpec {
  /** The code the backend must throw (a FlashAttentionError, before any work). */
  expect: ErrorCode;
  call: 'forward' | 'backward';
  /** A valid problem that mutate() breaks. */
  base: ProblemSpec;
  mutate: (x: ErrorInputs) => void;
  /** Features or dtypes the broken input touches: a backend lacking them may answer UNSUPPORTED_FEATURE. */
  features?: Feature[];
  dtypes?: DType[];
  /** The message should name this (case-insensitive): the argument that is wrong. */
  mentions?: string;
}

export interface ConformanceCase {
  /** Unique, readable: it is the vitest test name and the CLI's line. */
  name: string;
  kind: CaseKind;
  /** Short labels to pick cases by (features, dtype, 'masked', 'nan', 'large', 'random', ...). */
  tags: string[];
  /** forward, backward, dropout-stats, device, immutability. */
  spec?: ProblemSpec;
  /** error. */
  error?: ErrorCaseSpec;
  /** concurrency: the problems run in sequence, then all at once. */
  specs?: ProblemSpec[];
}

export type CaseStatus = 'pass' | 'fail' | 'unsupported';

export interface CaseResult {
  name: string;
  status: CaseStatus;
  /** Why it failed, why it is unsupported, or a note. */
  message?: string;
  /** The largest |x - ref64| of the closest-to-failing comparison, and its bound. */
  maxError?: number;
  bound?: number;
}

export interface RunContext {
  /** The backend's factory: the DISPOSED case makes (and disposes) a second instance with it. */
  factory?: () => Promise<Backend>;
}
