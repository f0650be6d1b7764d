/** Element types. float16 and bfloat16 are stored as their bit patterns in a Uint16Array. */
export type DType = 'float32' | 'float16' | 'bfloat16';
export const DTYPES: readonly DType[] = ['float32', 'float16', 'bfloat16'];

/** 'bshd' = [batch, seq, heads, headDim] (flash_attn_func); 'bhsd' = [batch, heads, seq, headDim] (SDPA). */
export type Layout = 'bshd' | 'bhsd';

export interface HostTensor {
  dtype: DType;
  shape: readonly number[];
  data: Float32Array | Uint16Array;
}

/**
 * A tensor that lives on a backend's device (webgpu, cuda). Opaque outside its backend; the backend
 * that made it is named so that a tensor handed to the wrong backend is caught.
 */
export interface DeviceTensor {
  readonly kind: 'device';
  readonly backend: string;
  readonly dtype: DType;
  readonly shape: readonly number[];
}

export type Tensor = HostTensor | DeviceTensor;

export function isDeviceTensor(t: unknown): t is DeviceTensor {
  return typeof t === 'object' && t !== null && (t as DeviceTensor).kind === 'device';
}

export type Feature =
  | 'causal'
  | 'window'
  | 'softcap'
  | 'alibi'
  | 'bias'
  | 'dropout'
  | 'gqa'
  | 'varlen'
  | 'kvcache'
  | 'paged'
  | 'backward'
  | 'lse';

export const ALL_FEATURES: readonly Feature[] = [
  'causal',
  'window',
  'softcap',
  'alibi',
  'bias',
  'dropout',
  'gqa',
  'varlen',
  'kvcache',
  'paged',
  'backward',
  'lse',
];

export interface DropoutOptions {
  /** Probability of dropping an element, in [0, 1). */
  p: number;
  /** Non-negative integer below 2^53: key = (seed mod 2^32, floor(seed / 2^32)). */
  seed: number;
  /** Fourth Philox counter word, an integer in [0, 2^32); default 0. */
  offset?: number;
}

export interface AttentionOptions {
  layout?: Layout;
  /** Multiplies q·k; default 1/sqrt(headDim). */
  scale?: number;
  causal?: boolean;
  /** [left, right]; -1 = unbounded on that side. Default [-1, -1]. */
  window?: readonly [number, number] | [number, number];
  /** s = softcap * tanh(s / softcap) when > 0. */
  softcap?: number;
  /** [hq] or [batch * hq]; adds -slope * |i + off - j|. */
  alibiSlopes?: Float32Array;
  /** Additive, broadcastable to [batch, hq, sq, sk]. */
  bias?: Tensor;
  /** [batch]: keys j >= seqlensK[b] do not exist. */
  seqlensK?: Int32Array;
  /** Varlen: [batch + 1] prefix sums; q is [totalQ, hq, d]. */
  cuSeqlensQ?: Int32Array;
  /** Varlen: [batch + 1] prefix sums; k, v are [totalK, hk, d]. */
  cuSeqlensK?: Int32Array;
  /** Paged KV: [batch, maxPages] page indices; k, v are [pages, pageSize, hk, d]. */
  blockTable?: Int32Array;
  pageSize?: number;
  dropout?: DropoutOptions;
  returnLse?: boolean;
}

export interface Capabilities {
  dtypes: DType[];
  maxHeadDim: number;
  features: Feature[];
  /**
   * false where the backend was asked for its faster non-deterministic backward (an opt-in, SPEC §4):
   * gradients may then differ in their last bits from call to call. Absent or true: bit-identical.
   */
  deterministic?: boolean;
}

/** Host in, host out; device in, device out (SPEC §2). */
export type LseOf<T extends Tensor> = T extends DeviceTensor ? DeviceTensor : Float32Array;

export interface ForwardResult<T extends Tensor = HostTensor> {
  out: T;
  /** float32 log-sum-exp per query row: [batch, hq, sq], or [hq, totalQ] for varlen. */
  lse?: LseOf<T>;
}

export interface BackwardResult<T extends Tensor = HostTensor> {
  dq: T;
  dk: T;
  dv: T;
}

export interface Backend {
  readonly name: string;
  readonly capabilities: Capabilities;
  /** How the backend runs here, when that is worth telling (e.g. cpu: "2 worker threads", or why it is single-threaded). listBackends() shows it as `note`. */
  readonly info?: string;
  forward<T extends Tensor>(q: T, k: T, v: T, options?: AttentionOptions): Promise<ForwardResult<T>>;
  backward<T extends Tensor>(
    dout: T,
    q: T,
    k: T,
    v: T,
    out: T,
    lse: LseOf<T>,
    options?: AttentionOptions,
  ): Promise<BackwardResult<T>>;
  /** Device backends: copy a host tensor to the device. Host backends return the same tensor. */
  upload?(host: HostTensor): Promise<Tensor>;
  download?(t: Tensor): Promise<HostTensor>;
  free?(t: Tensor): void;
  dispose(): Promise<void>;
}

export type BackendFactory = () => Promise<Backend>;
