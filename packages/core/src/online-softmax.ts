/**
 * Online softmax (Milakov & Gimelshein; FlashAttention §3.1) for one query row.
 *
 * The row keeps a running max m, a running sum l = Σ exp(s_j - m) and an unnormalised output
 * acc = Σ exp(s_j - m)·w_j·v_j. A new block of scores with a larger max rescales both by
 * exp(m_old - m_new); the division by l happens once, at the end (FlashAttention-2's deferral).
 * Dropout weights w_j multiply acc only: l is the softmax normaliser of the undropped P.
 */

export interface RowState {
  m: number;
  l: number;
  acc: Float64Array | Float32Array;
}

export function newRowState(headDim: number, precision: 'float64' | 'float32' = 'float64'): RowState {
  return {
    m: Number.NEGATIVE_INFINITY,
    l: 0,
    acc: precision === 'float64' ? new Float64Array(headDim) : new Float32Array(headDim),
  };
}

export function resetRowState(state: RowState): void {
  state.m = Number.NEGATIVE_INFINITY;
  state.l = 0;
  state.acc.fill(0);
}

/** Multiply l and acc by exp(m - newMax) and move m to newMax. newMax must be >= m. */
export function rescaleRow(state: RowState, newMax: number): void {
  if (newMax === state.m) return;
  // From -Infinity nothing has been accumulated yet: alpha would be exp(-Inf) = 0, which is right,
  // but exp(-Inf - -Inf) is NaN when both are -Inf, so that case is returned above.
  const alpha = Math.exp(state.m - newMax);
  state.l *= alpha;
  const acc = state.acc;
  for (let c = 0; c < acc.length; c++) acc[c] *= alpha;
  state.m = newMax;
}

/**
 * Fold a block of `count` scores into the row. Masked keys carry -Infinity. values holds the block's
 * value rows: row t starts at valueOffset(t). weights (optional) are the dropout factors keep/(1-p).
 */
export function updateRow(
  state: RowState,
  scores: ArrayLike<number>,
  count: number,
  values: ArrayLike<number>,
  valueOffset: (t: number) => number,
  weights?: ArrayLike<number>,
): void {
  let blockMax = Number.NEGATIVE_INFINITY;
  for (let t = 0; t < count; t++) {
    const s = scores[t];
    // NaN must win the max so that it spreads, as in the reference.
    if (s > blockMax || Number.isNaN(s)) blockMax = s;
  }
  if (blockMax === Number.NEGATIVE_INFINITY) return; // every key masked: nothing to add
  if (blockMax > state.m || Number.isNaN(blockMax)) rescaleRow(state, blockMax);
  const m = state.m;
  const acc = state.acc;
  const d = acc.length;
  for (let t = 0; t < count; t++) {
    const e = Math.exp(scores[t] - m);
    if (e === 0) continue;
    state.l += e;
    const w = weights ? e * weights[t] : e;
    if (w === 0) continue;
    const base = valueOffset(t);
    for (let c = 0; c < d; c++) acc[c] += w * values[base + c];
  }
}

/**
 * out = acc / l and lse = m + ln(l). A row that saw no key (l = 0) gives out = 0 and lse = -Infinity,
 * never NaN.
 */
export function finalizeRow(state: RowState, out: Float32Array | Float64Array, outOffset: number): number {
  const d = state.acc.length;
  if (state.l === 0) {
    for (let c = 0; c < d; c++) out[outOffset + c] = 0;
    return Number.NEGATIVE_INFINITY;
  }
  const inv = 1 / state.l;
  for (let c = 0; c < d; c++) out[outOffset + c] = state.acc[c] * inv;
  return state.m + Math.log(state.l);
}

/**
 * Combine two normalised partial results over disjoint key sets (split-KV, or several devices):
 * lse = ln(e^lseA + e^lseB), out = e^(lseA-lse)·outA + e^(lseB-lse)·outB. Writes into outA.
 * Returns the merged lse. Either side may be empty (lse = -Infinity).
 */
export function mergeLse(
  outA: Float32Array | Float64Array,
  offsetA: number,
  lseA: number,
  outB: ArrayLike<number>,
  offsetB: number,
  lseB: number,
  headDim: number,
): number {
  const max = Math.max(lseA, lseB);
  if (max === Number.NEGATIVE_INFINITY) {
    for (let c = 0; c < headDim; c++) outA[offsetA + c] = 0;
    return max;
  }
  const wa = Math.exp(lseA - max);
  const wb = Math.exp(lseB - max);
  const sum = wa + wb;
  const lse = max + Math.log(sum);
  const fa = wa / sum;
  const fb = wb / sum;
  for (let c = 0; c < headDim; c++) {
    // 0·x is skipped so that an empty side's garbage (or -Inf lse with zero out) cannot inject NaN.
    const a = fa === 0 ? 0 : fa * outA[offsetA + c];
    const b = fb === 0 ? 0 : fb * outB[offsetB + c];
    outA[offsetA + c] = a + b;
  }
  return lse;
}
