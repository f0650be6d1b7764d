/**
 * A small, honest float32 backend for the suite's own tests: a tiled online-softmax forward (key
 * blocks of BLOCK, running max and sum, rescale when the max grows) and a straightforward backward
 * that recomputes P from lse. It takes every feature through core's Problem helpers.
 *
 * `bugs` switches on one deliberate mistake each, as a real kernel might make them; broken.test.ts
 * proves the suite catches every one.
 */
import {
  ALL_FEATURES,
  type AttentionOptions,
  alibiSlope,
  type Backend,
  type BackwardResult,
  biasOffset,
  type Capabilities,
  DTYPES,
  dropoutKeep,
  type ForwardResult,
  fail,
  fromFloat32,
  type HostTensor,
  kvHead,
  kvOffset,
  type LseOf,
  lseIndex,
  modifyScore,
  type Problem,
  qOffset,
  resolveBackwardProblem,
  resolveProblem,
  roundToDType,
  seqLenK,
  seqLenQ,
  type Tensor,
  toFloat32,
} from '@flashattn/core';

export interface Bugs {
  /** Online softmax without the exp(m_old - m_new) rescale when a later block raises the max. */
  noRescale?: boolean;
  /** Causal mask one key too generous: j <= i + off + 1. */
  causalOffByOne?: boolean;
  /** Philox counter words 0 and 1 swapped: (i, j, ...) instead of (j, i, ...). */
  dropoutSwapped?: boolean;
  /** GQA key head h % hk instead of h / (hq / hk). */
  gqaModulo?: boolean;
  /** lse returned with this constant added. */
  lseShift?: number;
  /** out = acc / l without the l = 0 guard: NaN on a fully masked row. */
  nanMaskedRow?: boolean;
}

export interface SimpleOptions {
  /** Dot products summed in this many interleaved partial sums (as SIMD lanes do); default 1. */
  lanes?: number;
}

const BLOCK = 16;
const f = Math.fround;

interface Decoded {
  q: Float32Array;
  k: Float32Array;
  v: Float32Array;
  bias: Float32Array | null;
}

function decode(p: Problem, q: HostTensor, k: HostTensor, v: HostTensor): Decoded {
  return {
    q: toFloat32(q),
    k: toFloat32(k),
    v: toFloat32(v),
    bias: p.bias ? toFloat32(p.bias.tensor as HostTensor) : null,
  };
}

function keyRange(p: Problem, bugs: Bugs, i: number, sq: number, sk: number): [number, number] {
  const diag = i + sk - sq;
  let lo = 0;
  let hi = sk;
  if (p.causal) hi = Math.min(hi, diag + 1 + (bugs.causalOffByOne ? 1 : 0));
  if (p.windowRight >= 0) hi = Math.min(hi, diag + p.windowRight + 1);
  if (p.windowLeft >= 0) lo = Math.max(lo, diag - p.windowLeft);
  return [lo, Math.max(lo, hi)];
}

function keyHead(p: Problem, bugs: Bugs, h: number): number {
  return bugs.gqaModulo ? h % p.headsK : kvHead(p, h);
}

/** Raw scaled dot product in float32, then the score modifiers (softcap, ALiBi, bias). */
let LANES = 1;
const partial = new Float32Array(64);

function scoreOf(
  p: Problem,
  x: Decoded,
  b: number,
  h: number,
  i: number,
  j: number,
  hk: number,
  off: number,
): { s: number; raw: number } {
  const qo = qOffset(p, b, i, h);
  const ko = kvOffset(p, b, j, hk);
  let dot = 0;
  if (LANES === 1) {
    for (let c = 0; c < p.headDim; c++) dot = f(dot + f(x.q[qo + c] * x.k[ko + c]));
  } else {
    partial.fill(0, 0, LANES);
    for (let c = 0; c < p.headDim; c++)
      partial[c % LANES] = f(partial[c % LANES] + f(x.q[qo + c] * x.k[ko + c]));
    for (let w = LANES; w > 1; w >>= 1)
      for (let t = 0; t < w / 2; t++) partial[t] = f(partial[t] + partial[t + w / 2]);
    dot = partial[0];
  }
  const raw = f(dot * p.scale);
  let s = f(modifyScore(raw, p.softcap, alibiSlope(p, b, h), i, j, off));
  if (x.bias) s = f(s + x.bias[biasOffset(p, b, h, i, j)]);
  return { s, raw };
}

function dropWeight(p: Problem, bugs: Bugs, b: number, h: number, i: number, j: number): number {
  const d = p.dropout;
  if (!d) return 1;
  const bh = b * p.headsQ + h;
  const keep = bugs.dropoutSwapped
    ? dropoutKeep(d.key0, d.key1, i, j, bh, d.offset, d.p)
    : dropoutKeep(d.key0, d.key1, j, i, bh, d.offset, d.p);
  return keep ? d.keepScale : 0;
}

function forwardF32(p: Problem, x: Decoded, bugs: Bugs): { out: Float32Array; lse: Float32Array } {
  const d = p.headDim;
  const out = new Float32Array(p.outShape.reduce((a, b) => a * b, 1));
  const lse = new Float32Array(p.lseLength);
  const acc = new Float32Array(d);
  const scores = new Float32Array(BLOCK);
  const pRound = new Float32Array(1);
  for (let b = 0; b < p.batch; b++) {
    const sq = seqLenQ(p, b);
    const sk = seqLenK(p, b);
    const off = sk - sq;
    for (let h = 0; h < p.headsQ; h++) {
      const hk = keyHead(p, bugs, h);
      for (let i = 0; i < sq; i++) {
        let m = Number.NEGATIVE_INFINITY;
        let l = 0;
        acc.fill(0);
        const [lo, hi] = keyRange(p, bugs, i, sq, sk);
        for (let j0 = lo; j0 < hi; j0 += BLOCK) {
          const n = Math.min(BLOCK, hi - j0);
          let blockMax = Number.NEGATIVE_INFINITY;
          for (let t = 0; t < n; t++) {
            const s = scoreOf(p, x, b, h, i, j0 + t, hk, off).s;
            scores[t] = s;
            if (s > blockMax || Number.isNaN(s)) blockMax = s;
          }
          if (blockMax === Number.NEGATIVE_INFINITY) continue;
          if (blockMax > m || Number.isNaN(blockMax)) {
            if (!bugs.noRescale && m !== Number.NEGATIVE_INFINITY) {
              const alpha = f(Math.exp(m - blockMax));
              l = f(l * alpha);
              for (let c = 0; c < d; c++) acc[c] = f(acc[c] * alpha);
            }
            m = blockMax;
          }
          for (let t = 0; t < n; t++) {
            const e = f(Math.exp(scores[t] - m));
            if (e === 0) continue;
            l = f(l + e);
            // A 16-bit kernel rounds P to the dtype before the P·V product.
            pRound[0] = f(e * dropWeight(p, bugs, b, h, i, j0 + t));
            const w = roundToDType(pRound, p.dtype)[0];
            if (w === 0) continue;
            const vo = kvOffset(p, b, j0 + t, hk);
            for (let c = 0; c < d; c++) acc[c] = f(acc[c] + f(w * x.v[vo + c]));
          }
        }
        const oo = qOffset(p, b, i, h);
        if (l === 0 && !bugs.nanMaskedRow) {
          for (let c = 0; c < d; c++) out[oo + c] = 0;
          lse[lseIndex(p, b, h, i)] = Number.NEGATIVE_INFINITY;
          continue;
        }
        for (let c = 0; c < d; c++) out[oo + c] = f(acc[c] / l);
        lse[lseIndex(p, b, h, i)] = f(f(m + Math.log(l)) + (bugs.lseShift ?? 0));
      }
    }
  }
  return { out, lse };
}

function backwardF32(
  p: Problem,
  x: Decoded,
  dO: Float32Array,
  o: Float32Array,
  lse: Float32Array,
  bugs: Bugs,
): { dq: Float32Array; dk: Float32Array; dv: Float32Array } {
  const d = p.headDim;
  const dq = new Float32Array(x.q.length);
  const dk = new Float32Array(x.k.length);
  const dv = new Float32Array(x.v.length);
  for (let b = 0; b < p.batch; b++) {
    const sq = seqLenQ(p, b);
    const sk = seqLenK(p, b);
    const off = sk - sq;
    for (let h = 0; h < p.headsQ; h++) {
      const hk = keyHead(p, bugs, h);
      for (let i = 0; i < sq; i++) {
        const L = lse[lseIndex(p, b, h, i)];
        if (L === Number.NEGATIVE_INFINITY) continue;
        const qo = qOffset(p, b, i, h);
        let D = 0;
        for (let c = 0; c < d; c++) D = f(D + f(dO[qo + c] * o[qo + c]));
        const [lo, hi] = keyRange(p, bugs, i, sq, sk);
        for (let j = lo; j < hi; j++) {
          const { s, raw } = scoreOf(p, x, b, h, i, j, hk, off);
          const pij = f(Math.exp(s - L));
          if (pij === 0) continue;
          const ko = kvOffset(p, b, j, hk);
          const w = dropWeight(p, bugs, b, h, i, j);
          const pt = f(pij * w);
          if (pt !== 0) for (let c = 0; c < d; c++) dv[ko + c] = f(dv[ko + c] + f(pt * dO[qo + c]));
          let dp = 0;
          for (let c = 0; c < d; c++) dp = f(dp + f(dO[qo + c] * x.v[ko + c]));
          let ds = f(pij * f(f(dp * w) - D));
          if (p.softcap > 0) {
            const t = Math.tanh(raw / p.softcap);
            ds = f(ds * (1 - t * t));
          }
          const g = f(ds * p.scale);
          if (g === 0) continue;
          for (let c = 0; c < d; c++) {
            dq[qo + c] = f(dq[qo + c] + f(g * x.k[ko + c]));
            dk[ko + c] = f(dk[ko + c] + f(g * x.q[qo + c]));
          }
        }
      }
    }
  }
  return { dq, dk, dv };
}

export function createSimpleBackend(
  bugs: Bugs = {},
  name = 'simple-f32',
  opts: SimpleOptions = {},
  caps?: Capabilities,
): Backend {
  const lanes = opts.lanes ?? 1;
  const capabilities: Capabilities = caps ?? {
    dtypes: [...DTYPES],
    maxHeadDim: 256,
    features: [...ALL_FEATURES],
  };
  const ctx = { capabilities, backend: name };
  let disposed = false;
  const alive = () => {
    if (disposed) fail('DISPOSED', `${name} was disposed`);
  };
  return {
    name,
    capabilities,
    async forward<T extends Tensor>(
      q: T,
      k: T,
      v: T,
      options: AttentionOptions = {},
    ): Promise<ForwardResult<T>> {
      alive();
      LANES = lanes;
      const p = resolveProblem(q, k, v, options, ctx);
      const r = forwardF32(p, decode(p, q as HostTensor, k as HostTensor, v as HostTensor), bugs);
      const result: ForwardResult<HostTensor> = { out: fromFloat32(r.out, p.dtype, p.outShape) };
      if (p.returnLse) result.lse = r.lse;
      return result as unknown as ForwardResult<T>;
    },
    async backward<T extends Tensor>(
      dout: T,
      q: T,
      k: T,
      v: T,
      out: T,
      lse: LseOf<T>,
      options: AttentionOptions = {},
    ): Promise<BackwardResult<T>> {
      alive();
      LANES = lanes;
      const p = resolveBackwardProblem(dout, q, k, v, out, lse as Float32Array, options, ctx);
      const x = decode(p, q as HostTensor, k as HostTensor, v as HostTensor);
      const g = backwardF32(
        p,
        x,
        toFloat32(dout as HostTensor),
        toFloat32(out as HostTensor),
        lse as Float32Array,
        bugs,
      );
      return {
        dq: fromFloat32(g.dq, p.dtype, q.shape),
        dk: fromFloat32(g.dk, p.dtype, k.shape),
        dv: fromFloat32(g.dv, p.dtype, v.shape),
      } as unknown as BackwardResult<T>;
    },
    async dispose() {
      disposed = true;
    },
  };
}
