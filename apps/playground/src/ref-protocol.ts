/** Messages between the page and the reference worker (ref-worker.ts). */
import type { AttentionOptions, DType, HostTensor } from '@flashattn/core';

export type RefRequest =
  | {
      /** float64 reference of the forward (standard if it fits, else two-pass) and SPEC §8's bound. */
      kind: 'check';
      q: HostTensor;
      k: HostTensor;
      v: HostTensor;
      options: AttentionOptions;
      /**
       * When the standard reference does not fit, check only the last this-many query rows of each
       * sequence (exact for every mask: bottom-right alignment keeps each row's diagonal; not with
       * dropout, whose random stream is keyed by the row index). 0 = every row.
       */
      sampleRows?: number;
    }
  | {
      /** Time the standard, materialising algorithm (referenceForward64). */
      kind: 'standard';
      q: HostTensor;
      k: HostTensor;
      v: HostTensor;
      options: AttentionOptions;
    }
  | {
      /** Softmax probabilities P of one (batch, head), max-pooled to at most `maxCells` per side. */
      kind: 'probs';
      q: HostTensor;
      k: HostTensor;
      v: HostTensor;
      options: AttentionOptions;
      batch: number;
      head: number;
      maxCells: number;
    };

export type RefResponse =
  | {
      kind: 'check';
      /** 'standard' = referenceForward64, 'two-pass' = referenceForwardTwoPass (too big to materialise). */
      method: 'standard' | 'two-pass';
      /** The reference covers query rows [rowStart, seqQ) of each sequence: out is [b, seqQ - rowStart, hq, d]. */
      rowStart: number;
      out: Float64Array;
      lse: Float64Array;
      /** SPEC §8: 2·max|refLow − ref64| + floor; null when refLow (materialising) does not fit. */
      bound: number | null;
      floor: number;
      dtype: DType;
      ms: number;
    }
  | { kind: 'standard'; ms: number; matrixBytes: number }
  | { kind: 'probs'; rows: number; cols: number; sq: number; sk: number; data: Float32Array }
  | { kind: 'error'; code: string | null; message: string };

export type RefEnvelope<T> = { id: number } & T;
