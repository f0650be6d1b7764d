// The generic kernels: CUDA cores, float32 arithmetic, any dtype (float32, float16, bfloat16), any head
// dim 1..256 and every feature of SPEC §3/§4. They serve float32 inputs, head dims the tensor-core
// kernels do not take, the split-KV decode path (short queries against long K/V, GQA rows packed so
// that K/V are read once per key head) and the backward of head dims above 128.
//
// Included once per element type by generic_{f32,f16,bf16}.cu, which instantiate the launchers.
#pragma once
#include "combine.cuh"
#include "device_common.cuh"
#include "launch.h"

namespace fa {

constexpr int GEN_THREADS = 128;
constexpr int GEN_BR = 16;  // packed (query, head) rows per forward CTA, 4 per warp
constexpr int GEN_BC = 32;  // keys per tile: one per lane
constexpr int GEN_BRB = 32; // query rows per backward tile, 8 per warp

template <typename T> struct Vec {
  static constexpr int W = 16 / sizeof(T);  // elements per 16-byte chunk
};

// Loads up to 8 elements (NE) of T at p into floats. NE*sizeof(T) is 4, 8, 16 or 32 bytes.
template <typename T, int NE> FA_DEV void load_f(const T* p, float* out) {
  if constexpr (NE * sizeof(T) == 32) {
    const uint4 a = reinterpret_cast<const uint4*>(p)[0];
    const uint4 b = reinterpret_cast<const uint4*>(p)[1];
    const T* ta = reinterpret_cast<const T*>(&a);
    const T* tb = reinterpret_cast<const T*>(&b);
#pragma unroll
    for (int e = 0; e < NE / 2; e++) out[e] = to_f(ta[e]);
#pragma unroll
    for (int e = 0; e < NE / 2; e++) out[NE / 2 + e] = to_f(tb[e]);
  } else if constexpr (NE * sizeof(T) == 16) {
    const uint4 a = *reinterpret_cast<const uint4*>(p);
    const T* ta = reinterpret_cast<const T*>(&a);
#pragma unroll
    for (int e = 0; e < NE; e++) out[e] = to_f(ta[e]);
  } else if constexpr (NE * sizeof(T) == 8) {
    const uint2 a = *reinterpret_cast<const uint2*>(p);
    const T* ta = reinterpret_cast<const T*>(&a);
#pragma unroll
    for (int e = 0; e < NE; e++) out[e] = to_f(ta[e]);
  } else {
    static_assert(NE * sizeof(T) == 4, "unsupported vector width");
    const uint32_t a = *reinterpret_cast<const uint32_t*>(p);
    const T* ta = reinterpret_cast<const T*>(&a);
#pragma unroll
    for (int e = 0; e < NE; e++) out[e] = to_f(ta[e]);
  }
}

// Copies `nrows` rows of `d` elements into a shared tile [rows][stride] of T; rows >= valid_rows and
// columns >= d become 0. row_ptr(r) gives the global address of row r. vec: d and every row address
// allow 16-byte cp.async; otherwise scalar loads. Commits one cp.async group either way.
template <typename T, int DP, typename RowPtr>
FA_DEV void load_rows(T* dst, int stride, int nrows, int valid_rows, int d, bool vec, RowPtr row_ptr,
                      const T* any_valid) {
  constexpr int W = Vec<T>::W;
  if (vec) {
    const int cpr = (d + W - 1) / W;  // chunks per row holding data
    constexpr int CPR = DP / W;       // chunks per padded row
    for (int idx = threadIdx.x; idx < nrows * CPR; idx += blockDim.x) {
      const int r = idx / CPR, c = idx % CPR;
      const bool ok = r < valid_rows && c < cpr;
      const T* src = ok ? row_ptr(r) + c * W : any_valid;
      cp_async16(dst + r * stride + c * W, src, ok ? 16 : 0);
    }
  } else {
    for (int idx = threadIdx.x; idx < nrows * DP; idx += blockDim.x) {
      const int r = idx / DP, c = idx % DP;
      dst[r * stride + c] = (r < valid_rows && c < d) ? row_ptr(r)[c] : from_f<T>(0.f);
    }
  }
  cp_async_commit();
}

// ------------------------------------------------------------------------------------------------
// Forward. grid.x = (b * hk) * num_rblocks, grid.y = splits. A CTA takes GEN_BR packed rows
// r = i * group + hh of key head hkv (query head hkv * group + hh), and one split of their key range.

// DEC: the decode variant (few valid rows per CTA): skips empty row slots and unrolls the key loops.
// The other variant keeps plain loops, which measured faster on full tiles (PERF.md, runs 1-3).
template <typename T, int NC, bool DEC>
__global__ void __launch_bounds__(GEN_THREADS) gen_fwd_kernel(AttnParams p, int num_rblocks, int vec) {
  constexpr int DP = 32 * NC;
  constexpr int W = Vec<T>::W;
  constexpr int KS = DP + W;  // padded smem row, 16-byte aligned
  constexpr int RPW = GEN_BR / 4;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  float* Qs = reinterpret_cast<float*>(smem_raw);  // [BR][DP]
  float* Ps = Qs + GEN_BR * DP;                     // [BR][BC]
  T* Ks = reinterpret_cast<T*>(Ps + GEN_BR * GEN_BC);  // [2][BC][KS]
  T* Vs = Ks + 2 * GEN_BC * KS;                         // [2][BC][KS]

  const int rb = blockIdx.x % num_rblocks;
  const int bhk = blockIdx.x / num_rblocks;
  const int b = bhk / p.hk, hkv = bhk % p.hk;
  const int split = blockIdx.y, S = gridDim.y;
  const int sq = seqlen_q(p, b), sk = seqlen_k(p, b);
  const int G = p.group, d = p.d;
  const int R = sq * G;
  const int r0 = rb * GEN_BR;
  if (r0 >= R) return;
  const int off = sk - sq;
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;

  // Key span of the CTA's rows (lo and hi are monotone in i).
  int lo_c, hi_c, lo_t, hi_t;
  key_range(p, r0 / G, sq, sk, lo_c, hi_t);
  key_range(p, (min(r0 + GEN_BR, R) - 1) / G, sq, sk, lo_t, hi_c);
  if (hi_c < lo_c) hi_c = lo_c;
  const int ntiles = (hi_c - lo_c + GEN_BC - 1) / GEN_BC;
  const int per = (ntiles + S - 1) / S;
  const int t0 = min(ntiles, split * per), t1 = min(ntiles, t0 + per);

  // Q rows, converted to float.
  for (int idx = tid; idx < GEN_BR * DP; idx += GEN_THREADS) {
    const int rr = idx / DP, c = idx % DP, r = r0 + rr;
    float x = 0.f;
    if (r < R && c < d) x = to_f(static_cast<const T*>(p.q)[q_off(p, b, r / G, hkv * G + r % G) + c]);
    Qs[idx] = x;
  }

  const T* kbase = static_cast<const T*>(p.k);
  const T* vbase = static_cast<const T*>(p.v);
  auto load_kv = [&](int t, int stage) {
    const int j0 = lo_c + t * GEN_BC;
    const int nvalid = min(GEN_BC, hi_c - j0);
    load_rows<T, DP>(Ks + stage * GEN_BC * KS, KS, GEN_BC, nvalid, d, vec,
                     [&](int r) { return kbase + kv_off(p, b, j0 + r, hkv); }, kbase);
    load_rows<T, DP>(Vs + stage * GEN_BC * KS, KS, GEN_BC, nvalid, d, vec,
                     [&](int r) { return vbase + kv_off(p, b, j0 + r, hkv); }, vbase);
  };

  float m[RPW], l[RPW], acc[RPW][NC];
  int ri[RPW], rh[RPW], rlo[RPW], rhi[RPW];
  bool rv[RPW];
#pragma unroll
  for (int k = 0; k < RPW; k++) {
    const int r = r0 + warp + 4 * k;
    rv[k] = r < R;
    ri[k] = rv[k] ? r / G : 0;
    rh[k] = hkv * G + (rv[k] ? r % G : 0);
    key_range(p, ri[k], sq, sk, rlo[k], rhi[k]);
    m[k] = -INFINITY;
    l[k] = 0.f;
#pragma unroll
    for (int e = 0; e < NC; e++) acc[k][e] = 0.f;
  }
  const int dl = (d + W - 1) / W * W;

  if (t0 < t1) load_kv(t0, 0);
  for (int t = t0; t < t1; t++) {
    const int stage = (t - t0) & 1;
    if (t + 1 < t1) {
      load_kv(t + 1, stage ^ 1);
      cp_async_wait<2>();
    } else {
      cp_async_wait<0>();
    }
    __syncthreads();
    const int j0 = lo_c + t * GEN_BC;
    const T* Kt = Ks + stage * GEN_BC * KS;
    const T* Vt = Vs + stage * GEN_BC * KS;
    // Scores: lane = key.
    float s[RPW];
#pragma unroll
    for (int k = 0; k < RPW; k++) s[k] = 0.f;
    const T* krow = Kt + lane * KS;
    if constexpr (DEC) {
#pragma unroll 2
      for (int c = 0; c < dl; c += W) {
        float kf[W];
        load_f<T, W>(krow + c, kf);
#pragma unroll
        for (int k = 0; k < RPW; k++) {
          if (!rv[k]) break;  // rows are valid in a prefix (k ascending); warp-uniform
          const float* qr = Qs + (warp + 4 * k) * DP + c;
#pragma unroll
          for (int e = 0; e < W; e++) s[k] = fmaf(qr[e], kf[e], s[k]);
        }
      }
    } else {
      for (int c = 0; c < dl; c += W) {
        float kf[W];
        load_f<T, W>(krow + c, kf);
#pragma unroll
        for (int k = 0; k < RPW; k++) {
          const float* qr = Qs + (warp + 4 * k) * DP + c;
#pragma unroll
          for (int e = 0; e < W; e++) s[k] = fmaf(qr[e], kf[e], s[k]);
        }
      }
    }
    const int j = j0 + lane;
    float alpha[RPW];
#pragma unroll
    for (int k = 0; k < RPW; k++) {
      alpha[k] = 1.f;
      if (!rv[k]) continue;  // warp-uniform
      float x = -INFINITY;
      if (j >= rlo[k] && j < rhi[k]) x = modify_score(p, s[k] * p.scale, b, rh[k], ri[k], j, off);
      const float mn = max_nan(m[k], warp_max(x));
      const float mu = mn == -INFINITY ? 0.f : mn;
      const float pij = expf(x - mu);
      alpha[k] = expf(m[k] - mu);
      l[k] = l[k] * alpha[k] + warp_sum(pij);
      m[k] = mn;
      float pd = pij;
      if (p.has_dropout && x != -INFINITY) pd *= drop_weight(p, b, rh[k], ri[k], j);
      Ps[(warp + 4 * k) * GEN_BC + lane] = pd;
    }
    __syncwarp();
    // O += P V: lane owns columns [lane*NC, lane*NC + NC).
#pragma unroll
    for (int k = 0; k < RPW; k++)
#pragma unroll
      for (int e = 0; e < NC; e++) acc[k][e] *= alpha[k];
    const int jn = min(GEN_BC, hi_c - j0);
    if constexpr (DEC) {
#pragma unroll 4
      for (int jj = 0; jj < jn; jj++) {
        float vf[NC];
        load_f<T, NC>(Vt + jj * KS + lane * NC, vf);
#pragma unroll
        for (int k = 0; k < RPW; k++) {
          if (!rv[k]) break;  // warp-uniform
          const float pv = Ps[(warp + 4 * k) * GEN_BC + jj];
          if (pv != 0.f) {
#pragma unroll
            for (int e = 0; e < NC; e++) acc[k][e] = fmaf(pv, vf[e], acc[k][e]);
          }
        }
      }
    } else {
      for (int jj = 0; jj < jn; jj++) {
        float vf[NC];
        load_f<T, NC>(Vt + jj * KS + lane * NC, vf);
#pragma unroll
        for (int k = 0; k < RPW; k++) {
          const float pv = Ps[(warp + 4 * k) * GEN_BC + jj];
          if (rv[k] && pv != 0.f) {
#pragma unroll
            for (int e = 0; e < NC; e++) acc[k][e] = fmaf(pv, vf[e], acc[k][e]);
          }
        }
      }
    }
    __syncthreads();
  }

  // Epilogue: normalised output and lse, or a split's partial.
#pragma unroll
  for (int k = 0; k < RPW; k++) {
    if (!rv[k]) continue;
    const float inv = l[k] == 0.f ? 0.f : 1.f / l[k];
    const float lse = l[k] == 0.f ? -INFINITY : m[k] + logf(l[k]);
    const long long li = lse_idx(p, b, rh[k], ri[k]);
    if (S == 1) {
      T* o = static_cast<T*>(p.out) + q_off(p, b, ri[k], rh[k]);
#pragma unroll
      for (int e = 0; e < NC; e++) {
        const int c = lane * NC + e;
        if (c < d) o[c] = from_f<T>(acc[k][e] * inv);
      }
      if (lane == 0 && p.lse) p.lse[li] = lse;
    } else {
      const long long rows = p.cu_q ? (long long)p.hq * p.total_q : (long long)p.batch * p.hq * p.seq_q;
      float* o = p.o_part + ((long long)split * rows + li) * d;
#pragma unroll
      for (int e = 0; e < NC; e++) {
        const int c = lane * NC + e;
        if (c < d) o[c] = acc[k][e] * inv;
      }
      if (lane == 0) p.lse_part[(long long)split * rows + li] = lse;
    }
  }
}

// ------------------------------------------------------------------------------------------------
// Backward helpers.

// D_i = dO_i . O_i (O as stored), laid out like lse. One warp per (b, h, i).
template <typename T>
__global__ void __launch_bounds__(128) dsum_kernel(AttnParams p) {
  const long long warp = ((long long)blockIdx.x * blockDim.x + threadIdx.x) >> 5;
  const int lane = threadIdx.x & 31;
  const long long nrows = (long long)p.batch * p.hq * p.seq_q;
  if (warp >= nrows) return;
  const int i = warp % p.seq_q, h = (warp / p.seq_q) % p.hq, b = warp / ((long long)p.seq_q * p.hq);
  if (i >= seqlen_q(p, b)) return;
  const long long o = q_off(p, b, i, h);
  const T* dO = static_cast<const T*>(p.dout) + o;
  const T* O = static_cast<const T*>(p.out) + o;
  float x = 0.f;
  for (int c = lane; c < p.d; c += 32) x = fmaf(to_f(dO[c]), to_f(O[c]), x);
  x = warp_sum(x);
  if (lane == 0) p.dsum[lse_idx(p, b, h, i)] = x;
}

// P~ and dS of one (row, key) pair: P = exp(s - lse) on allowed pairs, P~ = P * w, dS = P (dP w - D) slope.
FA_DEV void pair_grad(const AttnParams& p, float dot, float dp, float lse, float D, bool allowed, int b, int h,
                      int i, int j, int off, float& pt, float& ds) {
  pt = 0.f;
  ds = 0.f;
  if (!allowed || lse == -INFINITY) return;
  const float raw = dot * p.scale;
  const float s = modify_score(p, raw, b, h, i, j, off);
  const float P = expf(s - lse);
  const float w = drop_weight(p, b, h, i, j);
  pt = P * w;
  ds = P * (dp * w - D) * score_slope(p, raw);
}

// dK/dV: grid.x = (b * hk) * kblocks. A CTA owns GEN_BC keys of key head hkv and loops over every
// query head of its group and every query tile that can see them: no atomics, a fixed order.
// Accumulates (+=) into float32 buffers laid out like k (zeroed by the caller).
template <typename T, int NC>
__global__ void __launch_bounds__(GEN_THREADS) gen_bwd_dkdv_kernel(AttnParams p, int kblocks, int vec, float* dk_acc,
                                                                  float* dv_acc) {
  constexpr int DP = 32 * NC;
  constexpr int W = Vec<T>::W;
  constexpr int KS = DP + W;
  constexpr int RW = GEN_BRB / 4;  // rows per warp in the score phase; keys per warp in the update
  extern __shared__ __align__(16) unsigned char smem_raw[];
  float* Ps = reinterpret_cast<float*>(smem_raw);  // [BRB][BC]
  float* Ds = Ps + GEN_BRB * GEN_BC;               // [BRB][BC]
  float* lse_s = Ds + GEN_BRB * GEN_BC;            // [BRB]
  float* dsum_s = lse_s + GEN_BRB;                 // [BRB]
  T* Ks = reinterpret_cast<T*>(dsum_s + GEN_BRB);  // [BC][KS]
  T* Vs = Ks + GEN_BC * KS;
  T* Qs = Vs + GEN_BC * KS;  // [BRB][KS]
  T* dOs = Qs + GEN_BRB * KS;

  int kb = blockIdx.x % kblocks;
  const int bhk = blockIdx.x / kblocks;
  int b = bhk / p.hk;
  const int hkv = bhk % p.hk;
  if (p.only_batch >= 0) b = p.only_batch;
  if (p.only_kblock >= 0) kb = p.only_kblock;
  const int sq = seqlen_q(p, b), sk = seqlen_k(p, b);
  const int j0 = kb * GEN_BC;
  if (j0 >= sk) return;
  const int off = sk - sq, d = p.d, G = p.group;
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
  const int nk = min(GEN_BC, sk - j0);
  const T* kbase = static_cast<const T*>(p.k);
  const T* vbase = static_cast<const T*>(p.v);
  const T* qbase = static_cast<const T*>(p.q);
  const T* obase = static_cast<const T*>(p.dout);
  load_rows<T, DP>(Ks, KS, GEN_BC, nk, d, vec, [&](int r) { return kbase + kv_off(p, b, j0 + r, hkv); }, kbase);
  load_rows<T, DP>(Vs, KS, GEN_BC, nk, d, vec, [&](int r) { return vbase + kv_off(p, b, j0 + r, hkv); }, vbase);

  float accK[RW][NC], accV[RW][NC];
#pragma unroll
  for (int m = 0; m < RW; m++)
#pragma unroll
    for (int e = 0; e < NC; e++) accK[m][e] = accV[m][e] = 0.f;
  const int dl = (d + W - 1) / W * W;
  const int j = j0 + lane;

  for (int hh = 0; hh < G; hh++) {
    const int h = hkv * G + hh;
    for (int i0 = 0; i0 < sq; i0 += GEN_BRB) {
      const int i1 = min(sq, i0 + GEN_BRB);
      int lo_a, hi_a, lo_b, hi_b;
      key_range(p, i0, sq, sk, lo_a, hi_a);
      key_range(p, i1 - 1, sq, sk, lo_b, hi_b);
      if (!(hi_b > j0 && lo_a < j0 + nk)) continue;  // block-uniform skip
      load_rows<T, DP>(Qs, KS, GEN_BRB, i1 - i0, d, vec, [&](int r) { return qbase + q_off(p, b, i0 + r, h); }, qbase);
      load_rows<T, DP>(dOs, KS, GEN_BRB, i1 - i0, d, vec, [&](int r) { return obase + q_off(p, b, i0 + r, h); }, obase);
      if (tid < GEN_BRB) {
        const bool ok = i0 + tid < i1;
        lse_s[tid] = ok ? p.lse_in[lse_idx(p, b, h, i0 + tid)] : -INFINITY;
        dsum_s[tid] = ok ? p.dsum[lse_idx(p, b, h, i0 + tid)] : 0.f;
      }
      cp_async_wait<0>();
      __syncthreads();
      // Scores and dP: lane = key, rows warp + 4k.
      float sd[RW], pd[RW];
#pragma unroll
      for (int k = 0; k < RW; k++) sd[k] = pd[k] = 0.f;
      for (int c = 0; c < dl; c += W) {
        float kf[W], vf[W];
        load_f<T, W>(Ks + lane * KS + c, kf);
        load_f<T, W>(Vs + lane * KS + c, vf);
#pragma unroll
        for (int k = 0; k < RW; k++) {
          float qf[W], of[W];
          load_f<T, W>(Qs + (warp + 4 * k) * KS + c, qf);
          load_f<T, W>(dOs + (warp + 4 * k) * KS + c, of);
#pragma unroll
          for (int e = 0; e < W; e++) {
            sd[k] = fmaf(qf[e], kf[e], sd[k]);
            pd[k] = fmaf(of[e], vf[e], pd[k]);
          }
        }
      }
#pragma unroll
      for (int k = 0; k < RW; k++) {
        const int r = warp + 4 * k, i = i0 + r;
        int lo, hi;
        key_range(p, i, sq, sk, lo, hi);
        const bool allowed = i < i1 && lane < nk && j >= lo && j < hi;
        float pt, ds;
        pair_grad(p, sd[k], pd[k], lse_s[r], dsum_s[r], allowed, b, h, i, j, off, pt, ds);
        Ps[r * GEN_BC + lane] = pt;
        Ds[r * GEN_BC + lane] = ds;
      }
      __syncthreads();
      // dV[j] += P~[r, j] dO[r]; dK[j] += dS[r, j] Q[r]: thread owns keys warp + 4m, columns lane*NC...
      for (int r = 0; r < i1 - i0; r++) {
        float of[NC], qf[NC];
        load_f<T, NC>(dOs + r * KS + lane * NC, of);
        load_f<T, NC>(Qs + r * KS + lane * NC, qf);
#pragma unroll
        for (int mm = 0; mm < RW; mm++) {
          const float pt = Ps[r * GEN_BC + warp + 4 * mm];
          const float ds = Ds[r * GEN_BC + warp + 4 * mm];
          if (pt != 0.f) {
#pragma unroll
            for (int e = 0; e < NC; e++) accV[mm][e] = fmaf(pt, of[e], accV[mm][e]);
          }
          if (ds != 0.f) {
#pragma unroll
            for (int e = 0; e < NC; e++) accK[mm][e] = fmaf(ds, qf[e], accK[mm][e]);
          }
        }
      }
      __syncthreads();
    }
  }
  cp_async_wait<0>();
#pragma unroll
  for (int mm = 0; mm < RW; mm++) {
    const int jj = warp + 4 * mm;
    if (jj >= nk) continue;
    const long long o = kv_off(p, b, j0 + jj, hkv);
#pragma unroll
    for (int e = 0; e < NC; e++) {
      const int c = lane * NC + e;
      if (c < d) {
        dk_acc[o + c] += accK[mm][e] * p.scale;
        dv_acc[o + c] += accV[mm][e];
      }
    }
  }
}

// dQ: grid.x = (b * hq) * qblocks. A CTA owns GEN_BRB query rows of head h and loops over its keys.
template <typename T, int NC>
__global__ void __launch_bounds__(GEN_THREADS) gen_bwd_dq_kernel(AttnParams p, int qblocks, int vec) {
  constexpr int DP = 32 * NC;
  constexpr int W = Vec<T>::W;
  constexpr int KS = DP + W;
  constexpr int RW = GEN_BRB / 4;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  float* Ds = reinterpret_cast<float*>(smem_raw);  // [BRB][BC]
  float* lse_s = Ds + GEN_BRB * GEN_BC;
  float* dsum_s = lse_s + GEN_BRB;
  T* Ks = reinterpret_cast<T*>(dsum_s + GEN_BRB);
  T* Vs = Ks + GEN_BC * KS;
  T* Qs = Vs + GEN_BC * KS;
  T* dOs = Qs + GEN_BRB * KS;

  const int qb = blockIdx.x % qblocks;
  const int bh = blockIdx.x / qblocks;
  const int b = bh / p.hq, h = bh % p.hq, hkv = h / p.group;
  const int sq = seqlen_q(p, b), sk = seqlen_k(p, b);
  const int i0 = qb * GEN_BRB;
  if (i0 >= sq) return;
  const int i1 = min(sq, i0 + GEN_BRB);
  const int off = sk - sq, d = p.d;
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
  const T* kbase = static_cast<const T*>(p.k);
  const T* vbase = static_cast<const T*>(p.v);
  const T* qbase = static_cast<const T*>(p.q);
  const T* obase = static_cast<const T*>(p.dout);
  load_rows<T, DP>(Qs, KS, GEN_BRB, i1 - i0, d, vec, [&](int r) { return qbase + q_off(p, b, i0 + r, h); }, qbase);
  load_rows<T, DP>(dOs, KS, GEN_BRB, i1 - i0, d, vec, [&](int r) { return obase + q_off(p, b, i0 + r, h); }, obase);
  if (tid < GEN_BRB) {
    const bool ok = i0 + tid < i1;
    lse_s[tid] = ok ? p.lse_in[lse_idx(p, b, h, i0 + tid)] : -INFINITY;
    dsum_s[tid] = ok ? p.dsum[lse_idx(p, b, h, i0 + tid)] : 0.f;
  }
  int lo_c, hi_c, lo_t, hi_t;
  key_range(p, i0, sq, sk, lo_c, hi_t);
  key_range(p, i1 - 1, sq, sk, lo_t, hi_c);
  float acc[RW][NC];
#pragma unroll
  for (int k = 0; k < RW; k++)
#pragma unroll
    for (int e = 0; e < NC; e++) acc[k][e] = 0.f;
  const int dl = (d + W - 1) / W * W;
  for (int j0 = lo_c; j0 < hi_c; j0 += GEN_BC) {
    const int nk = min(GEN_BC, hi_c - j0);
    load_rows<T, DP>(Ks, KS, GEN_BC, nk, d, vec, [&](int r) { return kbase + kv_off(p, b, j0 + r, hkv); }, kbase);
    load_rows<T, DP>(Vs, KS, GEN_BC, nk, d, vec, [&](int r) { return vbase + kv_off(p, b, j0 + r, hkv); }, vbase);
    cp_async_wait<0>();
    __syncthreads();
    float sd[RW], pd[RW];
#pragma unroll
    for (int k = 0; k < RW; k++) sd[k] = pd[k] = 0.f;
    for (int c = 0; c < dl; c += W) {
      float kf[W], vf[W];
      load_f<T, W>(Ks + lane * KS + c, kf);
      load_f<T, W>(Vs + lane * KS + c, vf);
#pragma unroll
      for (int k = 0; k < RW; k++) {
        float qf[W], of[W];
        load_f<T, W>(Qs + (warp + 4 * k) * KS + c, qf);
        load_f<T, W>(dOs + (warp + 4 * k) * KS + c, of);
#pragma unroll
        for (int e = 0; e < W; e++) {
          sd[k] = fmaf(qf[e], kf[e], sd[k]);
          pd[k] = fmaf(of[e], vf[e], pd[k]);
        }
      }
    }
    const int j = j0 + lane;
#pragma unroll
    for (int k = 0; k < RW; k++) {
      const int r = warp + 4 * k, i = i0 + r;
      int lo, hi;
      key_range(p, i, sq, sk, lo, hi);
      const bool allowed = i < i1 && lane < nk && j >= lo && j < hi;
      float pt, ds;
      pair_grad(p, sd[k], pd[k], lse_s[r], dsum_s[r], allowed, b, h, i, j, off, pt, ds);
      Ds[r * GEN_BC + lane] = ds;
    }
    __syncthreads();
    // dQ[r] += dS[r, j] K[j]: thread owns rows warp + 4k, columns lane*NC...
    for (int jj = 0; jj < nk; jj++) {
      float kf[NC];
      load_f<T, NC>(Ks + jj * KS + lane * NC, kf);
#pragma unroll
      for (int k = 0; k < RW; k++) {
        const float ds = Ds[(warp + 4 * k) * GEN_BC + jj];
        if (ds != 0.f) {
#pragma unroll
          for (int e = 0; e < NC; e++) acc[k][e] = fmaf(ds, kf[e], acc[k][e]);
        }
      }
    }
    __syncthreads();
  }
#pragma unroll
  for (int k = 0; k < RW; k++) {
    const int i = i0 + warp + 4 * k;
    if (i >= i1) continue;
    T* o = static_cast<T*>(p.dq) + q_off(p, b, i, h);
#pragma unroll
    for (int e = 0; e < NC; e++) {
      const int c = lane * NC + e;
      if (c < d) o[c] = from_f<T>(acc[k][e] * p.scale);
    }
  }
}

template <typename T>
__global__ void convert_kernel(const float* src, T* dst, long long n) {
  for (long long t = blockIdx.x * (long long)blockDim.x + threadIdx.x; t < n; t += (long long)gridDim.x * blockDim.x)
    dst[t] = from_f<T>(src[t]);
}

// ------------------------------------------------------------------------------------------------
// Host launchers.

inline int gen_nc(int d) { return d <= 64 ? 2 : d <= 128 ? 4 : 8; }

template <typename T, int NC> size_t gen_fwd_smem() {
  constexpr int DP = 32 * NC, KS = DP + Vec<T>::W;
  return (size_t)GEN_BR * DP * 4 + GEN_BR * GEN_BC * 4 + 4 * GEN_BC * KS * sizeof(T);
}
template <typename T, int NC> size_t gen_bwd_smem(bool dkdv) {
  constexpr int DP = 32 * NC, KS = DP + Vec<T>::W;
  return (size_t)(dkdv ? 2 : 1) * GEN_BRB * GEN_BC * 4 + 2 * GEN_BRB * 4 + 2 * (GEN_BC + GEN_BRB) * KS * sizeof(T);
}

template <typename T> bool gen_vec_ok(const AttnParams& p) {
  constexpr int W = Vec<T>::W;
  auto al = [](const void* x) { return (reinterpret_cast<uintptr_t>(x) & 15) == 0; };
  return p.d % W == 0 && al(p.q) && al(p.k) && al(p.v) && (!p.dout || al(p.dout)) && p.q_ss % W == 0 &&
         p.q_sh % W == 0 && p.q_sb % W == 0 && p.kv_ss % W == 0 && p.kv_sh % W == 0 && p.kv_sb % W == 0;
}

template <typename K> cudaError_t set_smem(K kernel, size_t smem) {
  if (smem <= 48 * 1024) return cudaSuccess;
  return cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem);
}

template <typename T, int NC, bool DEC> cudaError_t gen_forward_nc(const AttnParams& p, int splits, cudaStream_t st) {
  const int rows = p.seq_q * p.group;
  const int nrb = (rows + GEN_BR - 1) / GEN_BR;
  const size_t smem = gen_fwd_smem<T, NC>();
  auto kern = gen_fwd_kernel<T, NC, DEC>;
  cudaError_t e = set_smem(kern, smem);
  if (e != cudaSuccess) return e;
  dim3 grid((unsigned)((long long)p.batch * p.hk * nrb), (unsigned)splits);
  if (grid.x == 0) return cudaSuccess;
  kern<<<grid, GEN_THREADS, smem, st>>>(p, nrb, gen_vec_ok<T>(p) ? 1 : 0);
  e = cudaGetLastError();
  if (e != cudaSuccess || splits == 1) return e;
  return combine_launch<T>(p, splits, st);
}

// decode: the split-KV decode shape (the dispatcher's choice); its variant exists for d <= 128.
template <typename T> cudaError_t gen_forward_t(const AttnParams& p, int splits, bool decode, cudaStream_t st) {
  switch (gen_nc(p.d)) {
    case 2: return decode ? gen_forward_nc<T, 2, true>(p, splits, st) : gen_forward_nc<T, 2, false>(p, splits, st);
    case 4: return decode ? gen_forward_nc<T, 4, true>(p, splits, st) : gen_forward_nc<T, 4, false>(p, splits, st);
    default: return gen_forward_nc<T, 8, false>(p, splits, st);
  }
}

template <typename T> cudaError_t dsum_t(const AttnParams& p, cudaStream_t st) {
  const long long nrows = (long long)p.batch * p.hq * p.seq_q;
  if (nrows == 0) return cudaSuccess;
  dsum_kernel<T><<<(unsigned)((nrows + 3) / 4), 128, 0, st>>>(p);
  return cudaGetLastError();
}

template <typename T, int NC>
cudaError_t gen_backward_nc(const AttnParams& p, float* dk_acc, float* dv_acc, bool serial, cudaStream_t st) {
  const int vec = gen_vec_ok<T>(p) ? 1 : 0;
  {
    const size_t smem = gen_bwd_smem<T, NC>(true);
    auto kern = gen_bwd_dkdv_kernel<T, NC>;
    cudaError_t e = set_smem(kern, smem);
    if (e != cudaSuccess) return e;
    const int kblocks = (p.seq_k + GEN_BC - 1) / GEN_BC;
    if (kblocks == 0 || p.batch == 0) {
      // no keys: dK and dV stay zero
    } else if (!serial) {
      kern<<<(unsigned)((long long)p.batch * p.hk * kblocks), GEN_THREADS, smem, st>>>(p, kblocks, vec, dk_acc, dv_acc);
      e = cudaGetLastError();
      if (e != cudaSuccess) return e;
    } else {
      // Pages shared between sequences (or within one): one launch per (batch, key block), in order,
      // each adding into the float32 accumulators. Slow, exact and deterministic.
      AttnParams q = p;
      for (int b = 0; b < p.batch; b++) {
        for (int kb = 0; kb < kblocks; kb++) {
          q.only_batch = b;
          q.only_kblock = kb;
          kern<<<(unsigned)p.hk, GEN_THREADS, smem, st>>>(q, 1, vec, dk_acc, dv_acc);
          e = cudaGetLastError();
          if (e != cudaSuccess) return e;
        }
      }
    }
  }
  {
    const size_t smem = gen_bwd_smem<T, NC>(false);
    auto kern = gen_bwd_dq_kernel<T, NC>;
    cudaError_t e = set_smem(kern, smem);
    if (e != cudaSuccess) return e;
    const int qblocks = (p.seq_q + GEN_BRB - 1) / GEN_BRB;
    if (qblocks == 0 || p.batch == 0) return cudaSuccess;
    kern<<<(unsigned)((long long)p.batch * p.hq * qblocks), GEN_THREADS, smem, st>>>(p, qblocks, vec);
    return cudaGetLastError();
  }
}

template <typename T>
cudaError_t gen_backward_t(const AttnParams& p, float* dk_acc, float* dv_acc, bool serial, cudaStream_t st) {
  switch (gen_nc(p.d)) {
    case 2: return gen_backward_nc<T, 2>(p, dk_acc, dv_acc, serial, st);
    case 4: return gen_backward_nc<T, 4>(p, dk_acc, dv_acc, serial, st);
    default: return gen_backward_nc<T, 8>(p, dk_acc, dv_acc, serial, st);
  }
}

template <typename T> cudaError_t convert_t(const float* src, void* dst, long long n, cudaStream_t st) {
  if (n == 0) return cudaSuccess;
  const unsigned blocks = (unsigned)std::min<long long>((n + 255) / 256, 65535LL * 4);
  convert_kernel<T><<<blocks, 256, 0, st>>>(src, static_cast<T*>(dst), n);
  return cudaGetLastError();
}

}  // namespace fa

#define FA_INSTANTIATE_GENERIC(T, NAME)                                                                        \
  namespace fa {                                                                                              \
  cudaError_t gen_forward_##NAME(const AttnParams& p, int splits, bool decode, cudaStream_t st) {              \
    return gen_forward_t<T>(p, splits, decode, st);                                                           \
  }                                                                                                           \
  cudaError_t dsum_##NAME(const AttnParams& p, cudaStream_t st) { return dsum_t<T>(p, st); }                   \
  cudaError_t gen_backward_##NAME(const AttnParams& p, float* dk, float* dv, bool serial, cudaStream_t st) {    \
    return gen_backward_t<T>(p, dk, dv, serial, st);                                                          \
  }                                                                                                           \
  cudaError_t convert_##NAME(const float* src, void* dst, long long n, cudaStream_t st) {                      \
    return convert_t<T>(src, dst, n, st);                                                                     \
  }                                                                                                           \
  }
