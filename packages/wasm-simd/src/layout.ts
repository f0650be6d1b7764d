/**
 * The memory layout shared with assembly/index.ts: where the parameter block and the work counter
 * live, and what each i32 slot of the parameter block holds. Keep the two files in step.
 */
export const COUNTER = 512;
export const PARAMS = 1024;
/** First byte the JS side allocates from (everything below is the fixed area above). */
export const HEAP_BASE = 65536;
export const PAGE = 65536;
/** wasm32: 65536 pages of 64 KiB. */
export const MAX_PAGES = 65536;

export enum Slot {
  DTYPE = 0,
  BATCH = 1,
  SEQQ = 2,
  SEQK = 3,
  HQ = 4,
  HK = 5,
  D = 6,
  DP = 7,
  GROUP = 8,
  CAUSAL = 9,
  WL = 10,
  WR = 11,
  SCALE = 12,
  SOFTCAP = 13,
  ALIBI = 14,
  BIAS = 15,
  BIASDT = 16,
  BSB = 17,
  BSH = 18,
  BSI = 19,
  BSJ = 20,
  SEQLENSK = 21,
  CUQ = 22,
  CUK = 23,
  BTABLE = 24,
  PAGESIZE = 25,
  MAXPAGES = 26,
  DROP = 27,
  KEY0 = 28,
  KEY1 = 29,
  DROPOFF = 30,
  KEEPSCALE = 31,
  Q = 32,
  K = 33,
  V = 34,
  OUT = 35,
  M = 36,
  L = 37,
  QSS = 38,
  QSH = 39,
  QSB = 40,
  KSS = 41,
  KSH = 42,
  KSB = 43,
  TOTALQ = 44,
  ITEMS = 45,
  NITEMS = 46,
  BR = 47,
  BC = 48,
  SCRATCH = 49,
  SCRATCHBYTES = 50,
  DO = 51,
  DQWS = 52,
  DKWS = 53,
  DVWS = 54,
  LSE = 55,
  DD = 56,
  NCHUNK = 57,
  DQCHUNK = 58,
  KPACK = 59,
  VPACK = 60,
  KBOFF = 61,
}
/** Index of the float64 slot holding p·2^32 (dropout threshold), in float64 units from PARAMS. */
export const PTHRESH_F64 = 40;

export const DTYPE_CODE = { float32: 0, float16: 1, bfloat16: 2 } as const;
