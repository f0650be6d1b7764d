// FlashAttention-2 backward on tensor cores, float16/bfloat16, head dims up to 128, deterministic:
//  - dK/dV: one CTA per (key block, key head, batch); each warp owns 16 keys and computes S^T = K Q^T
//    and dP^T = V dO^T with keys as the M dimension, so P^T and dS^T land in registers already laid
//    out as A fragments for dV += P~^T dO and dK += dS^T Q. The CTA loops over every query head of its
//    GQA group and every query block in a fixed order: no atomics.
//  - dQ: a separate pass, one CTA per (query block, head, batch), dQ += dS K over the key blocks.
// D_i = dO_i . O_i comes from the generic dsum kernel.
#pragma once
#include "tc_common.cuh"

namespace fa {

// P (probability) and dS of one pair in the EXTRAS path: scores in natural units, accurate exp.
FA_DEV void tc_pair_extras(const AttnParams& p, float dot, float lse, bool allowed, int b, int h, int i, int j,
                           int off, float& P, float& slope, float& w) {
  P = 0.f;
  slope = 1.f;
  w = 1.f;
  if (!allowed || lse == -INFINITY) return;
  const float raw = dot * p.scale;
  const float s = modify_score(p, raw, b, h, i, j, off);
  P = expf(s - lse);
  slope = score_slope(p, raw);
  w = drop_weight(p, b, h, i, j);
}

// STAGES = 2: the next query block's Q, dO, lse and D load while this one is computed.
template <typename T, int D, int BM, int NW, bool EXTRAS, int STAGES>
__global__ void __launch_bounds__(NW * 32) tc_bwd_dkdv_kernel(AttnParams p) {
  constexpr int BN = 16 * NW;
  constexpr int NT = NW * 32;
  constexpr int NBM = BM / 8;
  constexpr int ND = D / 8;
  constexpr int NS = STAGES < 2 ? 1 : 2;
  extern __shared__ __align__(128) unsigned char smem_raw[];
  T* Ks = reinterpret_cast<T*>(smem_raw);
  T* Vs = Ks + BN * D;
  T* Qs0 = Vs + BN * D;                                      // [NS][BM][D]
  T* dOs0 = Qs0 + NS * BM * D;                               // [NS][BM][D]
  float* lse_s0 = reinterpret_cast<float*>(dOs0 + NS * BM * D);  // [NS][BM] log2 units; +inf = none
  float* dsum_s0 = lse_s0 + NS * BM;                         // [NS][BM]
  float* lsen_s0 = dsum_s0 + NS * BM;                        // [NS][BM] natural units (EXTRAS)

  check_smem_alignment(smem_raw);
  const int nb = blockIdx.x, hkv = blockIdx.y, b = blockIdx.z;
  const int sq = seqlen_q(p, b), sk = seqlen_k(p, b);
  const int n0 = nb * BN;
  if (n0 >= sk) return;
  const int off = sk - sq, d = p.d, G = p.group;
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
  const int g = lane >> 2, tq = lane & 3;
  const T* kbase = static_cast<const T*>(p.k);
  const T* vbase = static_cast<const T*>(p.v);
  const T* qbase = static_cast<const T*>(p.q);
  const T* obase = static_cast<const T*>(p.dout);
  if (p.block_table) {
    tc_load_tile<T, D, NT>(Ks, BN, sk - n0, d, [&](int r) { return kbase + kv_off(p, b, n0 + r, hkv); }, kbase);
    tc_load_tile<T, D, NT>(Vs, BN, sk - n0, d, [&](int r) { return vbase + kv_off(p, b, n0 + r, hkv); }, vbase);
  } else {
    tc_load_tile_strided<T, D, NT, BN>(Ks, sk - n0, d, kbase + kv_off(p, b, n0, hkv), p.kv_ss);
    tc_load_tile_strided<T, D, NT, BN>(Vs, sk - n0, d, vbase + kv_off(p, b, n0, hkv), p.kv_ss);
  }
  cp_async_commit();

  float dk[ND][4], dv[ND][4];
#pragma unroll
  for (int dt = 0; dt < ND; dt++)
#pragma unroll
    for (int e = 0; e < 4; e++) dk[dt][e] = dv[dt][e] = 0.f;
  const float scale_log2 = p.scale * LOG2E;
  int jr[2];
  jr[0] = n0 + warp * 16 + g;
  jr[1] = jr[0] + 8;

  // Query blocks whose rows see some key of this block: a contiguous range (lo and hi are monotone).
  const int nmb_all = (sq + BM - 1) / BM;
  int mb_lo = nmb_all, mb_hi = 0;
  for (int mb = 0; mb < nmb_all; mb++) {
    const int m0 = mb * BM, last = min(m0 + BM, sq) - 1;
    int lo_f, hi_f, lo_l, hi_l;
    key_range(p, m0, sq, sk, lo_f, hi_f);
    key_range(p, last, sq, sk, lo_l, hi_l);
    if (hi_l > n0 && lo_f < n0 + BN) {
      mb_lo = min(mb_lo, mb);
      mb_hi = mb + 1;
    }
  }
  const int nmb = mb_hi > mb_lo ? mb_hi - mb_lo : 0;
  const int iters = G * nmb;
  // Loads query block `it` (head hh = it / nmb) into stage `stage`: Q and dO by cp.async, lse and D
  // by plain stores (visible after the next barrier).
  auto load_q = [&](int it, int stage) {
    const int h = hkv * G + it / nmb;
    const int m0 = (mb_lo + it % nmb) * BM;
    // Strided loads (tc_load_tile_strided): the per-chunk index arithmetic was most of the loop's
    // non-mma instructions in the forward (run 4).
    const long long qo = q_off(p, b, m0, h);
    tc_load_tile_strided<T, D, NT, BM>(Qs0 + stage * BM * D, sq - m0, d, qbase + qo, p.q_ss);
    tc_load_tile_strided<T, D, NT, BM>(dOs0 + stage * BM * D, sq - m0, d, obase + qo, p.q_ss);
    for (int r = tid; r < BM; r += NT) {
      const int i = m0 + r;
      float lse = -INFINITY, ds = 0.f;
      if (i < sq) {
        const long long li = lse_idx(p, b, h, i);
        lse = p.lse_in[li];
        ds = p.dsum[li];
      }
      lse_s0[stage * BM + r] = lse == -INFINITY ? INFINITY : lse * LOG2E;
      lsen_s0[stage * BM + r] = lse;
      dsum_s0[stage * BM + r] = ds;
    }
  };
  if (STAGES >= 2 && iters > 0) load_q(0, 0);
  cp_async_commit();  // with K and V
  // KREG (d = 64): this warp's 16 rows of K and V stay in registers as A fragments (32 registers)
  // instead of 2 * D / 16 ldmatrix per query block: they do not change along the loop (run 9).
  constexpr bool KREG = D <= 64 && !EXTRAS;
  uint32_t ka[KREG ? D / 16 : 1][4], va[KREG ? D / 16 : 1][4];
  if constexpr (KREG) {
    cp_async_wait<1>();  // the K/V group (the one after it is the first Q/dO block, or empty)
    __syncthreads();
#pragma unroll
    for (int ks = 0; ks < D / 16; ks++) {
      ld_a<D>(ka[ks], Ks, warp * 16, ks, lane);
      ld_a<D>(va[ks], Vs, warp * 16, ks, lane);
    }
  }

  for (int it = 0; it < iters; it++) {
    const int hh = it / nmb;
    const int h = hkv * G + hh;
    const int m0 = (mb_lo + it % nmb) * BM;
    const int stage = STAGES >= 2 ? (it & 1) : 0;
    const T* Qs = Qs0 + stage * BM * D;
    const T* dOs = dOs0 + stage * BM * D;
    const float* lse_s = lse_s0 + stage * BM;
    const float* dsum_s = dsum_s0 + stage * BM;
    const float* lsen_s = lsen_s0 + stage * BM;
    bool need_mask;
    {
      const int last = min(m0 + BM, sq) - 1;
      int lo_f, hi_f, lo_l, hi_l;
      key_range(p, m0, sq, sk, lo_f, hi_f);
      key_range(p, last, sq, sk, lo_l, hi_l);
      need_mask = EXTRAS || !(n0 >= lo_l && n0 + BN <= hi_f);
    }
    if constexpr (STAGES >= 2) {
      cp_async_wait<0>();
      __syncthreads();  // block it in place; every warp is done with the other stage
      if (it + 1 < iters) load_q(it + 1, stage ^ 1);
      cp_async_commit();
    } else {
      __syncthreads();  // the previous block's Q / dO are no longer read
      load_q(it, 0);
      cp_async_commit();
      cp_async_wait<0>();
      __syncthreads();
    }
    {
      // S^T = K Q^T (rows: this warp's 16 keys; columns: BM queries).
      float st[NBM][4];
#pragma unroll
      for (int nt = 0; nt < NBM; nt++)
#pragma unroll
        for (int e = 0; e < 4; e++) st[nt][e] = 0.f;
#pragma unroll
      for (int ks = 0; ks < D / 16; ks++) {
        uint32_t a[4];
        if constexpr (KREG) {
#pragma unroll
          for (int e = 0; e < 4; e++) a[e] = ka[ks][e];
        } else {
          ld_a<D>(a, Ks, warp * 16, ks, lane);
        }
#pragma unroll
        for (int nt = 0; nt < NBM; nt += 2) {
          uint32_t bb[4];
          ld_b<D>(bb, Qs, nt * 8, ks, lane);
          mma16816<T>(st[nt], a, bb);
          mma16816<T>(st[nt + 1], a, bb + 2);
        }
      }
      // P^T (float32, in place); EXTRAS keeps each pair's dropout weight and softcap slope.
      float wv[EXTRAS ? NBM : 1][4], sl[EXTRAS ? NBM : 1][4];
#pragma unroll
      for (int nt = 0; nt < NBM; nt++)
#pragma unroll
        for (int e = 0; e < 4; e++) {
          const int ic = nt * 8 + tq * 2 + (e & 1);
          const int i = m0 + ic, j = jr[e >> 1];
          float P;
          if constexpr (EXTRAS) {
            int lo, hi;
            key_range(p, i, sq, sk, lo, hi);
            tc_pair_extras(p, st[nt][e], lsen_s[ic], i < sq && j >= lo && j < hi, b, h, i, j, off, P, sl[nt][e],
                           wv[nt][e]);
          } else {
            P = exp2_approx(st[nt][e] * scale_log2 - lse_s[ic]);
          }
          st[nt][e] = P;
        }
      if constexpr (!EXTRAS) {
        if (need_mask) {
          // A real branch (see tc_fwd.cuh): otherwise the row bounds are computed per element on
          // every block.
          asm volatile("");
#pragma unroll
          for (int nt = 0; nt < NBM; nt++)
#pragma unroll
            for (int e = 0; e < 4; e++) {
              int lo, hi;
              key_range(p, m0 + nt * 8 + tq * 2 + (e & 1), sq, sk, lo, hi);
              const int j = jr[e >> 1];
              if (!(j >= lo && j < hi)) st[nt][e] = 0.f;
            }
        }
      }
      // dV += P~^T dO.
#pragma unroll
      for (int kk = 0; kk < BM / 16; kk++) {
        float pt[2][4];
#pragma unroll
        for (int u = 0; u < 2; u++)
#pragma unroll
          for (int e = 0; e < 4; e++) {
            float x = st[2 * kk + u][e];
            if constexpr (EXTRAS) x *= wv[2 * kk + u][e];
            pt[u][e] = x;
          }
        uint32_t a[4];
        acc_to_a<T>(a, pt[0], pt[1]);
#pragma unroll
        for (int dt = 0; dt < ND; dt += 2) {
          uint32_t bb[4];
          ld_bt<D>(bb, dOs, kk, dt, lane);
          mma16816<T>(dv[dt], a, bb);
          mma16816<T>(dv[dt + 1], a, bb + 2);
        }
      }
      // dP^T = V dO^T.
      float dpt[NBM][4];
#pragma unroll
      for (int nt = 0; nt < NBM; nt++)
#pragma unroll
        for (int e = 0; e < 4; e++) dpt[nt][e] = 0.f;
#pragma unroll
      for (int ks = 0; ks < D / 16; ks++) {
        uint32_t a[4];
        if constexpr (KREG) {
#pragma unroll
          for (int e = 0; e < 4; e++) a[e] = va[ks][e];
        } else {
          ld_a<D>(a, Vs, warp * 16, ks, lane);
        }
#pragma unroll
        for (int nt = 0; nt < NBM; nt += 2) {
          uint32_t bb[4];
          ld_b<D>(bb, dOs, nt * 8, ks, lane);
          mma16816<T>(dpt[nt], a, bb);
          mma16816<T>(dpt[nt + 1], a, bb + 2);
        }
      }
      // dS^T = P (dP w - D) slope, in place in st.
#pragma unroll
      for (int nt = 0; nt < NBM; nt++)
#pragma unroll
        for (int e = 0; e < 4; e++) {
          const int ic = nt * 8 + tq * 2 + (e & 1);
          if constexpr (EXTRAS) {
            st[nt][e] = st[nt][e] * (dpt[nt][e] * wv[nt][e] - dsum_s[ic]) * sl[nt][e];
          } else {
            st[nt][e] = st[nt][e] * (dpt[nt][e] - dsum_s[ic]);
          }
        }
      // dK += dS^T Q.
#pragma unroll
      for (int kk = 0; kk < BM / 16; kk++) {
        uint32_t a[4];
        acc_to_a<T>(a, st[2 * kk], st[2 * kk + 1]);
#pragma unroll
        for (int dt = 0; dt < ND; dt += 2) {
          uint32_t bb[4];
          ld_bt<D>(bb, Qs, kk, dt, lane);
          mma16816<T>(dk[dt], a, bb);
          mma16816<T>(dk[dt + 1], a, bb + 2);
        }
      }
    }
  }
  cp_async_wait<0>();
  // Store dK (times scale) and dV.
  T* dkb = static_cast<T*>(p.dk);
  T* dvb = static_cast<T*>(p.dv);
#pragma unroll
  for (int hf = 0; hf < 2; hf++) {
    const int j = jr[hf];
    if (j >= sk) continue;
    const long long o = kv_off(p, b, j, hkv);
#pragma unroll
    for (int dt = 0; dt < ND; dt++) {
      const int c = dt * 8 + tq * 2;
      if (c < d) {
        *reinterpret_cast<uint32_t*>(dkb + o + c) = pack2<T>(dk[dt][2 * hf] * p.scale, dk[dt][2 * hf + 1] * p.scale);
        *reinterpret_cast<uint32_t*>(dvb + o + c) = pack2<T>(dv[dt][2 * hf], dv[dt][2 * hf + 1]);
      }
    }
  }
}

// STAGES = 2: the next key block's K and V load while this one is computed.
template <typename T, int D, int BN, int NW, bool EXTRAS, int STAGES>
__global__ void __launch_bounds__(NW * 32) tc_bwd_dq_kernel(AttnParams p) {
  constexpr int BM = 16 * NW;
  constexpr int NT = NW * 32;
  constexpr int NBN = BN / 8;
  constexpr int ND = D / 8;
  constexpr int NS = STAGES < 2 ? 1 : 2;
  extern __shared__ __align__(128) unsigned char smem_raw[];
  T* Qs = reinterpret_cast<T*>(smem_raw);
  T* dOs = Qs + BM * D;
  T* Ks0 = dOs + BM * D;
  T* Vs0 = Ks0 + NS * BN * D;

  check_smem_alignment(smem_raw);
  const int mb = gridDim.x - 1 - blockIdx.x;
  const int h = blockIdx.y, b = blockIdx.z, hkv = h / p.group;
  const int sq = seqlen_q(p, b), sk = seqlen_k(p, b);
  const int m0 = mb * BM;
  if (m0 >= sq) return;
  const int off = sk - sq, d = p.d;
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
  const int g = lane >> 2, tq = lane & 3;
  const T* kbase = static_cast<const T*>(p.k);
  const T* vbase = static_cast<const T*>(p.v);
  const T* qbase = static_cast<const T*>(p.q);
  const T* obase = static_cast<const T*>(p.dout);

  const int last = min(m0 + BM, sq) - 1;
  int lo_first, hi_first, lo_last, hi_last;
  key_range(p, m0, sq, sk, lo_first, hi_first);
  key_range(p, last, sq, sk, lo_last, hi_last);
  const int nb_lo = lo_first / BN;
  const int nb_hi = hi_last > lo_first ? (hi_last + BN - 1) / BN : nb_lo;

  float dq[ND][4];
#pragma unroll
  for (int dt = 0; dt < ND; dt++)
#pragma unroll
    for (int e = 0; e < 4; e++) dq[dt][e] = 0.f;
  int ri[2], rlo[2], rhi[2];
  float lse2[2], lsen[2], dsm[2];
#pragma unroll
  for (int hf = 0; hf < 2; hf++) {
    ri[hf] = m0 + warp * 16 + g + 8 * hf;
    key_range(p, ri[hf], sq, sk, rlo[hf], rhi[hf]);
    float lse = -INFINITY, ds = 0.f;
    if (ri[hf] < sq) {
      const long long li = lse_idx(p, b, h, ri[hf]);
      lse = p.lse_in[li];
      ds = p.dsum[li];
    }
    lse2[hf] = lse == -INFINITY ? INFINITY : lse * LOG2E;
    lsen[hf] = lse;
    dsm[hf] = ds;
  }
  const float scale_log2 = p.scale * LOG2E;

  const long long kv0 = p.block_table ? 0 : kv_off(p, b, 0, hkv);  // row 0 of this key head (unpaged)
  auto load_kv = [&](int nb, int stage) {
    const int j0 = nb * BN;
    if (p.block_table) {
      tc_load_tile<T, D, NT>(Ks0 + stage * BN * D, BN, sk - j0, d, [&](int r) { return kbase + kv_off(p, b, j0 + r, hkv); },
                             kbase);
      tc_load_tile<T, D, NT>(Vs0 + stage * BN * D, BN, sk - j0, d, [&](int r) { return vbase + kv_off(p, b, j0 + r, hkv); },
                             vbase);
    } else {
      const long long ko = kv0 + (long long)j0 * p.kv_ss;
      tc_load_tile_strided<T, D, NT, BN>(Ks0 + stage * BN * D, sk - j0, d, kbase + ko, p.kv_ss);
      tc_load_tile_strided<T, D, NT, BN>(Vs0 + stage * BN * D, sk - j0, d, vbase + ko, p.kv_ss);
    }
  };
  if (nb_lo < nb_hi) {
    const long long qo = q_off(p, b, m0, h);
    tc_load_tile_strided<T, D, NT, BM>(Qs, sq - m0, d, qbase + qo, p.q_ss);
    tc_load_tile_strided<T, D, NT, BM>(dOs, sq - m0, d, obase + qo, p.q_ss);
    if constexpr (STAGES >= 2) load_kv(nb_lo, 0);
    cp_async_commit();
  }
  // QREG: this warp's 16 rows of Q and dO stay in registers as A fragments (2 * D / 4 registers)
  // instead of 2 * D / 16 ldmatrix per key block, a quarter of the pass's shared-memory reads (run 9).
  constexpr bool QREG = !EXTRAS;
  uint32_t qa[QREG ? D / 16 : 1][4], oa[QREG ? D / 16 : 1][4];
  if constexpr (QREG) {
    if (nb_lo < nb_hi) {
      cp_async_wait<0>();
      __syncthreads();
#pragma unroll
      for (int ks = 0; ks < D / 16; ks++) {
        ld_a<D>(qa[ks], Qs, warp * 16, ks, lane);
        ld_a<D>(oa[ks], dOs, warp * 16, ks, lane);
      }
    }
  }
  for (int nb = nb_lo; nb < nb_hi; nb++) {
    const int j0 = nb * BN;
    const int stage = STAGES >= 2 ? (nb - nb_lo) & 1 : 0;
    const T* Ks = Ks0 + stage * BN * D;
    const T* Vs = Vs0 + stage * BN * D;
    if constexpr (STAGES >= 2) {
      cp_async_wait<0>();
      __syncthreads();  // block nb in place; every warp is done with the other stage
      if (nb + 1 < nb_hi) load_kv(nb + 1, stage ^ 1);
      cp_async_commit();
    } else {
      __syncthreads();  // the previous K / V are no longer read
      load_kv(nb, 0);
      cp_async_commit();
      cp_async_wait<0>();
      __syncthreads();
    }
    const bool need_mask = EXTRAS || !(j0 >= lo_last && j0 + BN <= hi_first);

    float s[NBN][4], dp[NBN][4];
#pragma unroll
    for (int nt = 0; nt < NBN; nt++)
#pragma unroll
      for (int e = 0; e < 4; e++) s[nt][e] = dp[nt][e] = 0.f;
#pragma unroll
    for (int ks = 0; ks < D / 16; ks++) {
      uint32_t a[4], a2[4];
      if constexpr (QREG) {
#pragma unroll
        for (int e = 0; e < 4; e++) {
          a[e] = qa[ks][e];
          a2[e] = oa[ks][e];
        }
      } else {
        ld_a<D>(a, Qs, warp * 16, ks, lane);
        ld_a<D>(a2, dOs, warp * 16, ks, lane);
      }
#pragma unroll
      for (int nt = 0; nt < NBN; nt += 2) {
        uint32_t bb[4], bv[4];
        ld_b<D>(bb, Ks, nt * 8, ks, lane);
        ld_b<D>(bv, Vs, nt * 8, ks, lane);
        mma16816<T>(s[nt], a, bb);
        mma16816<T>(s[nt + 1], a, bb + 2);
        mma16816<T>(dp[nt], a2, bv);
        mma16816<T>(dp[nt + 1], a2, bv + 2);
      }
    }
    // dS = P (dP w - D) slope.
#pragma unroll
    for (int nt = 0; nt < NBN; nt++)
#pragma unroll
      for (int e = 0; e < 4; e++) {
        const int hf = e >> 1;
        const int j = j0 + nt * 8 + tq * 2 + (e & 1);
        float ds;
        if constexpr (EXTRAS) {
          float P, slope, w;
          tc_pair_extras(p, s[nt][e], lsen[hf], ri[hf] < sq && j >= rlo[hf] && j < rhi[hf], b, h, ri[hf], j, off, P,
                         slope, w);
          ds = P * (dp[nt][e] * w - dsm[hf]) * slope;
        } else {
          const float P = exp2_approx(s[nt][e] * scale_log2 - lse2[hf]);
          ds = P * (dp[nt][e] - dsm[hf]);
        }
        s[nt][e] = ds;
      }
    if constexpr (!EXTRAS) {
      if (need_mask) {
        asm volatile("");  // a real branch (see tc_fwd.cuh)
#pragma unroll
        for (int nt = 0; nt < NBN; nt++)
#pragma unroll
          for (int e = 0; e < 4; e++) {
            const int hf = e >> 1;
            const int j = j0 + nt * 8 + tq * 2 + (e & 1);
            if (!(j >= rlo[hf] && j < rhi[hf])) s[nt][e] = 0.f;
          }
      }
    }
    // dQ += dS K.
#pragma unroll
    for (int kk = 0; kk < BN / 16; kk++) {
      uint32_t a[4];
      acc_to_a<T>(a, s[2 * kk], s[2 * kk + 1]);
#pragma unroll
      for (int dt = 0; dt < ND; dt += 2) {
        uint32_t bb[4];
        ld_bt<D>(bb, Ks, kk, dt, lane);
        mma16816<T>(dq[dt], a, bb);
        mma16816<T>(dq[dt + 1], a, bb + 2);
      }
    }
  }
  cp_async_wait<0>();
  T* dqb = static_cast<T*>(p.dq);
#pragma unroll
  for (int hf = 0; hf < 2; hf++) {
    if (ri[hf] >= sq) continue;
    const long long o = q_off(p, b, ri[hf], h);
#pragma unroll
    for (int dt = 0; dt < ND; dt++) {
      const int c = dt * 8 + tq * 2;
      if (c < d) *reinterpret_cast<uint32_t*>(dqb + o + c) = pack2<T>(dq[dt][2 * hf] * p.scale, dq[dt][2 * hf + 1] * p.scale);
    }
  }
}

template <typename T, int D, int BM, int NW, bool EXTRAS, int STAGES>
cudaError_t tc_dkdv_launch(const AttnParams& p, cudaStream_t st) {
  constexpr int BN = 16 * NW;
  constexpr int NS = STAGES < 2 ? 1 : 2;
  constexpr size_t smem = (size_t)(2 * BN + 2 * NS * BM) * D * sizeof(T) + 3 * NS * BM * sizeof(float);
  auto kern = tc_bwd_dkdv_kernel<T, D, BM, NW, EXTRAS, STAGES>;
  if (smem > 48 * 1024) {
    cudaError_t e = cudaFuncSetAttribute(kern, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem);
    if (e != cudaSuccess) return e;
  }
  dim3 grid((unsigned)((p.seq_k + BN - 1) / BN), (unsigned)p.hk, (unsigned)p.batch);
  if (grid.x == 0 || grid.y == 0 || grid.z == 0) return cudaSuccess;
  kern<<<grid, NW * 32, smem, st>>>(p);
  return cudaGetLastError();
}

template <typename T, int D, int BN, int NW, bool EXTRAS, int STAGES>
cudaError_t tc_dq_launch(const AttnParams& p, cudaStream_t st) {
  constexpr int BM = 16 * NW;
  constexpr int NS = STAGES < 2 ? 1 : 2;
  constexpr size_t smem = (size_t)(2 * NS * BN + 2 * BM) * D * sizeof(T);
  auto kern = tc_bwd_dq_kernel<T, D, BN, NW, EXTRAS, STAGES>;
  if (smem > 48 * 1024) {
    cudaError_t e = cudaFuncSetAttribute(kern, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem);
    if (e != cudaSuccess) return e;
  }
  dim3 grid((unsigned)((p.seq_q + BM - 1) / BM), (unsigned)p.hq, (unsigned)p.batch);
  if (grid.x == 0 || grid.y == 0 || grid.z == 0) return cudaSuccess;
  kern<<<grid, NW * 32, smem, st>>>(p);
  return cudaGetLastError();
}

// The pipelined schedule (STAGES = 2) at both head dims. variant 1 (FA_TUNE builds): the unpipelined
// one, for comparison. At d = 64 it was 5 % ahead in runs 7 and 8, but with K, V, Q and dO fragments
// in registers (run 9) the pipelined one leads by 4.5 % (197.0 against 188.5 TFLOP/s, s = 4096).
template <typename T, bool EXTRAS> cudaError_t tc_backward_t(const AttnParams& p, int variant, cudaStream_t st) {
  (void)variant;
  cudaError_t e;
#ifdef FA_TUNE
  if constexpr (!EXTRAS) if (variant == 1) {
    if (p.d <= 64) {
      e = tc_dkdv_launch<T, 64, 64, 4, EXTRAS, 1>(p, st);
      if (e == cudaSuccess) e = tc_dq_launch<T, 64, 32, 4, EXTRAS, 1>(p, st);
    } else {
      e = tc_dkdv_launch<T, 128, 32, 4, EXTRAS, 1>(p, st);
      if (e == cudaSuccess) e = tc_dq_launch<T, 128, 32, 4, EXTRAS, 1>(p, st);
    }
    return e;
  }
#endif
  if (p.d <= 64) {
    e = tc_dkdv_launch<T, 64, EXTRAS ? 32 : 64, 4, EXTRAS, 2>(p, st);
    if (e == cudaSuccess) e = tc_dq_launch<T, 64, 32, 4, EXTRAS, 2>(p, st);
  } else {
    e = tc_dkdv_launch<T, 128, 32, 4, EXTRAS, 2>(p, st);
    if (e == cudaSuccess) e = tc_dq_launch<T, 128, 32, 4, EXTRAS, 2>(p, st);
  }
  return e;
}

}  // namespace fa

#define FA_INSTANTIATE_TC_BWD(T, NAME)                                                    \
  namespace fa {                                                                         \
  cudaError_t tc_backward_##NAME(const AttnParams& p, bool extras, int variant, cudaStream_t st) { \
    return extras ? tc_backward_t<T, true>(p, variant, st) : tc_backward_t<T, false>(p, variant, st); \
  }                                                                                      \
  }
