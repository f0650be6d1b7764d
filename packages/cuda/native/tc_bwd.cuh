// FlashAttention-2 backward on tensor cores, float16/bfloat16, head dims up to 256, deterministic.
// dK/dV: one CTA per (key block, key head, batch); each warp owns 16 keys and computes S^T = K Q^T and
// dP^T = V dO^T with keys as the M dimension, so P^T and dS^T land in registers already laid out as A
// fragments for dV += P~^T dO and dK += dS^T Q. The CTA loops over the query blocks (last first) and,
// inside, the query heads of its GQA group, in a fixed order: no atomics.
//  - Default: two passes. dQ in its own kernel, one CTA per (query block, head, batch), dQ += dS K
//    over the key blocks (7 products per block pair against FA2's 5). Since run 17 each warp of the dQ
//    pass owns 32 query rows, so every K / V fragment it reads serves two m16 tiles (run 14).
//  - Fused (FA_TUNE builds, variants 1-4; PERF.md run 11): the dK/dV CTA also computes its dQ
//    contribution dS K (5 products). dS goes through shared memory and the CTA adds its float32 dQ
//    tile to a scratch accumulator, either with unordered atomics or in a fixed order: one counter per
//    (batch, head, query block) says how many key blocks have added; key block nb waits for its turn
//    (only on key blocks of smaller linear blockIdx, dispatched before it: no deadlock), the first
//    stores, the middle ones add, the last adds and writes dQ in the output dtype, so the sums are
//    the same on every call (SPEC §4). Measured slower than the two passes in both forms.
//  - FA2 layout (run 18, tc_bwd_fa2_kernel below): one 8-warp CTA per 128-key block with a warp
//    layout per product, P and dS through shared memory, dQ by float32 reductions, unordered
//    (variant 8) or in a fixed order per query block (10-12). The ordered form is the default at
//    d = 128 without causal or window mask (fa2_default). Run 20: the dQ as fixed-point integers,
//    deterministic in any order (FA2_FIX in int64, variant 15; FA2_FIXF in float32 hi / lo parts,
//    variant 16), the default at d = 128 with the causal mask from s = 8192 (fa2_fix_default).
//    Variant 14 forces the two passes where either is the default.
//  - Head dims 129-256 (run 22, tc_backward_d256): the two passes, the dK/dV pass split into a dV
//    launch and a dK launch (DkdvPart), single-buffered tiles under 99 KB of shared memory.
// D_i = dO_i . O_i comes from the generic dsum kernel.
#pragma once
#include <algorithm>

#include "launch.h"
#include "tc_common.cuh"

namespace fa {

// P (probability) and dS of one pair in the EXTRAS path: scores in natural units, the exponential and
// the softcap's tanh by the hardware's exp2 (modify_score_tc).
FA_DEV void tc_pair_extras(const AttnParams& p, float dot, float lse, bool allowed, int b, int h, int i, int j,
                           int off, float& P, float& slope, float& w) {
  P = 0.f;
  slope = 1.f;
  w = 1.f;
  if (!allowed || lse == -INFINITY) return;
  const float s = modify_score_tc(p, dot * p.scale, b, h, i, j, off, slope);
  P = exp2_approx((s - lse) * LOG2E);
  w = drop_weight(p, b, h, i, j);
}

// How the dK/dV kernel treats dQ: not at all (the two-pass schedule, the default), fused with its
// contribution added in key-block order (deterministic), or fused with unordered float atomics (what
// the order costs). The fused forms are tuning variants only (run 11: slower than the two passes).
enum DqMode : int { DQ_NONE = 0, DQ_ORDERED = 1, DQ_ATOMIC = 2 };

FA_DEV unsigned ld_acquire_gpu(const unsigned* ptr) {
  unsigned v;
  asm volatile("ld.acquire.gpu.global.u32 %0, [%1];" : "=r"(v) : "l"(ptr) : "memory");
  return v;
}

// 4-byte cp.async (the .ca form: .cg takes only 16 bytes); src_bytes 0 zero-fills.
FA_DEV void cp_async4(void* smem, const void* gmem, int src_bytes) {
  asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" ::"r"(smem_u32(smem)), "l"(gmem), "r"(src_bytes));
}

// Two adjacent float32 adds at L2 (no return value: RED, not ATOM); one vector RED on sm_90.
FA_DEV void red_add2(float* ptr, float x, float y) {
#if __CUDA_ARCH__ >= 900
  asm volatile("red.global.add.v2.f32 [%0], {%1, %2};" ::"l"(ptr), "f"(x), "f"(y) : "memory");
#else
  atomicAdd(ptr, x);
  atomicAdd(ptr + 1, y);
#endif
}

// Key blocks that contribute to the query block whose first row sees keys [lo_f, ...) and whose
// last row sees keys [..., hi_l): a contiguous range [lo_f / BN, ceil(hi_l / BN)), empty when every
// row of the block sees nothing. The dK/dV loop and the dQ order both use exactly this test.
template <int BN> FA_DEV bool block_pair_live(int lo_f, int hi_l, int n0) { return hi_l > lo_f && n0 < hi_l && n0 + BN > lo_f; }

// A dK/dV CTA's key block: BN rows of K and of V from key n0 (rows past sk zero-filled), by the paged
// row lookup or, for contiguous K/V, a strided copy (one add per chunk).
template <typename T, int D, int NT, int BN>
FA_DEV void load_kv_block(const AttnParams& p, T* Ks, T* Vs, int b, int hkv, int n0, int sk) {
  const T* kbase = static_cast<const T*>(p.k);
  const T* vbase = static_cast<const T*>(p.v);
  if (p.block_table) {
    tc_load_tile<T, D, NT>(Ks, BN, sk - n0, p.d, [&](int r) { return kbase + kv_off(p, b, n0 + r, hkv); }, kbase);
    tc_load_tile<T, D, NT>(Vs, BN, sk - n0, p.d, [&](int r) { return vbase + kv_off(p, b, n0 + r, hkv); }, vbase);
  } else {
    tc_load_tile_strided<T, D, NT, BN>(Ks, sk - n0, p.d, kbase + kv_off(p, b, n0, hkv), p.kv_ss);
    tc_load_tile_strided<T, D, NT, BN>(Vs, sk - n0, p.d, vbase + kv_off(p, b, n0, hkv), p.kv_ss);
  }
}

// Which of dK and dV a dK/dV kernel computes. Above d = 128 the pass runs as two launches, PART_DV (S,
// P and dV) and PART_DK (S, dP, dS and dK): both accumulators of a warp's 16 keys x 256 columns would
// take 256 registers. The split computes S twice: 5 products per block pair instead of 4.
enum DkdvPart : int { PART_DK = 1, PART_DV = 2, PART_BOTH = 3 };

// One m16 tile of dK (times scale) and dV from the accumulators (rows j and j + 8 of lane group g, n8
// tiles dt0 ... of d), in the output dtype; rows past sk and columns past d are not written. PART: which
// of the two.
template <typename T, int NT, int PART = PART_BOTH>
FA_DEV void store_dkdv_tile(const AttnParams& p, const float (&dk)[NT][4], const float (&dv)[NT][4], int b, int hkv,
                            int j, int sk, int dt0, int tq) {
  T* dkb = static_cast<T*>(p.dk);
  T* dvb = static_cast<T*>(p.dv);
#pragma unroll
  for (int hf = 0; hf < 2; hf++) {
    if (j + 8 * hf >= sk) continue;
    const long long o = kv_off(p, b, j + 8 * hf, hkv);
#pragma unroll
    for (int dt = 0; dt < NT; dt++) {
      const int c = (dt0 + dt) * 8 + tq * 2;
      if (c < p.d) {
        if constexpr ((PART & PART_DK) != 0)
          *reinterpret_cast<uint32_t*>(dkb + o + c) = pack2<T>(dk[dt][2 * hf] * p.scale, dk[dt][2 * hf + 1] * p.scale);
        if constexpr ((PART & PART_DV) != 0)
          *reinterpret_cast<uint32_t*>(dvb + o + c) = pack2<T>(dv[dt][2 * hf], dv[dt][2 * hf + 1]);
      }
    }
  }
}

// Query blocks of BM rows whose rows see some key of the block at n0: a contiguous range [mb_lo, mb_hi)
// (lo and hi are monotone in the row), empty when mb_lo >= mb_hi.
template <int BM, int BN>
FA_DEV void live_query_blocks(const AttnParams& p, int sq, int sk, int n0, int& mb_lo, int& mb_hi) {
  const int nmb_all = (sq + BM - 1) / BM;
  mb_lo = nmb_all;
  mb_hi = 0;
  for (int mb = 0; mb < nmb_all; mb++) {
    const int m0 = mb * BM, last = min(m0 + BM, sq) - 1;
    int lo_f, hi_f, lo_l, hi_l;
    key_range(p, m0, sq, sk, lo_f, hi_f);
    key_range(p, last, sq, sk, lo_l, hi_l);
    if (block_pair_live<BN>(lo_f, hi_l, n0)) {
      mb_lo = min(mb_lo, mb);
      mb_hi = mb + 1;
    }
  }
}

// STAGES = 2: the next query block's Q, dO, lse and D load while this one is computed.
// DQ != DQ_NONE: dq_acc is float32 [lse rows][d] scratch, dq_sem one counter per (batch, head, query
// block), zeroed before the launch (DQ_ORDERED). PART: dK, dV or both (DkdvPart).
template <typename T, int D, int BM, int NW, bool EXTRAS, int STAGES, int DQ = DQ_NONE, int PART = PART_BOTH>
__global__ void __launch_bounds__(NW * 32) tc_bwd_dkdv_kernel(AttnParams p, float* dq_acc, unsigned* dq_sem) {
  constexpr int BN = 16 * NW;
  constexpr int NT = NW * 32;
  constexpr int NBM = BM / 8;
  constexpr int ND = D / 8;
  constexpr int NS = STAGES < 2 ? 1 : 2;
  static_assert(DQ == DQ_NONE || (!EXTRAS && STAGES == 2), "the fused dQ is built for the plain pipelined kernel");
  static_assert(DQ == DQ_NONE || PART == PART_BOTH, "the fused dQ needs dS");
  constexpr bool WANT_DK = (PART & PART_DK) != 0, WANT_DV = (PART & PART_DV) != 0;
  extern __shared__ __align__(128) unsigned char smem_raw[];
  T* Ks = reinterpret_cast<T*>(smem_raw);
  T* Vs = Ks + BN * D;
  T* Qs0 = Vs + BN * D;                                      // [NS][BM][D]
  T* dOs0 = Qs0 + NS * BM * D;                               // [NS][BM][D]
  T* dSs = dOs0 + NS * BM * D;                               // [BM][BN] dS (fused dQ only)
  constexpr int DS_ELEMS = DQ == DQ_NONE ? 0 : BM * BN;
  float* lse_s0 = reinterpret_cast<float*>(dSs + DS_ELEMS);  // [NS][BM] raw (LSE_ASYNC) or log2, +inf = none
  float* dsum_s0 = lse_s0 + NS * BM;                         // [NS][BM]
  float* lsen_s0 = dsum_s0 + NS * BM;                        // [NS][BM] natural units (EXTRAS)

  check_smem_alignment(smem_raw);
  // Fused: key blocks along z, the slowest grid dimension (see tc_dkdv_launch).
  const int nb = DQ == DQ_NONE ? blockIdx.x : blockIdx.z;
  const int hkv = DQ == DQ_NONE ? blockIdx.y : blockIdx.x;
  const int b = DQ == DQ_NONE ? blockIdx.z : blockIdx.y;
  const int sq = seqlen_q(p, b), sk = seqlen_k(p, b);
  const int n0 = nb * BN;
  if (n0 >= sk) return;
  const int off = sk - sq, d = p.d, G = p.group;
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
  const int g = lane >> 2, tq = lane & 3;
  const T* qbase = static_cast<const T*>(p.q);
  const T* obase = static_cast<const T*>(p.dout);
  load_kv_block<T, D, NT, BN>(p, Ks, Vs, b, hkv, n0, sk);
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

  int mb_lo, mb_hi;
  live_query_blocks<BM, BN>(p, sq, sk, n0, mb_lo, mb_hi);
  const int nmb = mb_hi > mb_lo ? mb_hi - mb_lo : 0;
  const int iters = G * nmb;
  // Step `it` is query block mb_hi - 1 - it / G of head hkv * G + it % G: the last query block first,
  // the heads of the group inside, so that every key block of a causal (or windowed) problem reaches a
  // given query block at the same step and the dQ turns rarely wait.
  auto step_mb = [&](int it) { return mb_hi - 1 - it / G; };
  auto step_h = [&](int it) { return hkv * G + it % G; };
  // Loads step `it` into stage `stage`: Q and dO by cp.async; lse and D by cp.async too (LSE_ASYNC,
  // raw natural-log lse, converted where used) or by plain stores (lse in log2 units, +inf for none).
  constexpr bool LSE_ASYNC = !EXTRAS && STAGES >= 2;
  auto load_q = [&](int it, int stage) {
    const int h = step_h(it);
    const int m0 = step_mb(it) * BM;
    // Strided loads (tc_load_tile_strided): the per-chunk index arithmetic was most of the loop's
    // non-mma instructions in the forward (run 4).
    const long long qo = q_off(p, b, m0, h);
    tc_load_tile_strided<T, D, NT, BM>(Qs0 + stage * BM * D, sq - m0, d, qbase + qo, p.q_ss);
    tc_load_tile_strided<T, D, NT, BM>(dOs0 + stage * BM * D, sq - m0, d, obase + qo, p.q_ss);
    if constexpr (LSE_ASYNC) {
      // Raw lse and D by cp.async with the tiles (rows past the end zero-filled: their Q and dO rows are
      // zero too, so they add nothing); the plain loads below made warp 0 wait for two global loads
      // on every step while the other warps went ahead to the next barrier (run 11).
      for (int r = tid; r < BM; r += NT) {
        const int i = m0 + r;
        const bool ok = i < sq;
        const long long li = ok ? lse_idx(p, b, h, i) : 0;
        cp_async4(lse_s0 + stage * BM + r, p.lse_in + li, ok ? 4 : 0);
        cp_async4(dsum_s0 + stage * BM + r, p.dsum + li, ok ? 4 : 0);
      }
    } else {
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

  const int nmb_grid = (p.seq_q + BM - 1) / BM;
  unsigned* release = nullptr;  // the counter this CTA still has to advance (DQ_ORDERED)
  for (int it = 0; it < iters; it++) {
    const int h = step_h(it);
    const int mb = step_mb(it);
    const int m0 = mb * BM;
    const int stage = STAGES >= 2 ? (it & 1) : 0;
    const T* Qs = Qs0 + stage * BM * D;
    const T* dOs = dOs0 + stage * BM * D;
    const float* lse_s = lse_s0 + stage * BM;
    const float* dsum_s = dsum_s0 + stage * BM;
    const float* lsen_s = lsen_s0 + stage * BM;
    bool need_mask, live;
    int dq_rank, dq_count;  // this key block's place among the query block's contributors
    {
      const int last = min(m0 + BM, sq) - 1;
      int lo_f, hi_f, lo_l, hi_l;
      key_range(p, m0, sq, sk, lo_f, hi_f);
      key_range(p, last, sq, sk, lo_l, hi_l);
      need_mask = EXTRAS || !(n0 >= lo_l && n0 + BN <= hi_f);
      live = block_pair_live<BN>(lo_f, hi_l, n0);
      dq_rank = nb - lo_f / BN;
      dq_count = (hi_l + BN - 1) / BN - lo_f / BN;
    }
    if constexpr (STAGES >= 2) {
      cp_async_wait<0>();
      __syncthreads();  // block it in place; every warp is done with the other stage
      if constexpr (DQ == DQ_ORDERED) {
        // The previous step's dQ adds (every thread's, ordered before this barrier) are published by
        // one fence and one increment: the release half of the turn, without a barrier of its own.
        // Run 11 (second device run) moved it one barrier later so that the fence would find the adds
        // completed: 6 % slower. The next key block's wait is what counts.
        if (tid == 0 && release) {
          __threadfence();
          atomicAdd(release, 1u);
        }
        release = nullptr;
      }
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
      // S^T = K Q^T (rows: this warp's 16 keys; columns: BM queries), and with SDP dP^T = V dO^T in
      // the same loop: alone, each product is NBM accumulator chains D / 16 deep, too few independent
      // mma for 2 warps per scheduler (Nsight, run 11: HMMA pipe 41 % busy in this kernel, "wait" the
      // largest stall; the dQ pass, which interleaves its S and dP, 52 %).
      constexpr bool SDP = !EXTRAS && WANT_DK;
      float st[NBM][4], dpt[NBM][4];
#pragma unroll
      for (int nt = 0; nt < NBM; nt++)
#pragma unroll
        for (int e = 0; e < 4; e++) st[nt][e] = dpt[nt][e] = 0.f;
#pragma unroll
      for (int ks = 0; ks < D / 16; ks++) {
        uint32_t a[4], a2[4];
        if constexpr (KREG) {
#pragma unroll
          for (int e = 0; e < 4; e++) {
            a[e] = ka[ks][e];
            if constexpr (SDP) a2[e] = va[ks][e];
          }
        } else {
          ld_a<D>(a, Ks, warp * 16, ks, lane);
          if constexpr (SDP) ld_a<D>(a2, Vs, warp * 16, ks, lane);
        }
#pragma unroll
        for (int nt = 0; nt < NBM; nt += 2) {
          uint32_t bb[4];
          ld_b<D>(bb, Qs, nt * 8, ks, lane);
          mma16816<T>(st[nt], a, bb);
          mma16816<T>(st[nt + 1], a, bb + 2);
          if constexpr (SDP) {
            uint32_t bo[4];
            ld_b<D>(bo, dOs, nt * 8, ks, lane);
            mma16816<T>(dpt[nt], a2, bo);
            mma16816<T>(dpt[nt + 1], a2, bo + 2);
          }
        }
      }
      // P^T (float32, in place); EXTRAS keeps each pair's dropout weight and softcap slope.
      float wv[EXTRAS ? NBM : 1][4], sl[EXTRAS ? NBM : 1][4];
      // This thread's 2 * NBM query columns' lse in log2 units; -inf (a row that sees nothing) -> +inf.
      float l2[NBM][2];
#pragma unroll
      for (int nt = 0; nt < NBM; nt++)
#pragma unroll
        for (int u = 0; u < 2; u++) {
          const float lr = lse_s[nt * 8 + tq * 2 + u];
          l2[nt][u] = LSE_ASYNC ? (lr == -INFINITY ? INFINITY : lr * LOG2E) : lr;
        }
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
            P = exp2_approx(st[nt][e] * scale_log2 - l2[nt][e & 1]);
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
      for (int kk = 0; kk < (WANT_DV ? BM / 16 : 0); kk++) {
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
      // dP^T = V dO^T (here unless computed with S^T above, or not needed).
#pragma unroll
      for (int ks = 0; ks < (SDP || !WANT_DK ? 0 : D / 16); ks++) {
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
      for (int nt = 0; nt < (WANT_DK ? NBM : 0); nt++)
#pragma unroll
        for (int e = 0; e < 4; e++) {
          const int ic = nt * 8 + tq * 2 + (e & 1);
          if constexpr (EXTRAS) {
            st[nt][e] = st[nt][e] * (dpt[nt][e] * wv[nt][e] - dsum_s[ic]) * sl[nt][e];
          } else {
            st[nt][e] = st[nt][e] * (dpt[nt][e] - dsum_s[ic]);
          }
        }
      if constexpr (DQ != DQ_NONE) {
        // dS (rounded to T, as dK uses it) into shared memory as [query][key] for dQ += dS K.
#pragma unroll
        for (int nt = 0; nt < NBM; nt++)
#pragma unroll
          for (int e = 0; e < 4; e++)
            dSs[swz<BN>(nt * 8 + tq * 2 + (e & 1), warp * 16 + g + 8 * (e >> 1))] = from_f<T>(st[nt][e]);
      }
      // dK += dS^T Q.
#pragma unroll
      for (int kk = 0; kk < (WANT_DK ? BM / 16 : 0); kk++) {
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
    if constexpr (DQ != DQ_NONE) {
      if (live) {
        __syncthreads();  // dS complete
        // dQ tile (BM x D) = dS (BM x BN) K (BN x D): warps WM along the rows, WN along the columns.
        constexpr int WM = BM / 16;
        constexpr int WN = NW / WM;
        constexpr int NDW = ND / WN;
        static_assert(NW % WM == 0 && NDW % 2 == 0, "dQ warp tiling");
        const int wm = warp % WM, wn = warp / WM;
        float dqp[NDW][4];
#pragma unroll
        for (int dt = 0; dt < NDW; dt++)
#pragma unroll
          for (int e = 0; e < 4; e++) dqp[dt][e] = 0.f;
#pragma unroll
        for (int kk = 0; kk < BN / 16; kk++) {
          uint32_t a[4];
          ld_a<BN>(a, dSs, wm * 16, kk, lane);
#pragma unroll
          for (int dt = 0; dt < NDW; dt += 2) {
            uint32_t bb[4];
            ld_bt<D>(bb, Ks, kk, wn * NDW + dt, lane);
            mma16816<T>(dqp[dt], a, bb);
            mma16816<T>(dqp[dt + 1], a, bb + 2);
          }
        }
        // The acquire half of the turn: wait until the dq_rank key blocks before this one have added.
        // After the product, so that the next key block waits only for the adds.
        unsigned* cnt = dq_sem + ((long long)(b * p.hq + h) * nmb_grid + mb);
        if constexpr (DQ == DQ_ORDERED) {
          if (dq_rank > 0) {
            if (tid == 0)
              while (ld_acquire_gpu(cnt) < (unsigned)dq_rank) {
              }
            __syncthreads();
          }
        }
        // The first contributor stores, the middle ones add at L2, the last adds what is there to its
        // own tile and writes dQ (times the scale) in the output dtype. One order on every call.
        const bool first = dq_rank == 0, lastc = dq_rank + 1 == dq_count;
        T* dqb = static_cast<T*>(p.dq);
#pragma unroll
        for (int hf = 0; hf < 2; hf++) {
          const int i = m0 + wm * 16 + g + 8 * hf;
          if (i >= sq) continue;
          float* arow = dq_acc + lse_idx(p, b, h, i) * d;
          T* orow = dqb + q_off(p, b, i, h);
#pragma unroll
          for (int dt = 0; dt < NDW; dt++) {
            const int c = (wn * NDW + dt) * 8 + tq * 2;
            if (c >= d) continue;
            const float x = dqp[dt][2 * hf], y = dqp[dt][2 * hf + 1];
            if constexpr (DQ == DQ_ATOMIC) {
              red_add2(arow + c, x, y);
            } else if (first && lastc) {
              *reinterpret_cast<uint32_t*>(orow + c) = pack2<T>(x * p.scale, y * p.scale);
            } else if (first) {
              __stcg(reinterpret_cast<float2*>(arow + c), make_float2(x, y));
            } else if (lastc) {
              const float2 o = __ldcg(reinterpret_cast<const float2*>(arow + c));
              *reinterpret_cast<uint32_t*>(orow + c) = pack2<T>((o.x + x) * p.scale, (o.y + y) * p.scale);
            } else {
              red_add2(arow + c, x, y);
            }
          }
        }
        if constexpr (DQ == DQ_ORDERED) {
          if (!lastc) release = cnt;
        }
      }
    }
  }
  if constexpr (DQ == DQ_ORDERED) {
    __syncthreads();
    if (tid == 0 && release) {
      __threadfence();
      atomicAdd(release, 1u);
    }
  }
  cp_async_wait<0>();
  store_dkdv_tile<T, ND, PART>(p, dk, dv, b, hkv, jr[0], sk, 0, tq);
}

FA_DEV void bar_sync_n(int id, int n) { asm volatile("bar.sync %0, %1;" ::"r"(id), "r"(n) : "memory"); }
FA_DEV void bar_arrive_n(int id, int n) { asm volatile("bar.arrive %0, %1;" ::"r"(id), "r"(n) : "memory"); }

// The pair kernel's two products of the same shape, S^T = K Q^T (warp 0) and dP^T = V dO^T (warp 1):
// the warp's 32 rows of A (keys kr0 ...) against every row of B (the step's queries), each B fragment
// serving both m-tiles.
template <typename T, int D, int NBM>
FA_DEV void pair_product_t(float (&acc)[2][NBM][4], const T* As, const T* Bs, int kr0, int lane) {
#pragma unroll
  for (int mt = 0; mt < 2; mt++)
#pragma unroll
    for (int nt = 0; nt < NBM; nt++)
#pragma unroll
      for (int e = 0; e < 4; e++) acc[mt][nt][e] = 0.f;
#pragma unroll
  for (int ks = 0; ks < D / 16; ks++) {
    uint32_t a[2][4];
#pragma unroll
    for (int mt = 0; mt < 2; mt++) ld_a<D>(a[mt], As, kr0 + mt * 16, ks, lane);
#pragma unroll
    for (int nt = 0; nt < NBM; nt += 2) {
      uint32_t bb[4];
      ld_b<D>(bb, Bs, nt * 8, ks, lane);
#pragma unroll
      for (int mt = 0; mt < 2; mt++) {
        mma16816<T>(acc[mt][nt], a[mt], bb);
        mma16816<T>(acc[mt][nt + 1], a[mt], bb + 2);
      }
    }
  }
}

// dK/dV with warp pairs (run 14; d = 128, no EXTRAS, no fused dQ). Each pair of warps owns 32 keys
// and splits the work by product, then by column: warp 0 of the pair computes S^T and P^T for the
// 32 keys, warp 1 dP^T (the same mma, in the same order, as the one-warp kernel); dP^T goes to warp 0
// through shared memory (float32, in the accumulator layout: each lane reads back what the same lane
// of the other warp wrote), warp 0 forms dS^T and stores P^T and dS^T (16-bit, as the products use
// them) for warp 1; then each warp accumulates dV and dK for the 32 keys over its half of d. Per
// pair and step of 32 queries: 104 ldmatrix and 20 KB of other shared traffic for 256 mma, ~254 B
// per mma against the one-warp kernel's 320 (each B fragment of Q and dO serves two key m-tiles).
// The pair synchronises by named barriers, producer arrive / consumer sync, so neither producer
// waits. Gradients bit-identical to tc_bwd_dkdv_kernel (the same sums in the same order, rounded at
// the same points).
template <typename T, int D, int BM, int NP>
__global__ void __launch_bounds__(NP * 64) tc_bwd_dkdv_pair_kernel(AttnParams p) {
  constexpr int NW = 2 * NP;
  constexpr int NT = NW * 32;
  constexpr int BN = 32 * NP;
  constexpr int NBM = BM / 8;
  constexpr int NDH = D / 16;  // n8 tiles of dK / dV per warp (half of d)
  constexpr int PLD = BM + 8;  // padded row of the P^T / dS^T tiles: ldmatrix rows 16 B apart in banks
  static_assert(BM % 16 == 0 && NDH % 2 == 0, "pair tiling");
  extern __shared__ __align__(128) unsigned char smem_raw[];
  T* Ks = reinterpret_cast<T*>(smem_raw);
  T* Vs = Ks + BN * D;
  T* Qs0 = Vs + BN * D;     // [2][BM][D]
  T* dOs0 = Qs0 + 2 * BM * D;  // [2][BM][D]
  float* lse_s0 = reinterpret_cast<float*>(dOs0 + 2 * BM * D);  // [2][BM] raw lse
  float* dsum_s0 = lse_s0 + 2 * BM;                              // [2][BM]
  float4* xbuf0 = reinterpret_cast<float4*>(dsum_s0 + 2 * BM);   // [NP][2][NBM][32] dP^T
  T* pbuf0 = reinterpret_cast<T*>(xbuf0 + NP * 2 * NBM * 32);   // [NP][32][PLD] P^T
  T* dsbuf0 = pbuf0 + NP * 32 * PLD;                             // [NP][32][PLD] dS^T

  check_smem_alignment(smem_raw);
  const int nb = blockIdx.x, hkv = blockIdx.y, b = blockIdx.z;
  const int sq = seqlen_q(p, b), sk = seqlen_k(p, b);
  const int n0 = nb * BN;
  if (n0 >= sk) return;
  const int d = p.d, G = p.group;
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
  const int g = lane >> 2, tq = lane & 3;
  const int pr = warp >> 1, role = warp & 1;
  const int kr0 = pr * 32;  // the pair's first key row in the block
  float4* xbuf = xbuf0 + pr * 2 * NBM * 32;
  T* pbuf = pbuf0 + pr * 32 * PLD;
  T* dsbuf = dsbuf0 + pr * 32 * PLD;
  const int bar_x = 1 + 2 * pr, bar_p = 2 + 2 * pr;  // 0 is __syncthreads'
  const T* qbase = static_cast<const T*>(p.q);
  const T* obase = static_cast<const T*>(p.dout);
  load_kv_block<T, D, NT, BN>(p, Ks, Vs, b, hkv, n0, sk);
  cp_async_commit();

  float dk[2][NDH][4], dv[2][NDH][4];
#pragma unroll
  for (int mt = 0; mt < 2; mt++)
#pragma unroll
    for (int dt = 0; dt < NDH; dt++)
#pragma unroll
      for (int e = 0; e < 4; e++) dk[mt][dt][e] = dv[mt][dt][e] = 0.f;
  const float scale_log2 = p.scale * LOG2E;

  int mb_lo, mb_hi;
  live_query_blocks<BM, BN>(p, sq, sk, n0, mb_lo, mb_hi);
  const int nmb = mb_hi > mb_lo ? mb_hi - mb_lo : 0;
  const int iters = G * nmb;
  auto step_mb = [&](int it) { return mb_hi - 1 - it / G; };
  auto step_h = [&](int it) { return hkv * G + it % G; };
  auto load_q = [&](int it, int stage) {
    const int h = step_h(it);
    const int m0 = step_mb(it) * BM;
    const long long qo = q_off(p, b, m0, h);
    tc_load_tile_strided<T, D, NT, BM>(Qs0 + stage * BM * D, sq - m0, d, qbase + qo, p.q_ss);
    tc_load_tile_strided<T, D, NT, BM>(dOs0 + stage * BM * D, sq - m0, d, obase + qo, p.q_ss);
    for (int r = tid; r < BM; r += NT) {
      const int i = m0 + r;
      const bool ok = i < sq;
      const long long li = ok ? lse_idx(p, b, h, i) : 0;
      cp_async4(lse_s0 + stage * BM + r, p.lse_in + li, ok ? 4 : 0);
      cp_async4(dsum_s0 + stage * BM + r, p.dsum + li, ok ? 4 : 0);
    }
  };
  if (iters > 0) load_q(0, 0);
  cp_async_commit();

  // Lane addresses of the A fragments of the pair's P^T / dS^T tiles (row lane % 16, chunk lane / 16).
  const uint32_t pa_addr = smem_u32(pbuf) + ((lane & 15) * PLD + (lane >> 4) * 8) * (int)sizeof(T);
  const uint32_t da_addr = smem_u32(dsbuf) + ((lane & 15) * PLD + (lane >> 4) * 8) * (int)sizeof(T);
  const int dh0 = role * NDH;  // this warp's first n8 tile of d

  for (int it = 0; it < iters; it++) {
    const int mb = step_mb(it);
    const int m0 = mb * BM;
    const int stage = it & 1;
    const T* Qs = Qs0 + stage * BM * D;
    const T* dOs = dOs0 + stage * BM * D;
    bool need_mask;
    {
      const int last = min(m0 + BM, sq) - 1;
      int lo_f, hi_f, lo_l, hi_l;
      key_range(p, m0, sq, sk, lo_f, hi_f);
      key_range(p, last, sq, sk, lo_l, hi_l);
      need_mask = !(n0 >= lo_l && n0 + BN <= hi_f);
    }
    cp_async_wait<0>();
    __syncthreads();  // step it in place; every warp is done with the other stage
    if (it + 1 < iters) load_q(it + 1, stage ^ 1);
    cp_async_commit();

    uint32_t pa[2][BM / 16][4], da[2][BM / 16][4];
    if (role == 0) {
      const float* lse_s = lse_s0 + stage * BM;
      const float* dsum_s = dsum_s0 + stage * BM;
      float st[2][NBM][4];
      pair_product_t<T, D, NBM>(st, Ks, Qs, kr0, lane);
#pragma unroll
      for (int nt = 0; nt < NBM; nt++)
#pragma unroll
        for (int u = 0; u < 2; u++) {
          const float lr = lse_s[nt * 8 + tq * 2 + u];
          const float l2 = lr == -INFINITY ? INFINITY : lr * LOG2E;
#pragma unroll
          for (int mt = 0; mt < 2; mt++) {
            st[mt][nt][u] = exp2_approx(st[mt][nt][u] * scale_log2 - l2);
            st[mt][nt][u + 2] = exp2_approx(st[mt][nt][u + 2] * scale_log2 - l2);
          }
        }
      if (need_mask) {
        asm volatile("");  // a real branch (see tc_fwd.cuh)
#pragma unroll
        for (int nt = 0; nt < NBM; nt++)
#pragma unroll
          for (int u = 0; u < 2; u++) {
            int lo, hi;
            key_range(p, m0 + nt * 8 + tq * 2 + u, sq, sk, lo, hi);
#pragma unroll
            for (int mt = 0; mt < 2; mt++)
#pragma unroll
              for (int hf = 0; hf < 2; hf++) {
                const int j = n0 + kr0 + mt * 16 + g + 8 * hf;
                if (!(j >= lo && j < hi)) st[mt][nt][u + 2 * hf] = 0.f;
              }
          }
      }
      bar_sync_n(bar_x, 64);  // warp 1's dP^T is in xbuf
#pragma unroll
      for (int mt = 0; mt < 2; mt++)
#pragma unroll
        for (int kk = 0; kk < BM / 16; kk++) acc_to_a<T>(pa[mt][kk], st[mt][2 * kk], st[mt][2 * kk + 1]);
#pragma unroll
      for (int mt = 0; mt < 2; mt++)
#pragma unroll
        for (int nt = 0; nt < NBM; nt++) {
          const float4 x = xbuf[(mt * NBM + nt) * 32 + lane];
          const float ds0 = dsum_s[nt * 8 + tq * 2], ds1 = dsum_s[nt * 8 + tq * 2 + 1];
          st[mt][nt][0] *= x.x - ds0;
          st[mt][nt][1] *= x.y - ds1;
          st[mt][nt][2] *= x.z - ds0;
          st[mt][nt][3] *= x.w - ds1;
        }
#pragma unroll
      for (int mt = 0; mt < 2; mt++)
#pragma unroll
        for (int kk = 0; kk < BM / 16; kk++) acc_to_a<T>(da[mt][kk], st[mt][2 * kk], st[mt][2 * kk + 1]);
      // P^T and dS^T for warp 1, in the A fragments' own packing: row g (+8), columns tq * 2 (+8).
#pragma unroll
      for (int mt = 0; mt < 2; mt++)
#pragma unroll
        for (int kk = 0; kk < BM / 16; kk++)
#pragma unroll
          for (int r = 0; r < 4; r++) {
            const int o = (mt * 16 + g + 8 * (r & 1)) * PLD + kk * 16 + 8 * (r >> 1) + tq * 2;
            *reinterpret_cast<uint32_t*>(pbuf + o) = pa[mt][kk][r];
            *reinterpret_cast<uint32_t*>(dsbuf + o) = da[mt][kk][r];
          }
      bar_arrive_n(bar_p, 64);
    } else {
      float dpt[2][NBM][4];
      pair_product_t<T, D, NBM>(dpt, Vs, dOs, kr0, lane);
#pragma unroll
      for (int mt = 0; mt < 2; mt++)
#pragma unroll
        for (int nt = 0; nt < NBM; nt++)
          xbuf[(mt * NBM + nt) * 32 + lane] = make_float4(dpt[mt][nt][0], dpt[mt][nt][1], dpt[mt][nt][2], dpt[mt][nt][3]);
      bar_arrive_n(bar_x, 64);
      bar_sync_n(bar_p, 64);  // warp 0's P^T and dS^T are in pbuf / dsbuf
#pragma unroll
      for (int mt = 0; mt < 2; mt++)
#pragma unroll
        for (int kk = 0; kk < BM / 16; kk++) {
          const uint32_t o = (mt * 16 * PLD + kk * 16) * (int)sizeof(T);
          ldsm_x4(pa[mt][kk], pa_addr + o);
          ldsm_x4(da[mt][kk], da_addr + o);
        }
    }
    // dV += P~^T dO and dK += dS^T Q over this warp's half of d.
#pragma unroll
    for (int kk = 0; kk < BM / 16; kk++)
#pragma unroll
      for (int dt = 0; dt < NDH; dt += 2) {
        uint32_t bb[4];
        ld_bt<D>(bb, dOs, kk, dh0 + dt, lane);
#pragma unroll
        for (int mt = 0; mt < 2; mt++) {
          mma16816<T>(dv[mt][dt], pa[mt][kk], bb);
          mma16816<T>(dv[mt][dt + 1], pa[mt][kk], bb + 2);
        }
        ld_bt<D>(bb, Qs, kk, dh0 + dt, lane);
#pragma unroll
        for (int mt = 0; mt < 2; mt++) {
          mma16816<T>(dk[mt][dt], da[mt][kk], bb);
          mma16816<T>(dk[mt][dt + 1], da[mt][kk], bb + 2);
        }
      }
  }
  cp_async_wait<0>();
#pragma unroll
  for (int mt = 0; mt < 2; mt++) store_dkdv_tile<T, NDH>(p, dk[mt], dv[mt], b, hkv, n0 + kr0 + mt * 16 + g, sk, dh0, tq);
}

template <typename T, int D, int BM, int NP> cudaError_t tc_dkdv_pair_launch(const AttnParams& p, cudaStream_t st) {
  constexpr int BN = 32 * NP;
  constexpr int NBM = BM / 8;
  constexpr size_t smem = (size_t)(2 * BN + 4 * BM) * D * sizeof(T) + 4 * BM * sizeof(float) +
                          (size_t)NP * 2 * NBM * 32 * 16 + (size_t)NP * 2 * 32 * (BM + 8) * sizeof(T);
  auto kern = tc_bwd_dkdv_pair_kernel<T, D, BM, NP>;
  if (smem > 48 * 1024) {
    cudaError_t e = cudaFuncSetAttribute(kern, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem);
    if (e != cudaSuccess) return e;
  }
  dim3 grid((unsigned)((p.seq_k + BN - 1) / BN), (unsigned)p.hk, (unsigned)p.batch);
  if (grid.x == 0 || grid.y == 0 || grid.z == 0) return cudaSuccess;
  kern<<<grid, NP * 64, smem, st>>>(p);
  return cudaGetLastError();
}

// STAGES = 2: the next key block's K and V load while this one is computed.
// STAGES = 3 (run 11): a 3-stage K/V ring, and each key block's dQ product (dS K) issued inside the
// next block's S / dP loop, so that two independent mma streams interleave (dS kept as packed A
// fragments, 8 registers per m-tile; the previous block's K stays in its stage).
// MT: m16 tiles per warp (run 14). With MT = 2 each K / V / K^T B fragment read from shared memory
// feeds two m-tiles (twice the independent accumulator chains per warp, half the B traffic per mma);
// Q and dO then stay in registers only where they fit (d = 64): at d = 128 the dQ accumulators alone
// take 128 registers.
template <typename T, int D, int BN, int NW, bool EXTRAS, int STAGES, int MT = 1>
__global__ void __launch_bounds__(NW * 32) tc_bwd_dq_kernel(AttnParams p) {
  constexpr int BM = 16 * NW * MT;
  constexpr int NT = NW * 32;
  constexpr int NBN = BN / 8;
  constexpr int ND = D / 8;
  constexpr int NS = STAGES < 2 ? 1 : STAGES;
  constexpr bool DEFER = STAGES >= 3;
  static_assert(!DEFER || ((BN / 16) * (ND / 2)) % (D / 16) == 0, "whole dQ units per k step");
  extern __shared__ __align__(128) unsigned char smem_raw[];
  T* Qs = reinterpret_cast<T*>(smem_raw);
  T* dOs = Qs + BM * D;
  T* Ks0 = dOs + BM * D;
  T* Vs0 = Ks0 + NS * BN * D;

  check_smem_alignment(smem_raw);
  if (p.run_if && *p.run_if == 0) return;  // FA2_FIX's recompute, not needed
  const int mb = gridDim.x - 1 - blockIdx.x;
  const int h = blockIdx.y, b = blockIdx.z, hkv = h / p.group;
  const int sq = seqlen_q(p, b), sk = seqlen_k(p, b);
  const int m0 = mb * BM;
  if (m0 >= sq) return;
  const int off = sk - sq, d = p.d;
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
  const int g = lane >> 2, tq = lane & 3;
  const int wr0 = warp * 16 * MT;  // this warp's first row in the block
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

  float dq[MT][ND][4];
#pragma unroll
  for (int mt = 0; mt < MT; mt++)
#pragma unroll
    for (int dt = 0; dt < ND; dt++)
#pragma unroll
      for (int e = 0; e < 4; e++) dq[mt][dt][e] = 0.f;
  int ri[MT][2], rlo[MT][2], rhi[MT][2];
  float lse2[MT][2], lsen[MT][2], dsm[MT][2];
#pragma unroll
  for (int mt = 0; mt < MT; mt++)
#pragma unroll
    for (int hf = 0; hf < 2; hf++) {
      ri[mt][hf] = m0 + wr0 + mt * 16 + g + 8 * hf;
      key_range(p, ri[mt][hf], sq, sk, rlo[mt][hf], rhi[mt][hf]);
      float lse = -INFINITY, ds = 0.f;
      if (ri[mt][hf] < sq) {
        const long long li = lse_idx(p, b, h, ri[mt][hf]);
        lse = p.lse_in[li];
        ds = p.dsum[li];
      }
      lse2[mt][hf] = lse == -INFINITY ? INFINITY : lse * LOG2E;
      lsen[mt][hf] = lse;
      dsm[mt][hf] = ds;
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
  // QREG: this warp's rows of Q and dO stay in registers as A fragments (2 * MT * D / 4 registers)
  // instead of 2 * MT * D / 16 ldmatrix per key block, a quarter of the pass's shared-memory reads
  // at MT = 1 (run 9). Not at d = 256, where they would take 128 registers next to dQ's 128.
  constexpr bool QREG = !EXTRAS && D <= 128 && (MT == 1 || D <= 64);
  uint32_t qa[QREG ? MT : 1][QREG ? D / 16 : 1][4], oa[QREG ? MT : 1][QREG ? D / 16 : 1][4];
  if constexpr (QREG) {
    if (nb_lo < nb_hi) {
      cp_async_wait<0>();
      __syncthreads();
#pragma unroll
      for (int mt = 0; mt < MT; mt++)
#pragma unroll
        for (int ks = 0; ks < D / 16; ks++) {
          ld_a<D>(qa[mt][ks], Qs, wr0 + mt * 16, ks, lane);
          ld_a<D>(oa[mt][ks], dOs, wr0 + mt * 16, ks, lane);
        }
    }
  }
  // DEFER: the previous block's dS (packed A fragments, zero before the first block) and K stage.
  uint32_t dsa[MT][DEFER ? BN / 16 : 1][4];
#pragma unroll
  for (int mt = 0; mt < MT; mt++)
#pragma unroll
    for (int kk = 0; kk < (DEFER ? BN / 16 : 1); kk++)
#pragma unroll
      for (int e = 0; e < 4; e++) dsa[mt][kk][e] = 0u;
  const T* Kprev = Ks0;
  for (int nb = nb_lo; nb < nb_hi; nb++) {
    const int j0 = nb * BN;
    const int stage = STAGES >= 2 ? (nb - nb_lo) % NS : 0;
    const T* Ks = Ks0 + stage * BN * D;
    const T* Vs = Vs0 + stage * BN * D;
    if (nb == nb_lo) Kprev = Ks;  // dsa is zero: any loaded tile will do
    if constexpr (STAGES >= 2) {
      cp_async_wait<0>();
      // Block nb in place; every warp is done with the stage the next load overwrites (with DEFER, the
      // one two blocks back: the previous block's K is still read by its deferred dQ product).
      __syncthreads();
      if (nb + 1 < nb_hi) load_kv(nb + 1, (stage + 1) % NS);
      cp_async_commit();
    } else {
      __syncthreads();  // the previous K / V are no longer read
      load_kv(nb, 0);
      cp_async_commit();
      cp_async_wait<0>();
      __syncthreads();
    }
    const bool need_mask = EXTRAS || !(j0 >= lo_last && j0 + BN <= hi_first);

    float s[MT][NBN][4], dp[MT][NBN][4];
#pragma unroll
    for (int mt = 0; mt < MT; mt++)
#pragma unroll
      for (int nt = 0; nt < NBN; nt++)
#pragma unroll
        for (int e = 0; e < 4; e++) s[mt][nt][e] = dp[mt][nt][e] = 0.f;
#pragma unroll
    for (int ks = 0; ks < D / 16; ks++) {
      uint32_t a[MT][4], a2[MT][4];
#pragma unroll
      for (int mt = 0; mt < MT; mt++) {
        if constexpr (QREG) {
#pragma unroll
          for (int e = 0; e < 4; e++) {
            a[mt][e] = qa[mt][ks][e];
            a2[mt][e] = oa[mt][ks][e];
          }
        } else {
          ld_a<D>(a[mt], Qs, wr0 + mt * 16, ks, lane);
          ld_a<D>(a2[mt], dOs, wr0 + mt * 16, ks, lane);
        }
      }
#pragma unroll
      for (int nt = 0; nt < NBN; nt += 2) {
        uint32_t bb[4], bv[4];
        ld_b<D>(bb, Ks, nt * 8, ks, lane);
        ld_b<D>(bv, Vs, nt * 8, ks, lane);
#pragma unroll
        for (int mt = 0; mt < MT; mt++) {
          mma16816<T>(s[mt][nt], a[mt], bb);
          mma16816<T>(s[mt][nt + 1], a[mt], bb + 2);
          mma16816<T>(dp[mt][nt], a2[mt], bv);
          mma16816<T>(dp[mt][nt + 1], a2[mt], bv + 2);
        }
      }
      if constexpr (DEFER) {
        // The previous block's dQ += dS K, a share per k step.
        constexpr int UPK = (BN / 16) * (ND / 2) / (D / 16);
#pragma unroll
        for (int q = 0; q < UPK; q++) {
          const int u = ks * UPK + q;
          const int kk = u / (ND / 2), dt = (u % (ND / 2)) * 2;
          uint32_t bb[4];
          ld_bt<D>(bb, Kprev, kk, dt, lane);
#pragma unroll
          for (int mt = 0; mt < MT; mt++) {
            mma16816<T>(dq[mt][dt], dsa[mt][kk], bb);
            mma16816<T>(dq[mt][dt + 1], dsa[mt][kk], bb + 2);
          }
        }
      }
    }
    // dS = P (dP w - D) slope.
#pragma unroll
    for (int mt = 0; mt < MT; mt++)
#pragma unroll
      for (int nt = 0; nt < NBN; nt++)
#pragma unroll
        for (int e = 0; e < 4; e++) {
          const int hf = e >> 1;
          const int j = j0 + nt * 8 + tq * 2 + (e & 1);
          float ds;
          if constexpr (EXTRAS) {
            float P, slope, w;
            tc_pair_extras(p, s[mt][nt][e], lsen[mt][hf], ri[mt][hf] < sq && j >= rlo[mt][hf] && j < rhi[mt][hf], b,
                           h, ri[mt][hf], j, off, P, slope, w);
            ds = P * (dp[mt][nt][e] * w - dsm[mt][hf]) * slope;
          } else {
            const float P = exp2_approx(s[mt][nt][e] * scale_log2 - lse2[mt][hf]);
            ds = P * (dp[mt][nt][e] - dsm[mt][hf]);
          }
          s[mt][nt][e] = ds;
        }
    if constexpr (!EXTRAS) {
      if (need_mask) {
        asm volatile("");  // a real branch (see tc_fwd.cuh)
#pragma unroll
        for (int mt = 0; mt < MT; mt++)
#pragma unroll
          for (int nt = 0; nt < NBN; nt++)
#pragma unroll
            for (int e = 0; e < 4; e++) {
              const int hf = e >> 1;
              const int j = j0 + nt * 8 + tq * 2 + (e & 1);
              if (!(j >= rlo[mt][hf] && j < rhi[mt][hf])) s[mt][nt][e] = 0.f;
            }
      }
    }
    // dQ += dS K (DEFER: in the next block's loop, or after the last).
    if constexpr (DEFER) {
#pragma unroll
      for (int mt = 0; mt < MT; mt++)
#pragma unroll
        for (int kk = 0; kk < BN / 16; kk++) acc_to_a<T>(dsa[mt][kk], s[mt][2 * kk], s[mt][2 * kk + 1]);
      Kprev = Ks;
    } else {
#pragma unroll
      for (int kk = 0; kk < BN / 16; kk++) {
        uint32_t a[MT][4];
#pragma unroll
        for (int mt = 0; mt < MT; mt++) acc_to_a<T>(a[mt], s[mt][2 * kk], s[mt][2 * kk + 1]);
#pragma unroll
        for (int dt = 0; dt < ND; dt += 2) {
          uint32_t bb[4];
          ld_bt<D>(bb, Ks, kk, dt, lane);
#pragma unroll
          for (int mt = 0; mt < MT; mt++) {
            mma16816<T>(dq[mt][dt], a[mt], bb);
            mma16816<T>(dq[mt][dt + 1], a[mt], bb + 2);
          }
        }
      }
    }
  }
  if constexpr (DEFER) {
    if (nb_lo < nb_hi) {
#pragma unroll
      for (int kk = 0; kk < BN / 16; kk++)
#pragma unroll
        for (int dt = 0; dt < ND; dt += 2) {
          uint32_t bb[4];
          ld_bt<D>(bb, Kprev, kk, dt, lane);
#pragma unroll
          for (int mt = 0; mt < MT; mt++) {
            mma16816<T>(dq[mt][dt], dsa[mt][kk], bb);
            mma16816<T>(dq[mt][dt + 1], dsa[mt][kk], bb + 2);
          }
        }
    }
  }
  cp_async_wait<0>();
  T* dqb = static_cast<T*>(p.dq);
#pragma unroll
  for (int mt = 0; mt < MT; mt++)
#pragma unroll
    for (int hf = 0; hf < 2; hf++) {
      if (ri[mt][hf] >= sq) continue;
      const long long o = q_off(p, b, ri[mt][hf], h);
#pragma unroll
      for (int dt = 0; dt < ND; dt++) {
        const int c = dt * 8 + tq * 2;
        if (c < d)
          *reinterpret_cast<uint32_t*>(dqb + o + c) =
              pack2<T>(dq[mt][dt][2 * hf] * p.scale, dq[mt][dt][2 * hf + 1] * p.scale);
      }
    }
}

template <typename T, int D, int BM, int NW, bool EXTRAS, int STAGES, int DQ = DQ_NONE, int PART = PART_BOTH>
cudaError_t tc_dkdv_launch(const AttnParams& p, cudaStream_t st, float* dq_acc = nullptr, unsigned* dq_sem = nullptr) {
  constexpr int BN = 16 * NW;
  constexpr int NS = STAGES < 2 ? 1 : 2;
  constexpr size_t smem = (size_t)(2 * BN + 2 * NS * BM + (DQ == DQ_NONE ? 0 : BM * BN / D)) * D * sizeof(T) +
                          3 * NS * BM * sizeof(float);
  static_assert(DQ == DQ_NONE || (BM * BN) % D == 0, "dS tile in whole rows of D");
  auto kern = tc_bwd_dkdv_kernel<T, D, BM, NW, EXTRAS, STAGES, DQ, PART>;
  if (smem > 48 * 1024) {
    cudaError_t e = cudaFuncSetAttribute(kern, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem);
    if (e != cudaSuccess) return e;
  }
  // Fused: key blocks along z, the slowest dimension. The blocks a CTA waits for (same head and batch,
  // smaller nb) have smaller linear block indices, so they are dispatched before it: no deadlock. And
  // the CTAs resident together are the first few key blocks of every (head, batch) rather than all the
  // key blocks of a few, so each chain of turns has only a few links in flight at once (with key
  // blocks along x, run 11's first two device runs: a 64-link chain per head whose lag every wave paid).
  const unsigned nkb = (unsigned)((p.seq_k + BN - 1) / BN);
  dim3 grid = DQ == DQ_NONE ? dim3(nkb, (unsigned)p.hk, (unsigned)p.batch) : dim3((unsigned)p.hk, (unsigned)p.batch, nkb);
  if (grid.x == 0 || grid.y == 0 || grid.z == 0) return cudaSuccess;
  kern<<<grid, NW * 32, smem, st>>>(p, dq_acc, dq_sem);
  return cudaGetLastError();
}

// dQ from a float32 accumulator, dQ = scale * acc, or from a fixed-point one, dQ = scale * acc / f_i
// (run 20: int64 per element, or {hi, hi, lo, lo} float32 per column pair), in the output dtype and
// layout (no varlen).
enum DqAcc : int { DQ_ACC_F32 = 0, DQ_ACC_S64 = 1, DQ_ACC_SPLIT = 2 };
template <typename T, int ACC = DQ_ACC_F32>
__global__ void __launch_bounds__(256) tc_dq_convert_kernel(AttnParams p, const void* acc, int rows_per_head, int ld) {
  // The scratch holds rows_per_head rows of ld dQ columns per (batch, head): the FA2-layout kernel pads
  // both (to whole query blocks and to D) so that its reductions need no bounds checks.
  const long long n = (long long)p.batch * p.hq * p.seq_q * (p.d / 2);
  T* dqb = static_cast<T*>(p.dq);
  for (long long t = blockIdx.x * 256LL + threadIdx.x; t < n; t += (long long)gridDim.x * 256) {
    const long long row = t / (p.d / 2);
    const int c = (int)(t % (p.d / 2)) * 2;
    const int i = (int)(row % p.seq_q);
    const int bh = (int)(row / p.seq_q);
    const long long srow = (long long)bh * rows_per_head + i;
    float x, y, m = p.scale;
    if constexpr (ACC == DQ_ACC_F32) {
      const float2 v = *reinterpret_cast<const float2*>(static_cast<const float*>(acc) + srow * ld + c);
      x = v.x;
      y = v.y;
    } else if constexpr (ACC == DQ_ACC_SPLIT) {
      const float4 v = *reinterpret_cast<const float4*>(static_cast<const float*>(acc) + srow * 2 * ld + 2 * c);
      x = v.x + v.z;
      y = v.y + v.w;
      m /= p.fix_rows[row];
    } else {
      const longlong2 v = *reinterpret_cast<const longlong2*>(static_cast<const long long*>(acc) + srow * ld + c);
      x = __ll2float_rn(v.x);
      y = __ll2float_rn(v.y);
      m /= p.fix_rows[row];
    }
    *reinterpret_cast<uint32_t*>(dqb + q_off(p, bh / p.hq, i, bh % p.hq) + c) = pack2<T>(x * m, y * m);
  }
}

// The fused backward: dK, dV and dQ in one kernel, dQ through float32 scratch (rows x d x 4 bytes)
// plus one counter per (batch, head, query block).
template <typename T, int D, int BM, int NW, int DQ>
cudaError_t tc_fused_launch(const AttnParams& p, cudaStream_t st, size_t* scratch_bytes) {
  Scratch scratch(st);
  const long long rows = p.cu_q ? (long long)p.hq * p.total_q : (long long)p.batch * p.hq * p.seq_q;
  const long long nsem = (long long)p.batch * p.hq * ((p.seq_q + BM - 1) / BM);
  const size_t acc_bytes = (size_t)std::max<long long>(rows * p.d, 1) * sizeof(float);
  const size_t sem_bytes = (size_t)std::max<long long>(nsem, 1) * sizeof(unsigned);
  float* acc = static_cast<float*>(scratch.alloc(acc_bytes));
  unsigned* sem = static_cast<unsigned*>(scratch.alloc(sem_bytes));
  if (!acc || !sem) return scratch.err;
  *scratch_bytes += acc_bytes + sem_bytes;
  cudaError_t e = cudaSuccess;
  if constexpr (DQ == DQ_ORDERED) {
    e = cudaMemsetAsync(sem, 0, sem_bytes, st);
    // Rows that see no key at all get dQ = 0 from no key block; only these shapes can have them.
    const bool untouched = p.cu_q || p.cu_k || p.seqlens_k || p.block_table || p.seq_q > p.seq_k;
    if (e == cudaSuccess && untouched)
      e = cudaMemsetAsync(p.dq, 0, (size_t)p.total_q * p.hq * p.d * sizeof(T), st);
  } else {
    e = cudaMemsetAsync(acc, 0, acc_bytes, st);
  }
  if (e == cudaSuccess) e = tc_dkdv_launch<T, D, BM, NW, false, 2, DQ>(p, st, acc, sem);
  if constexpr (DQ == DQ_ATOMIC) {
    if (e == cudaSuccess && rows > 0) {
      tc_dq_convert_kernel<T><<<264, 256, 0, st>>>(p, acc, p.seq_q, p.d);
      e = cudaGetLastError();
    }
  }
  return e;
}

template <typename T, int D, int BN, int NW, bool EXTRAS, int STAGES, int MT = 1>
cudaError_t tc_dq_launch(const AttnParams& p, cudaStream_t st) {
  constexpr int BM = 16 * NW * MT;
  constexpr int NS = STAGES < 2 ? 1 : STAGES;
  constexpr size_t smem = (size_t)(2 * NS * BN + 2 * BM) * D * sizeof(T);
  auto kern = tc_bwd_dq_kernel<T, D, BN, NW, EXTRAS, STAGES, MT>;
  if (smem > 48 * 1024) {
    cudaError_t e = cudaFuncSetAttribute(kern, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem);
    if (e != cudaSuccess) return e;
  }
  dim3 grid((unsigned)((p.seq_q + BM - 1) / BM), (unsigned)p.hq, (unsigned)p.batch);
  if (grid.x == 0 || grid.y == 0 || grid.z == 0) return cudaSuccess;
  kern<<<grid, NW * 32, smem, st>>>(p);
  return cudaGetLastError();
}

// The default dQ pass (run 14, the default since run 17): two m16 tiles per warp, 128 query rows per
// CTA; at d = 64 with the deferred dQ product on a 3-stage ring, at d = 128 on 2 stages (its 3-stage
// form spills). The EXTRAS kernel keeps one m-tile and 2 stages (already at 168 registers with its
// per-pair modifiers).
template <typename T, int D, bool EXTRAS> cudaError_t tc_dq_default_launch(const AttnParams& p, cudaStream_t st) {
  if constexpr (EXTRAS) return tc_dq_launch<T, D, 32, 4, true, 2>(p, st);
  else if constexpr (D <= 64) return tc_dq_launch<T, D, 32, 4, false, 3, 2>(p, st);
  else return tc_dq_launch<T, D, 32, 4, false, 2, 2>(p, st);
}

// ------------------------------------------------------------------------------------------------
// Fused backward in FA2's layout (run 18; FA_TUNE builds, variants 8-9; no EXTRAS, varlen or paged
// K/V). One CTA of 8 warps per 128-key block (key head, batch) walks the query blocks of BM rows (last
// first, the GQA heads inside) and computes 5 products per step, each with its own warp layout:
//  - S = Q K^T and dP = dO V^T (BM x 128): warps 2 (rows) x 4 (keys), BM / 2 rows x 32 keys each;
//    P and dS go to shared memory as 16-bit [query][key] tiles (stmatrix on sm_90);
//  - dV += P^T dO and dK += dS^T Q (128 x D): warps 4 (keys) x 2 (d), 32 keys x D / 2 each, the A
//    operands read transposed from the P / dS tiles (ldmatrix.trans), 8 * D / 16 accumulators per
//    warp held through the whole loop;
//  - dQ = dS K (BM x D): warps 2 (rows) x 4 (d), added to a float32 scratch by RED (unordered: the
//    sums' order, and so their bits, vary from call to call), converted to the output dtype after.
// Per warp per step at d = 128, BM = 64: 320 mma, 144 ldmatrix.x4 (~230 B of shared reads per mma,
// run 11's fused kernel: 320), 8 stmatrix, 16 RED.v2 (32 KB of dQ reductions per CTA-step).

// Stores a packed m16k16 A fragment (acc_to_a's layout) into a swizzled row-major [rows][LD] tile at
// rows r0.., columns 16 kt..: one stmatrix on sm_90 (its lane addresses are ldmatrix's for A).
template <int LD, typename T> FA_DEV void st_a(T* tile, int r0, int kt, int lane, const uint32_t a[4]) {
#if __CUDA_ARCH__ >= 900
  const uint32_t addr = (FragAddr<LD>::a(smem_u32(tile), lane) ^ (kt << 5)) + r0 * (LD * 2);
  asm volatile("stmatrix.sync.aligned.m8n8.x4.shared.b16 [%0], {%1,%2,%3,%4};\n" ::"r"(addr), "r"(a[0]), "r"(a[1]),
               "r"(a[2]), "r"(a[3])
               : "memory");
#else
  const int g = lane >> 2, c = kt * 16 + (lane & 3) * 2;
  *reinterpret_cast<uint32_t*>(tile + swz<LD>(r0 + g, c)) = a[0];
  *reinterpret_cast<uint32_t*>(tile + swz<LD>(r0 + g + 8, c)) = a[1];
  *reinterpret_cast<uint32_t*>(tile + swz<LD>(r0 + g, c + 8)) = a[2];
  *reinterpret_cast<uint32_t*>(tile + swz<LD>(r0 + g + 8, c + 8)) = a[3];
#endif
}

// A fragment (m16 x k16) of the transpose of a swizzled row-major [k][LD] tile: m = columns m0..m0+15,
// k = rows k0..k0+15. The trans load of each 8x8 matrix needs the lane addresses of a B fragment.
template <int LD> FA_DEV void ld_at(uint32_t* a, const void* tile, int m0, int k0, int lane) {
  ldsm_x4_t(a, (FragAddr<LD>::b(smem_u32(tile), lane) ^ ((m0 >> 4) << 5)) + k0 * (LD * 2));
}

// ORD (variant 10, deterministic): every (batch, head, query block) takes its key blocks' dQ tiles in
// one fixed order, the first storing to the float32 scratch, the middle ones adding, the last adding
// what is there to its own tile and writing dQ; a counter per (batch, head, query block) says how
// many have added. Run 11's ordered kernel walked the query blocks in the same order in every key
// block, so the turns formed a chain in lockstep that paid the slowest link on every step. Here key
// block nb walks them rotated to start at query block c(nb) = nb * BN / BM, and the order of a query
// block's contributors is the order of their visits (step, then nb): on a dense or causal problem the
// contributor before nb visited the block r = BN / BM steps earlier, so a turn is normally already
// there when asked for (its load is issued at the step's start and checked only before the dS
// barrier). An item (key block, key head, batch) can wait on one of its key head's that comes after it,
// so the grid is persistent (one CTA per SM, all resident: a cooperative launch, since the lead's
// review of run 18) and its CTAs take the items by ticket, in order: when every CTA waits, the tickets
// taken run from the lowest unfinished item over at least the grid's size, so all nkb <= grid items of
// the lowest unfinished key head are in flight, and the first of them in the dQ order can go on: no
// deadlock. (Run 18 launched one CTA per item, ticketed at start; that holds only while no other
// kernel that waits shares the GPU: two backends' streams or MPS could fill it with waiting CTAs.)
// Run 18's second device run measured the turn's forms side by side (the mode, FA2_*):
//  FA2_ORD_SC (variant 10): the release by __threadfence (fence.sc) and atomicAdd at the next step's
//    first barrier, the acquire by a __threadfence after the observed count;
//  FA2_ORD (11): fence.acq_rel for the release, and no fence on the acquire side: what follows the
//    turn touches the scratch only by L2 atomics and L1-bypassing loads, issued after the barrier
//    that follows the observed count (the pattern of the CUDA guide's last-block reduction);
//  FA2_ORD_WARP (12 since run 18c; in run 18b 12 moved FA2_ORD's release to the next step's dS
//    barrier and was no faster): no CTA-wide wait; after the dS barrier each warp loads the counter
//    itself and checks it only before its own reductions, after the dQ product;
//  FA2_ROT (13): unordered reductions in ORD's rotated order and ticketed CTAs (what the schedule
//    alone costs against FA2_FREE, variant 8).
// Since run 18c the tickets run the key blocks from the last down (on a causal problem the first
// contributor to a query block is its diagonal key block, the last of the grid: it now starts
// first), the step order and the rank are kept without integer division, and the reductions'
// branch on the CTA's role is taken once per step (run 18b: ~2700 instructions more per CTA-step
// than the unordered kernel).
//  FA2_FIX (run 20; variant 15): no order and no waiting, yet deterministic: every contribution is
//    scaled by a power of two and added as a 64-bit integer (integer sums do not depend on their
//    order). The scale comes from a bound on the row's dQ, max |K| (|dO_i| max_j |V_j| + |D_i|)
//    (|dS_ij| = P_ij |dP_ij - D_i| and sum_j P_ij = 1; fix_multiplier below), and each contribution is
//    checked against 2^(61 - L) with 2^L >= the key blocks, so the sum cannot overflow whatever the
//    inputs; a contribution outside (NaN, Inf, an lse that does not belong to the inputs) sets a flag
//    and the dQ pass kernel then recomputes dQ, so the bound decides only the speed, never the answer.
//    Resolution: 2^-(60 - L) of the bound, far below float32's rounding of the contributions.
//  FA2_FIXF (run 20b; variant 16): the same integers carried in float32, which adds integers exactly
//    while every partial sum stays below 2^24 (in its unit), so again in any order. Each scaled
//    contribution x f_i (|.| < 2^R) is split into hi, a multiple of 2^k (one FFMA with 1.5 * 2^(23+k)
//    rounds it there), and the integer lo = rint(x f_i - hi), |lo| <= 2^(k-1); with k <= 25 - L the lo
//    sums stay below 2^24, with R <= 23 + k - L the hi sums below 2^(24+k), both exact. Both go to L2 in
//    one `red.add.v4.f32` per column pair ({hi, hi, lo, lo}, interleaved per pair), the same count of
//    reductions as FA2_FREE's `red.v2` and twice its bytes. R: 38 bits at s = 4096, 34 at 16384,
//    28 at 131072 (L = 10, the most this mode takes).
enum Fa2Mode : int { FA2_FREE = 0, FA2_ORD_SC = 1, FA2_ORD = 2, FA2_ORD_WARP = 3, FA2_ROT = 4, FA2_FIX = 5, FA2_FIXF = 6 };

FA_DEV int fix_lbits(int seq_k) {  // 2^L >= the key blocks of 128 (the most contributions a row gets)
  const int nkb = (seq_k + 127) / 128;
  return nkb <= 1 ? 0 : 32 - __clz(nkb - 1);
}
// The fixed-point range of a problem: contributions scaled below 2^top (checked against lim = 2^(top+1));
// FA2_FIXF's hi rounding constant mhi = 1.5 * 2^(23+k).
struct FixRange {
  int top;
  float lim, mhi;
};
FA_DEV FixRange fix_range(int seq_k, bool split) {
  const int L = fix_lbits(seq_k);
  if (!split) return {60 - L, ldexpf(1.f, 61 - L), 0.f};
  const int k = min(25 - L, 22);  // 22: |x f - hi| <= 2^21 leaves rintf's input exact
  const int R = min(23 + k - L, 21 + k);  // 21 + k: the FFMA's rounding constant holds up to 2^(22+k)
  return {R - 1, ldexpf(1.f, R), 1.5f * ldexpf(1.f, 23 + k)};
}
// The power of two that scales row i's dQ contributions (FA2_FIX, FA2_FIXF): the bound times it below
// 2^top.
FA_DEV float fix_multiplier(float dnorm, float dsum, float kmax, float vmax, int top) {
  const float bound = kmax * fmaf(dnorm, vmax, fabsf(dsum));
  int e = 0;
  frexpf(bound, &e);  // bound < 2^e
  return ldexpf(1.f, max(-120, min(120, top - e)));
}
// Four adjacent float32 adds at L2 in one RED (sm_90; four on older devices).
FA_DEV void red_add4(float* ptr, float a, float b, float c, float d) {
#if __CUDA_ARCH__ >= 900
  asm volatile("red.global.add.v4.f32 [%0], {%1, %2, %3, %4};" ::"l"(ptr), "f"(a), "f"(b), "f"(c), "f"(d) : "memory");
#else
  atomicAdd(ptr, a);
  atomicAdd(ptr + 1, b);
  atomicAdd(ptr + 2, c);
  atomicAdd(ptr + 3, d);
#endif
}
FA_DEV void red_add_s64(unsigned long long* ptr, long long v) {
  asm volatile("red.global.add.u64 [%0], %1;" ::"l"(ptr), "l"(v) : "memory");
}

// max |K| and max_j |V_j| over the keys the sequences reach (FA2_FIX's bound), as float bits in
// fix_state[0..1] (zeroed before: non-negative floats order as their bits). A group of d / 8 lanes
// per key row, 16 bytes each. NaN is left out here (fmaxf); a NaN input shows in the contributions.
template <typename T> __global__ void __launch_bounds__(256) tc_kv_bound_kernel(AttnParams p) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int W = p.d / 8, rows_per_warp = 32 / W;
  const int sub = lane / W, c = (lane % W) * 8;
  const long long rows = (long long)p.batch * p.hk * p.seq_k;
  const long long nwarps = (long long)gridDim.x * 8;
  float kmax = 0.f, vmax = 0.f;
  for (long long r0 = ((long long)blockIdx.x * 8 + warp) * rows_per_warp; r0 < rows; r0 += nwarps * rows_per_warp) {
    const long long r = r0 + sub;
    float vs = 0.f;
    if (sub < rows_per_warp && r < rows) {
      const int j = (int)(r % p.seq_k), hkv = (int)(r / p.seq_k % p.hk), b = (int)(r / ((long long)p.seq_k * p.hk));
      if (j < seqlen_k(p, b)) {
        const long long o = kv_off(p, b, j, hkv) + c;
        const uint4 kr = *reinterpret_cast<const uint4*>(static_cast<const T*>(p.k) + o);
        const uint4 vr = *reinterpret_cast<const uint4*>(static_cast<const T*>(p.v) + o);
        const T* ke = reinterpret_cast<const T*>(&kr);
        const T* ve = reinterpret_cast<const T*>(&vr);
#pragma unroll
        for (int u = 0; u < 8; u++) {
          kmax = fmaxf(kmax, fabsf(to_f(ke[u])));
          vs = fmaf(to_f(ve[u]), to_f(ve[u]), vs);
        }
      }
    }
    for (int o = 1; o < W; o <<= 1) vs += __shfl_xor_sync(0xffffffffu, vs, o);
    vmax = fmaxf(vmax, sqrtf(vs));
  }
  kmax = warp_max(kmax);
  vmax = warp_max(vmax);
  __shared__ float red[2][8];
  if (lane == 0) {
    red[0][warp] = kmax;
    red[1][warp] = vmax;
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    for (int w = 1; w < 8; w++) {
      kmax = fmaxf(kmax, red[0][w]);
      vmax = fmaxf(vmax, red[1][w]);
    }
    atomicMax(p.fix_state, __float_as_uint(kmax));
    atomicMax(p.fix_state + 1, __float_as_uint(vmax));
  }
}

// f_i of every row into p.fix_rows, once per call (the kernel and the conversion read them), from
// |dO_i| and D_i. One warp per row (no varlen here: rows are (b, h, i) in lse order).
template <typename T, bool SPLIT> __global__ void __launch_bounds__(256) tc_fix_rows_kernel(AttnParams p) {
  const long long n = (long long)p.batch * p.hq * p.seq_q;
  const int lane = threadIdx.x & 31;
  const float kmax = __uint_as_float(p.fix_state[0]), vmax = __uint_as_float(p.fix_state[1]);
  const int top = fix_range(p.seq_k, SPLIT).top;
  for (long long row = (blockIdx.x * 256LL + threadIdx.x) >> 5; row < n; row += (long long)gridDim.x * 8) {
    const int i = (int)(row % p.seq_q), h = (int)(row / p.seq_q % p.hq), b = (int)(row / ((long long)p.seq_q * p.hq));
    const T* dO = static_cast<const T*>(p.dout) + q_off(p, b, i, h);
    float n2 = 0.f;
    for (int c = lane; c < p.d; c += 32) n2 = fmaf(to_f(dO[c]), to_f(dO[c]), n2);
    n2 = warp_sum(n2);
    if (lane == 0) p.fix_rows[row] = fix_multiplier(sqrtf(n2), p.dsum[row], kmax, vmax, top);
  }
}

FA_DEV unsigned ld_relaxed_gpu(const unsigned* ptr) {
  unsigned v;
  asm volatile("ld.relaxed.gpu.global.u32 %0, [%1];" : "=r"(v) : "l"(ptr) : "memory");
  return v;
}
FA_DEV void fence_acq_rel_gpu() { asm volatile("fence.acq_rel.gpu;" ::: "memory"); }

template <typename T, int D, int BM, int MODE = FA2_FREE>
__global__ void __launch_bounds__(256, 1) tc_bwd_fa2_kernel(AttnParams p, float* dq_acc, unsigned* dq_sem) {
  constexpr bool FIXF = MODE == FA2_FIXF;                   // fixed point carried in float32 (hi, lo)
  constexpr bool FIX = MODE == FA2_FIX || FIXF;             // fixed-point dQ
  constexpr bool ROT = MODE != FA2_FREE && !FIX;            // rotated order, ticketed CTAs
  constexpr bool ORD = ROT && MODE != FA2_ROT;              // the turns
  constexpr bool WARPW = MODE == FA2_ORD_WARP;  // per-warp turn
  constexpr int NT = 256, BN = 128;
  constexpr int MS = BM / 32;   // m16 tiles per warp in S / dP and in dQ (BM / 2 rows)
  constexpr int NDK = D / 16;   // n8 tiles per warp in dK / dV (D / 2 columns)
  constexpr int NDQ = D / 32;   // n8 tiles per warp in dQ (D / 4 columns)
  static_assert(MS >= 1 && NDQ % 2 == 0 && NDK % 2 == 0, "FA2 warp tiling");
  extern __shared__ __align__(128) unsigned char smem_raw[];
  T* Ks = reinterpret_cast<T*>(smem_raw);
  T* Vs = Ks + BN * D;
  T* Qs0 = Vs + BN * D;        // [2][BM][D]
  T* dOs0 = Qs0 + 2 * BM * D;  // [2][BM][D]
  T* Ps = dOs0 + 2 * BM * D;   // [BM][BN]
  T* dSs = Ps + BM * BN;       // [BM][BN]
  float* lse_s0 = reinterpret_cast<float*>(dSs + BM * BN);  // [2][BM] raw lse
  float* dsum_s0 = lse_s0 + 2 * BM;                         // [2][BM]
  float* fmul_s0 = dsum_s0 + 2 * BM;                        // FIX: [2][BM] the rows' f_i
  // ORD: the ticket and the turn (rank, count) passed from thread 0. Not static __shared__: that would
  // move the dynamic window off the 1 KB alignment FragAddr needs.
  int* misc = reinterpret_cast<int*>(fmul_s0 + (FIX ? 2 * BM : 0));

  check_smem_alignment(smem_raw);
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
  // ROT: a persistent grid, every CTA resident at once (a cooperative launch), taking (key block, key
  // head, batch) items by ticket, in order, until none are left (see above).
  const int nkb = (p.seq_k + BN - 1) / BN;
  const int items = ROT ? nkb * p.hk * p.batch : 1;
  for (int item = 0;; item++) {
  int nb = blockIdx.x, hkv = blockIdx.y, b = blockIdx.z;
  if constexpr (ROT) {
    // The item's place in run order; the ticket is the counter after the query blocks'.
    __syncthreads();  // the previous item is done with shared memory and misc[0]
    if (tid == 0) misc[0] = (int)atomicAdd(dq_sem + (long long)p.batch * p.hq * ((p.seq_q + BM - 1) / BM), 1u);
    __syncthreads();
    const int ticket = misc[0];
    if (ticket >= items) return;
    nb = nkb - 1 - ticket % nkb;
    hkv = ticket / nkb % p.hk;
    b = ticket / (nkb * p.hk);
  } else if (item > 0) {
    return;
  }
  const int sq = seqlen_q(p, b), sk = seqlen_k(p, b);
  const int n0 = nb * BN;
  if (n0 >= sk) continue;
  const int d = p.d, G = p.group;
  const int g = lane >> 2, tq = lane & 3;
  const T* kbase = static_cast<const T*>(p.k);
  const T* vbase = static_cast<const T*>(p.v);
  const T* qbase = static_cast<const T*>(p.q);
  const T* obase = static_cast<const T*>(p.dout);
  tc_load_tile_strided<T, D, NT, BN>(Ks, sk - n0, d, kbase + kv_off(p, b, n0, hkv), p.kv_ss);
  tc_load_tile_strided<T, D, NT, BN>(Vs, sk - n0, d, vbase + kv_off(p, b, n0, hkv), p.kv_ss);
  cp_async_commit();

  // The three warp layouts.
  const int r0s = (warp >> 2) * (BM / 2), k0s = (warp & 3) * 32;  // S / dP: rows, keys
  const int kw = (warp >> 1) * 32, dw = (warp & 1) * NDK;          // dK / dV: keys, first n8 tile of d
  const int rq = (warp & 1) * (BM / 2), dq0 = (warp >> 1) * NDQ;   // dQ: rows, first n8 tile of d
  // Each warp's fragment addresses in FragAddr's XOR form with its rows and columns folded in once
  // (the row offsets are multiples of 4 KB and the column tiles' bits disjoint from the k step's), so
  // that every ldmatrix below is one LOP3 and an immediate offset (run 20d: the profile found the
  // per-load row multiplies and re-derived bases ~15 % of the instructions). Q and dO: stage 0's.
  const uint32_t kB = FragAddr<D>::b(smem_u32(Ks + k0s * D), lane);
  const uint32_t vB = FragAddr<D>::b(smem_u32(Vs + k0s * D), lane);
  const uint32_t kBt = FragAddr<D>::bt(smem_u32(Ks), lane) ^ (dq0 << 4);
  const uint32_t qA0 = FragAddr<D>::a(smem_u32(Qs0 + r0s * D), lane);
  const uint32_t oA0 = FragAddr<D>::a(smem_u32(dOs0 + r0s * D), lane);
  const uint32_t qBt0 = FragAddr<D>::bt(smem_u32(Qs0), lane) ^ (dw << 4);
  const uint32_t oBt0 = FragAddr<D>::bt(smem_u32(dOs0), lane) ^ (dw << 4);
  const uint32_t dsA = FragAddr<BN>::a(smem_u32(dSs + rq * BN), lane);
  const uint32_t pAt = FragAddr<BN>::b(smem_u32(Ps), lane) ^ ((kw >> 4) << 5);
  constexpr uint32_t DS_BYTES = BM * BN * 2;     // dSs - Ps
  constexpr uint32_t STAGE_BYTES = BM * D * 2;  // one stage of Q or dO
  constexpr int STAGE_ELEMS = BM * D;

  float dk[2][NDK][4], dv[2][NDK][4];
#pragma unroll
  for (int mt = 0; mt < 2; mt++)
#pragma unroll
    for (int dt = 0; dt < NDK; dt++)
#pragma unroll
      for (int e = 0; e < 4; e++) dk[mt][dt][e] = dv[mt][dt][e] = 0.f;
  const float scale_log2 = p.scale * LOG2E;
  // FIX: the fixed-point range.
  FixRange fix{0, 0.f, 0.f};
  if constexpr (FIX) fix = fix_range(p.seq_k, FIXF);

  const int nmb_all = (sq + BM - 1) / BM;
  int mb_lo, mb_hi;
  live_query_blocks<BM, BN>(p, sq, sk, n0, mb_lo, mb_hi);
  const int nmb = mb_hi > mb_lo ? mb_hi - mb_lo : 0;
  const int iters = G * nmb;
  // ORD: query block c(nb) first (or the first live one after it), then round the live range.
  constexpr int R = BN / BM;
  auto rot0 = [&](int kb) { return (kb * R) % nmb_all; };
  const int c0 = nmb_all > 0 ? rot0(nb) : 0;
  const int first = c0 >= mb_lo && c0 < mb_hi ? c0 : mb_lo;
  // Step order: (query block, head of the group), the heads inside; advance() moves to the next step.
  auto advance = [&](int& mbv, int& gv) {
    if (++gv == G) {
      gv = 0;
      if constexpr (ROT) {
        if (++mbv == mb_hi) mbv = mb_lo;
      } else {
        --mbv;
      }
    }
  };
  // Q and dO of a step. This kernel's layout is dense (no varlen), so the block's offset is a sum of
  // CTA-uniform products and the thread's part (its row and 16-byte chunk) never changes: a whole
  // block at d = D takes one 64-bit add per chunk and no row checks. Through the general strided
  // loader (row checks, address selects, element-to-byte shifts, q_off's varlen test) the loads were
  // ~130 instructions per warp-step, most of the loop head (run 21's SASS). Run 23a, this path in
  // every form: the ordered ones +1.5-2.4 %, the fixed-point and unordered ones -1.5-4 % (noise
  // ~0.8 %); run 23b, here in the ordered forms only (and the dense offsets everywhere): ordered
  // +0.6-2.4 %, fixed point at d = 128 +2.3-3.3 %, unordered within 0.5 %. Register allocation, not
  // the instruction count, decides the last few per cent here.
  constexpr bool WHOLE_Q = ORD;
  constexpr int CPR = D / 8, RS = NT / CPR;  // chunks per row, rows per pass
  static_assert(BM % RS == 0 && RS % 8 == 0, "whole passes, each with the swizzle of its first row");
  const int lrow = tid / CPR, lchunk = tid % CPR;
  auto load_q = [&](int mbv, int gv, int stage) {
    const int h = hkv * G + gv;
    const int m0 = mbv * BM;
    const long long qo = q_off_dense(p, b, m0, h);
    if (WHOLE_Q && m0 + BM <= sq && d == D) {
      const long long thr = qo + (long long)lrow * p.q_ss + lchunk * 8;
      const T* qs = qbase + thr;
      const T* os = obase + thr;
      T* qd = Qs0 + stage * BM * D + swz<D>(lrow, lchunk * 8);
#pragma unroll
      for (int i = 0; i < BM / RS; i++) {
        // RS is a multiple of 8, so every pass has the swizzle of row lrow.
        const long long step = (long long)i * RS * p.q_ss;
        cp_async16_full(qd + i * RS * D, qs + step);
        cp_async16_full(qd + 2 * STAGE_ELEMS + i * RS * D, os + step);
      }
    } else {
      tc_load_tile_strided<T, D, NT, BM>(Qs0 + stage * BM * D, sq - m0, d, qbase + qo, p.q_ss);
      tc_load_tile_strided<T, D, NT, BM>(dOs0 + stage * BM * D, sq - m0, d, obase + qo, p.q_ss);
    }
    for (int r = tid; r < BM; r += NT) {
      const int i = m0 + r;
      const bool ok = i < sq;
      const long long li = ok ? lse_idx_dense(p, b, h, i) : 0;
      cp_async4(lse_s0 + stage * BM + r, p.lse_in + li, ok ? 4 : 0);
      cp_async4(dsum_s0 + stage * BM + r, p.dsum + li, ok ? 4 : 0);
      if constexpr (FIX) cp_async4(fmul_s0 + stage * BM + r, p.fix_rows + li, ok ? 4 : 0);
    }
  };
  int cur_mb = ROT ? first : mb_hi - 1, cur_g = 0;
  int nxt_mb = cur_mb, nxt_g = cur_g;
  advance(nxt_mb, nxt_g);
  if (iters > 0) load_q(cur_mb, cur_g, 0);
  cp_async_commit();

  const int nmb_grid = (p.seq_q + BM - 1) / BM;
  unsigned* release = nullptr;  // ORD: the counter this CTA still has to advance
  auto publish = [&]() {
    if (tid == 0 && release) {
      if constexpr (MODE == FA2_ORD_SC) {
        __threadfence();
      } else {
        fence_acq_rel_gpu();
      }
      atomicAdd(release, 1u);
    }
    release = nullptr;
  };
  for (int it = 0; it < iters; it++) {
    const int h = hkv * G + cur_g;
    const int mb = cur_mb;
    const int m0 = mb * BM;
    const int stage = it & 1;
    const float* lse_s = lse_s0 + stage * BM;
    const float* dsum_s = dsum_s0 + stage * BM;
    const float* fmul_s = fmul_s0 + stage * BM;
    bool need_mask;
    {
      const int last = min(m0 + BM, sq) - 1;
      int lo_f, hi_f, lo_l, hi_l;
      key_range(p, m0, sq, sk, lo_f, hi_f);
      key_range(p, last, sq, sk, lo_l, hi_l);
      need_mask = !(n0 >= lo_l && n0 + BN <= hi_f);
    }
    cp_async_wait<0>();
    __syncthreads();  // step it in place; every warp is done with the other stage and with P / dS
    unsigned* cnt = nullptr;
    int rank = 0, count = 1;
    unsigned seen = 0;
    if constexpr (ORD) {
      // The previous step's adds (every thread's, before this barrier) published by one fence and
      // one increment.
      publish();
      cnt = dq_sem + ((long long)(b * p.hq + h) * nmb_grid + mb);
      if (tid == 0 && !WARPW) seen = ld_relaxed_gpu(cnt);  // checked before the dS barrier: the latency hides
      if (warp == 0) {
        // This key block's place among the query block's contributors, in visit order (step, then
        // key block): the lanes share the contributors [v_lo, v_hi).
        const int last = min(m0 + BM, sq) - 1;
        int lo_f, hi_f, lo_l, hi_l;
        key_range(p, m0, sq, sk, lo_f, hi_f);
        key_range(p, last, sq, sk, lo_l, hi_l);
        const int v_lo = lo_f / BN, v_hi = (hi_l + BN - 1) / BN;
        const int t = mb >= c0 ? mb - c0 : mb - c0 + nmb_all;
        int before = 0;
        for (int kb = v_lo + lane; kb < v_hi; kb += 32) {
          int ck = kb * R;
          if (ck >= nmb_all) ck %= nmb_all;
          const int tk = mb >= ck ? mb - ck : mb - ck + nmb_all;
          before += tk < t || (tk == t && kb < nb);
        }
        rank = __reduce_add_sync(0xffffffffu, before);
        count = v_hi - v_lo;
      }
    }
    if (it + 1 < iters) load_q(nxt_mb, nxt_g, stage ^ 1);
    cp_async_commit();

    // S and dP in one loop: 2 MS * 4 independent accumulator chains.
    float s[MS][4][4], dp[MS][4][4];
#pragma unroll
    for (int mt = 0; mt < MS; mt++)
#pragma unroll
      for (int nt = 0; nt < 4; nt++)
#pragma unroll
        for (int e = 0; e < 4; e++) s[mt][nt][e] = dp[mt][nt][e] = 0.f;
#pragma unroll
    for (int ks = 0; ks < D / 16; ks++) {
      uint32_t aq[MS][4], ao[MS][4];
#pragma unroll
      for (int mt = 0; mt < MS; mt++) {
        ldsm_x4(aq[mt], ((qA0 + stage * STAGE_BYTES) ^ (ks << 5)) + mt * 16 * D * 2);
        ldsm_x4(ao[mt], ((oA0 + stage * STAGE_BYTES) ^ (ks << 5)) + mt * 16 * D * 2);
      }
#pragma unroll
      for (int np = 0; np < 2; np++) {
        uint32_t bk[4], bv[4];
        ldsm_x4(bk, (kB ^ (ks << 5)) + np * 16 * D * 2);
        ldsm_x4(bv, (vB ^ (ks << 5)) + np * 16 * D * 2);
#pragma unroll
        for (int mt = 0; mt < MS; mt++) {
          mma16816<T>(s[mt][2 * np], aq[mt], bk);
          mma16816<T>(s[mt][2 * np + 1], aq[mt], bk + 2);
          mma16816<T>(dp[mt][2 * np], ao[mt], bv);
          mma16816<T>(dp[mt][2 * np + 1], ao[mt], bv + 2);
        }
      }
    }
    // P = exp2(S scale log2e - lse log2e) and dS = P (dP - D), in place.
#pragma unroll
    for (int mt = 0; mt < MS; mt++)
#pragma unroll
      for (int hf = 0; hf < 2; hf++) {
        const int r = r0s + mt * 16 + g + 8 * hf;
        const float lr = lse_s[r];
        const float l2 = lr == -INFINITY ? INFINITY : lr * LOG2E;
#pragma unroll
        for (int nt = 0; nt < 4; nt++)
#pragma unroll
          for (int u = 0; u < 2; u++) s[mt][nt][2 * hf + u] = exp2_approx(s[mt][nt][2 * hf + u] * scale_log2 - l2);
      }
    if (need_mask) {
      asm volatile("");  // a real branch (see tc_fwd.cuh)
#pragma unroll
      for (int mt = 0; mt < MS; mt++)
#pragma unroll
        for (int hf = 0; hf < 2; hf++) {
          int lo, hi;
          key_range(p, m0 + r0s + mt * 16 + g + 8 * hf, sq, sk, lo, hi);
#pragma unroll
          for (int nt = 0; nt < 4; nt++)
#pragma unroll
            for (int u = 0; u < 2; u++) {
              const int j = n0 + k0s + nt * 8 + tq * 2 + u;
              if (!(j >= lo && j < hi)) s[mt][nt][2 * hf + u] = 0.f;
            }
        }
    }
#pragma unroll
    for (int mt = 0; mt < MS; mt++)
#pragma unroll
      for (int hf = 0; hf < 2; hf++) {
        const float dsv = dsum_s[r0s + mt * 16 + g + 8 * hf];
#pragma unroll
        for (int nt = 0; nt < 4; nt++)
#pragma unroll
          for (int u = 0; u < 2; u++) dp[mt][nt][2 * hf + u] = s[mt][nt][2 * hf + u] * (dp[mt][nt][2 * hf + u] - dsv);
      }
#pragma unroll
    for (int mt = 0; mt < MS; mt++)
#pragma unroll
      for (int np = 0; np < 2; np++) {
        uint32_t a[4];
        acc_to_a<T>(a, s[mt][2 * np], s[mt][2 * np + 1]);
        st_a<BN>(Ps, r0s + mt * 16, (k0s >> 4) + np, lane, a);
        acc_to_a<T>(a, dp[mt][2 * np], dp[mt][2 * np + 1]);
        st_a<BN>(dSs, r0s + mt * 16, (k0s >> 4) + np, lane, a);
      }
    if constexpr (ORD) {
      // The turn: the rank contributors before this one have added (acquire by the fence after the
      // observed count; the barrier below passes it on to the CTA).
      if (tid == 0) {
        if constexpr (!WARPW)
          while (seen < (unsigned)rank) seen = ld_relaxed_gpu(cnt);
        if constexpr (MODE == FA2_ORD_SC) __threadfence();
        misc[1] = rank;
        misc[2] = count;
      }
      __syncthreads();  // P and dS complete, the turn taken
      rank = misc[1];
      count = misc[2];
      if (WARPW && lane == 0 && rank > 0) seen = ld_relaxed_gpu(cnt);  // checked after the dQ product
    } else {
      __syncthreads();  // P and dS complete
    }

    // dQ = dS K first, so that its reductions drain while dV and dK run.
    {
      float dq[MS][NDQ][4];
#pragma unroll
      for (int mt = 0; mt < MS; mt++)
#pragma unroll
        for (int dt = 0; dt < NDQ; dt++)
#pragma unroll
          for (int e = 0; e < 4; e++) dq[mt][dt][e] = 0.f;
#pragma unroll
      for (int kk = 0; kk < BN / 16; kk++) {
        uint32_t a[MS][4];
#pragma unroll
        for (int mt = 0; mt < MS; mt++) ldsm_x4(a[mt], (dsA ^ (kk << 5)) + mt * 16 * BN * 2);
#pragma unroll
        for (int dt = 0; dt < NDQ; dt += 2) {
          uint32_t bb[4];
          ldsm_x4_t(bb, (kBt ^ (dt << 4)) + kk * 16 * D * 2);
#pragma unroll
          for (int mt = 0; mt < MS; mt++) {
            mma16816<T>(dq[mt][dt], a[mt], bb);
            mma16816<T>(dq[mt][dt + 1], a[mt], bb + 2);
          }
        }
      }
      if constexpr (WARPW) {
        // This warp's turn (the CTA's: every warp waits for the same count).
        if (rank > 0) {
          if (lane == 0)
            while (seen < (unsigned)rank) seen = ld_relaxed_gpu(cnt);
          __syncwarp();
        }
      }
      // The CTA's role in the query block's sum, one branch per step: 0 adds (RED), 1 stores the
      // first partial, 2 adds the last one to what is there and writes dQ, 3 writes its own tile.
      const int role = !ORD ? 0 : count == 1 ? 3 : rank == 0 ? 1 : rank + 1 == count ? 2 : 0;
      bool in_range = true;  // FIX
      // The lane's first dQ element in the scratch, whose rows are padded to whole query blocks and
      // whose columns to D (tc_fa2_launch): padded rows and columns get exact zeros (zero-filled Q, dO,
      // lse and D rows give dS = 0; zero-filled K columns give 0), so the reductions need no bounds
      // checks and every one of them is an immediate offset from this one address (row stride D). The
      // checked form cost ~220 instructions per step, 17 % of the loop (run 21's SASS).
      const long long srow = (long long)(b * p.hq + h) * nmb_grid * BM + m0 + rq + g;
      const int c0 = dq0 * 8 + tq * 2;
      if constexpr (FIXF) {
        float* a0 = dq_acc + srow * (2 * D) + 2 * c0;
#pragma unroll
        for (int mt = 0; mt < MS; mt++)
#pragma unroll
          for (int hf = 0; hf < 2; hf++) {
            const float f = fmul_s[rq + mt * 16 + g + 8 * hf];
            float big = 0.f;
#pragma unroll
            for (int dt = 0; dt < NDQ; dt++) {
              const float x = dq[mt][dt][2 * hf], y = dq[mt][dt][2 * hf + 1];
              const float hx = fmaf(x, f, fix.mhi) - fix.mhi, hy = fmaf(y, f, fix.mhi) - fix.mhi;
              big = max_nan(big, max_nan(fabsf(x), fabsf(y)));
              red_add4(a0 + (mt * 16 + 8 * hf) * (2 * D) + dt * 16, hx, hy, rintf(fmaf(x, f, -hx)),
                       rintf(fmaf(y, f, -hy)));
            }
            in_range = in_range && big * f < fix.lim * 0.999f;  // false for NaN
          }
      } else if constexpr (FIX) {
        auto* a0 = reinterpret_cast<unsigned long long*>(dq_acc) + srow * D + c0;
#pragma unroll
        for (int mt = 0; mt < MS; mt++)
#pragma unroll
          for (int hf = 0; hf < 2; hf++) {
            const float f = fmul_s[rq + mt * 16 + g + 8 * hf];
#pragma unroll
            for (int dt = 0; dt < NDQ; dt++) {
              const float x = dq[mt][dt][2 * hf] * f, y = dq[mt][dt][2 * hf + 1] * f;
              in_range = in_range && fabsf(x) < fix.lim && fabsf(y) < fix.lim;  // false for NaN
              red_add_s64(a0 + (mt * 16 + 8 * hf) * D + dt * 8, __float2ll_rn(x));
              red_add_s64(a0 + (mt * 16 + 8 * hf) * D + dt * 8 + 1, __float2ll_rn(y));
            }
          }
      } else if (role == 0) {
        float* a0 = dq_acc + srow * D + c0;
#pragma unroll
        for (int mt = 0; mt < MS; mt++)
#pragma unroll
          for (int hf = 0; hf < 2; hf++)
#pragma unroll
            for (int dt = 0; dt < NDQ; dt++)
              red_add2(a0 + (mt * 16 + 8 * hf) * D + dt * 8, dq[mt][dt][2 * hf], dq[mt][dt][2 * hf + 1]);
      } else if (role == 1) {
        float* a0 = dq_acc + srow * D + c0;
#pragma unroll
        for (int mt = 0; mt < MS; mt++)
#pragma unroll
          for (int hf = 0; hf < 2; hf++)
#pragma unroll
            for (int dt = 0; dt < NDQ; dt++)
              __stcg(reinterpret_cast<float2*>(a0 + (mt * 16 + 8 * hf) * D + dt * 8),
                     make_float2(dq[mt][dt][2 * hf], dq[mt][dt][2 * hf + 1]));
      } else {
        // 2 adds the last partial to what is there and writes dQ, 3 writes its own tile: the output
        // has no padding, so these check their rows and columns.
        T* dqb = static_cast<T*>(p.dq);
#pragma unroll
        for (int mt = 0; mt < MS; mt++)
#pragma unroll
          for (int hf = 0; hf < 2; hf++) {
            const int i = m0 + rq + mt * 16 + g + 8 * hf;
            if (i >= sq) continue;
            T* orow = dqb + q_off(p, b, i, h);
            const float* arow = dq_acc + (srow + mt * 16 + 8 * hf) * D;
#pragma unroll
            for (int dt = 0; dt < NDQ; dt++) {
              const int c = c0 + dt * 8;
              if (c >= d) continue;
              float x = dq[mt][dt][2 * hf], y = dq[mt][dt][2 * hf + 1];
              if (role == 2) {
                const float2 o = __ldcg(reinterpret_cast<const float2*>(arow + c));
                x += o.x;
                y += o.y;
              }
              *reinterpret_cast<uint32_t*>(orow + c) = pack2<T>(x * p.scale, y * p.scale);
            }
          }
      }
      if constexpr (FIX) {
        if (!in_range) p.fix_state[2] = 1u;  // the dQ pass kernel recomputes dQ
      }
      if constexpr (ORD) {
        if (rank + 1 < count) release = cnt;
      }
    }
    cur_mb = nxt_mb;
    cur_g = nxt_g;
    advance(nxt_mb, nxt_g);
    // dV += P^T dO and dK += dS^T Q.
#pragma unroll
    for (int kk = 0; kk < BM / 16; kk++) {
      uint32_t pa[2][4], da[2][4];
#pragma unroll
      for (int mt = 0; mt < 2; mt++) {
        ldsm_x4_t(pa[mt], (pAt ^ (mt << 5)) + kk * 16 * BN * 2);
        ldsm_x4_t(da[mt], (pAt ^ (mt << 5)) + kk * 16 * BN * 2 + DS_BYTES);
      }
#pragma unroll
      for (int dt = 0; dt < NDK; dt += 2) {
        uint32_t bb[4];
        ldsm_x4_t(bb, ((oBt0 + stage * STAGE_BYTES) ^ (dt << 4)) + kk * 16 * D * 2);
#pragma unroll
        for (int mt = 0; mt < 2; mt++) {
          mma16816<T>(dv[mt][dt], pa[mt], bb);
          mma16816<T>(dv[mt][dt + 1], pa[mt], bb + 2);
        }
        ldsm_x4_t(bb, ((qBt0 + stage * STAGE_BYTES) ^ (dt << 4)) + kk * 16 * D * 2);
#pragma unroll
        for (int mt = 0; mt < 2; mt++) {
          mma16816<T>(dk[mt][dt], da[mt], bb);
          mma16816<T>(dk[mt][dt + 1], da[mt], bb + 2);
        }
      }
    }
  }
  if constexpr (ORD) {
    __syncthreads();
    publish();
  }
  cp_async_wait<0>();
#pragma unroll
  for (int mt = 0; mt < 2; mt++) store_dkdv_tile<T, NDK>(p, dk[mt], dv[mt], b, hkv, n0 + kw + mt * 16 + g, sk, dw, tq);
  }  // items
}

// The FA2-layout backward: the float32 dQ scratch (rows x d x 4 bytes), the kernel, and (unordered)
// the conversion to dQ; ORD: one counter per (batch, head, query block) and the ticket, zeroed, and
// no conversion (the last contributor writes dQ). Dense or key-padded problems only (no varlen, no
// paged K/V). Returns cudaErrorNotSupported where ORD's no-deadlock argument does not hold (more key
// blocks per key head than the persistent grid has CTAs, or no cooperative launch of it): the caller
// then runs the two passes.
template <typename T, int D, int BM, int MODE>
cudaError_t tc_fa2_launch(const AttnParams& p, cudaStream_t st, size_t* scratch_bytes) {
  constexpr bool FIXF = MODE == FA2_FIXF;
  constexpr bool FIX = MODE == FA2_FIX || FIXF;
  constexpr bool ORD = MODE != FA2_FREE && MODE != FA2_ROT && !FIX;
  constexpr bool ROT = MODE != FA2_FREE && !FIX;
  constexpr int BN = 128;
  constexpr size_t smem =
      (size_t)(2 * BN * D + 4 * BM * D + 2 * BM * BN) * sizeof(T) + (FIX ? 6 : 4) * BM * sizeof(float) + 16;
  const unsigned nkb = (unsigned)((p.seq_k + BN - 1) / BN);
  auto kern = tc_bwd_fa2_kernel<T, D, BM, MODE>;
  cudaError_t e = cudaFuncSetAttribute(kern, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem);
  if (e != cudaSuccess) return e;
  // ROT: the persistent grid, as many CTAs as can be resident (one per SM), launched cooperatively so
  // that all of them are: a key head's nkb items wait on each other, and the lowest unfinished key
  // head's items are all taken once the CTAs are busy if nkb <= the grid. Under a co-scheduled kernel
  // that also waits (another backend's stream, MPS) a plain launch could leave every resident CTA
  // waiting on an item no CTA has taken; a cooperative grid is resident whole.
  if constexpr (FIXF) {
    if (nkb > 1024) return cudaErrorNotSupported;  // L > 10: the split's resolution would fall below 2^-27
  }
  unsigned persistent = 0;
  if constexpr (ROT) {
    int dev = 0, sms = 0, coop = 0, per_sm = 0;
    e = cudaGetDevice(&dev);
    if (e == cudaSuccess) e = cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev);
    if (e == cudaSuccess) e = cudaDeviceGetAttribute(&coop, cudaDevAttrCooperativeLaunch, dev);
    if (e == cudaSuccess) e = cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kern, 256, smem);
    if (e != cudaSuccess) return e;
    persistent = (unsigned)std::min<long long>((long long)sms * per_sm, (long long)nkb * p.hk * p.batch);
    if (!coop || per_sm < 1 || nkb > (long long)sms * per_sm) return cudaErrorNotSupported;
  }
  Scratch scratch(st);
  const long long rows = (long long)p.batch * p.hq * p.seq_q;
  // The dQ scratch: per (batch, head) whole query blocks of rows, D columns (see the kernel's adds).
  const int rows_per_head = (p.seq_q + BM - 1) / BM * BM;
  const size_t acc_bytes = (size_t)std::max<long long>((long long)p.batch * p.hq * rows_per_head * D, 1) * (FIX ? 8 : sizeof(float));
  const long long nsem = ROT ? (long long)p.batch * p.hq * ((p.seq_q + BM - 1) / BM) + 1 : FIX ? 4 : 1;
  const size_t sem_bytes = (size_t)nsem * sizeof(unsigned);
  float* acc = static_cast<float*>(scratch.alloc(acc_bytes));
  unsigned* sem = static_cast<unsigned*>(scratch.alloc(sem_bytes));
  if (!acc || !sem) return scratch.err;
  *scratch_bytes += acc_bytes + sem_bytes;
  if constexpr (ORD) {
    e = cudaMemsetAsync(sem, 0, sem_bytes, st);
    // Rows that see no key at all get dQ = 0 from no key block; only these shapes can have them.
    const bool untouched = p.seqlens_k || p.seq_q > p.seq_k || p.wl >= 0 || p.wr >= 0;
    if (e == cudaSuccess && untouched)
      e = cudaMemsetAsync(p.dq, 0, (size_t)p.total_q * p.hq * p.d * sizeof(T), st);
  } else {
    e = cudaMemsetAsync(acc, 0, acc_bytes, st);
    if (e == cudaSuccess && (ROT || FIX)) e = cudaMemsetAsync(sem, 0, sem_bytes, st);
  }
  if (e != cudaSuccess) return e;
  dim3 grid(nkb, (unsigned)p.hk, (unsigned)p.batch);
  if (grid.x == 0 || grid.y == 0 || grid.z == 0 || rows == 0) return cudaSuccess;
  if constexpr (FIX) {
    // The bound's max |K| and max |V_j| first, then the rows' f_i; the kernel, the conversion, and the
    // dQ pass, which runs only where a contribution fell outside its range (fix_state[2]).
    AttnParams pf = p;
    pf.fix_state = sem;
    pf.fix_rows = static_cast<float*>(scratch.alloc((size_t)rows * sizeof(float)));
    if (!pf.fix_rows) return scratch.err;
    *scratch_bytes += (size_t)rows * sizeof(float);
    const long long kv_rows = (long long)p.batch * p.hk * p.seq_k;
    const long long per_cta = 8LL * (32 / (p.d / 8));
    tc_kv_bound_kernel<T><<<(unsigned)std::min<long long>(264, (kv_rows + per_cta - 1) / per_cta), 256, 0, st>>>(pf);
    tc_fix_rows_kernel<T, FIXF><<<(unsigned)((rows + 7) / 8), 256, 0, st>>>(pf);  // a warp per row: latency-bound
    kern<<<grid, 256, smem, st>>>(pf, acc, nullptr);
    tc_dq_convert_kernel<T, FIXF ? DQ_ACC_SPLIT : DQ_ACC_S64><<<264, 256, 0, st>>>(pf, acc, rows_per_head, D);
    e = cudaGetLastError();
    if (e != cudaSuccess) return e;
    pf.run_if = sem + 2;
    return tc_dq_default_launch<T, D, false>(pf, st);
  }
  if constexpr (ROT) {
    void* args[] = {const_cast<AttnParams*>(&p), &acc, &sem};
    e = cudaLaunchCooperativeKernel(reinterpret_cast<const void*>(kern), dim3(persistent), dim3(256), args, smem, st);
    if (e == cudaErrorCooperativeLaunchTooLarge) {  // fewer SMs than the device has (MPS): two passes
      cudaGetLastError();
      return cudaErrorNotSupported;
    }
  } else {
    kern<<<grid, 256, smem, st>>>(p, acc, sem);
    e = cudaGetLastError();
  }
  if (e != cudaSuccess || ORD) return e;
  tc_dq_convert_kernel<T><<<264, 256, 0, st>>>(p, acc, rows_per_head, D);
  return cudaGetLastError();
}

// The default at both head dims, except where fa2_default (below) picks run 18's kernel: two passes
// (dK/dV, then dQ), each pipelined (STAGES = 2). The fused
// kernel (one pass, 5 products per block pair) measured slower in run 11 (d = 128, s = 4096, full:
// 6.91 ms two passes; fused with the ordered dQ 10.07 ms with 4 warps, 8.94 with 8; with unordered
// atomics 7.90 and 7.40), so it is built only into FA_TUNE builds, as variants: 1 fused, ordered dQ
// (deterministic); 2 fused, unordered atomics (what the order costs; not deterministic); 3 and 4 the
// same with 8 warps (128-key blocks: half the dQ reductions). 2 and 4 fall back to 1 and 3 for varlen.
// Run 14's variants (PERF.md row 14): the dQ pass with two m-tiles per warp (MT = 2, 128 query rows
// per CTA), at d = 64 with the deferred product (3 stages), at d = 128 without it (2 stages), +2-5 %
// with bit-identical gradients, is the default since run 17; 5 is now the one-m-tile dQ pass it
// replaced (3 stages), kept for the A/B; 6 the other MT = 2 forms (d = 64: 2 stages; d = 128: 3
// stages, 4 B of spills); 7
// (d = 128; d = 64 runs the default) the warp-pair dK/dV kernel, then the default dQ pass (2-3 %
// slower at d = 128; at d = 64, measured in run 14 before it was dropped there, 15 %). Run 10's two
// passes, variant 5 until run 13, are gone (rows 11b-11c hold that A/B). Run 18's variants: 8-13 the
// FA2-layout kernel (see tc_fa2_launch's callers below), 14 the two passes where a fused kernel is the
// default; run 20's: 15 and 16 the fixed-point dQ (FA2_FIX, FA2_FIXF).
// Run 18c's measurement (PERF.md row 18c): the FA2-layout kernel with the ordered dQ (FA2_ORD_WARP,
// deterministic) beats the two passes at d = 128 without a causal or window mask from s = 1024 up
// (+3 % at 1k, +9 % at 4k, +10.5 % at 16k), and loses with the causal mask (-6 to 0 %) and at d = 64
// (-4 to -8 %); shorter sequences were not measured. So it is the default there, on dense or
// key-padded K/V, when the key blocks of a key head fit on the SMs at once (its no-deadlock rule;
// otherwise, and everywhere else, the two passes). Run 21b (the reductions without bounds checks): at
// d = 64 it now beats the two passes from s = 4096 too (full, bfloat16 ms, two passes / ordered: 4096
// 6.168 / 6.025, 8192 12.055 / 11.640, 16384 23.66 / 23.15; 2048 even, 1024 1.752 / 1.811).
inline bool fa2_default(const AttnParams& p) {
  const long long s = std::min(p.seq_q, p.seq_k);
  return !p.causal && p.wl < 0 && p.wr < 0 && !p.cu_q && !p.cu_k && !p.block_table && s >= (p.d > 64 ? 1024 : 4096);
}

// Run 20b's measurement (PERF.md row 20b): with the causal mask at d = 128 the ordered kernel gains
// nothing over the two passes (its turns wait: the key blocks' uneven work runs against the dQ order),
// while the fixed-point kernel (FA2_FIXF, deterministic, no waiting) trails the unordered one by a
// steady ~12 % and so passes the two passes once the fused layout's gain grows past that: at s = 16384
// 11.75 against 12.58 ms (s = 4096: 3.68 against 3.47; run 20h: s = 8192 6.477 against 6.645). So it is
// the default there: d = 128, causal, no window, dense or key-padded K/V, s >= 8192 (at most 1024 key
// blocks, its range's limit).
inline bool fa2_fix_default(const AttnParams& p) {
  return p.d > 64 && p.causal && p.wl < 0 && p.wr < 0 && !p.cu_q && !p.cu_k && !p.block_table && p.seq_q >= 8192 &&
         p.seq_k >= 8192;
}

// The opt-in unordered dQ (`createCudaBackend({ deterministic: false })`, SPEC §4): the FA2-layout
// kernel with plain float32 reductions (FA2_FREE, variant 8) where it beat the deterministic default in
// runs 20c-20h (bfloat16 ms, default / unordered): d = 128 full s = 2048 2.966 / 2.965, 4096 5.575 /
// 5.530, 16384 21.41 / 20.69, causal 2048 1.897 / 1.835, 4096 3.499 / 3.174, 16384 11.75 / 10.42
// (s = 1024: 1.648 / 1.713, 1.103 / 1.171, slower); d = 64 from s = 4096 since run 21b (full 6.168 /
// 5.759, causal 3.386 / 3.248; 16384: 23.66 / 21.44, 12.25 / 10.83; at 2048 causal 1.888 / 1.915).
// Masks other than causal were not measured: the deterministic kernels run there.
inline bool fa2_free_default(const AttnParams& p) {
  const long long s = std::min(p.seq_q, p.seq_k);
  return p.wl < 0 && p.wr < 0 && !p.cu_q && !p.cu_k && !p.block_table && s >= (p.d > 64 ? 2048 : 4096);
}

// Head dims 129-256 (tiles padded to 256): the two passes, the dK/dV pass split in two launches
// (DkdvPart). Single-buffered so that each kernel's shared memory stays under 99 KB (dK/dV: 64 keys
// against 32-row query blocks, 96.4 KB, or 16-row ones with the per-pair extras, which spill 108 B at
// 32; dQ: 64 rows against 32-key blocks, 96 KB): it then runs on
// every sm_80+ part (sm_86 and sm_89 allow 99 KB per block), and on A100 / H100 two CTAs share an SM,
// one's loads overlapping the other's products.
// The three launches, with NWKV warps per dK/dV CTA and NWQ per dQ CTA.
template <typename T, bool EXTRAS, int NWKV, int NWQ> cudaError_t tc_d256_passes(const AttnParams& p, cudaStream_t st) {
  constexpr int BM = EXTRAS ? 16 : 32;
  cudaError_t e = tc_dkdv_launch<T, 256, BM, NWKV, EXTRAS, 1, DQ_NONE, PART_DV>(p, st);
  if (e == cudaSuccess) e = tc_dkdv_launch<T, 256, BM, NWKV, EXTRAS, 1, DQ_NONE, PART_DK>(p, st);
  if (e == cudaSuccess) e = tc_dq_launch<T, 256, 32, NWQ, EXTRAS, 1>(p, st);
  return e;
}

template <typename T, bool EXTRAS> cudaError_t tc_backward_d256(const AttnParams& p, int variant, cudaStream_t st) {
  (void)variant;
#ifdef FA_TUNE
  // Run 22b (float16 ms at s = 4096 full / 16384 causal; the default 8.396 / 16.70): 1 = the dK/dV
  // launches with 8 warps (128 keys, 160 KB: one Q / dO load serves twice the keys; 9.808 / 19.24),
  // 2 = the dQ pass with 8 warps (128 rows, 160 KB; 9.103 / 17.81), 3 = both (10.39 / 20.22). One CTA
  // of 8 warps per SM loses to two of 4: a CTA's barrier and single-buffered loads stall all of its
  // warps, the second CTA's keep the tensor cores busy.
  if constexpr (!EXTRAS) {
    if (variant == 1) return tc_d256_passes<T, EXTRAS, 8, 4>(p, st);
    if (variant == 2) return tc_d256_passes<T, EXTRAS, 4, 8>(p, st);
    if (variant == 3) return tc_d256_passes<T, EXTRAS, 8, 8>(p, st);
  }
#endif
  return tc_d256_passes<T, EXTRAS, 4, 4>(p, st);
}

template <typename T, bool EXTRAS>
cudaError_t tc_backward_t(const AttnParams& p, int variant, bool* unordered, cudaStream_t st, size_t* scratch_bytes) {
  (void)variant;
  const bool allow_unordered = *unordered;
  *unordered = false;
  if (p.d > 128) return tc_backward_d256<T, EXTRAS>(p, variant, st);
  cudaError_t e;
  bool two_passes = false;  // variant 14: the two passes where the FA2-layout kernel is the default
#ifdef FA_TUNE
  if constexpr (!EXTRAS) {
    const bool atomic = !p.cu_q;
    switch (variant) {
      case 1:
        return p.d <= 64 ? tc_fused_launch<T, 64, 64, 4, DQ_ORDERED>(p, st, scratch_bytes)
                         : tc_fused_launch<T, 128, 32, 4, DQ_ORDERED>(p, st, scratch_bytes);
      case 2:
        if (atomic)
          return p.d <= 64 ? tc_fused_launch<T, 64, 64, 4, DQ_ATOMIC>(p, st, scratch_bytes)
                           : tc_fused_launch<T, 128, 32, 4, DQ_ATOMIC>(p, st, scratch_bytes);
        return p.d <= 64 ? tc_fused_launch<T, 64, 64, 4, DQ_ORDERED>(p, st, scratch_bytes)
                         : tc_fused_launch<T, 128, 32, 4, DQ_ORDERED>(p, st, scratch_bytes);
      case 3:
        return p.d <= 64 ? tc_fused_launch<T, 64, 64, 8, DQ_ORDERED>(p, st, scratch_bytes)
                         : tc_fused_launch<T, 128, 32, 8, DQ_ORDERED>(p, st, scratch_bytes);
      case 4:
        if (atomic)
          return p.d <= 64 ? tc_fused_launch<T, 64, 64, 8, DQ_ATOMIC>(p, st, scratch_bytes)
                           : tc_fused_launch<T, 128, 32, 8, DQ_ATOMIC>(p, st, scratch_bytes);
        return p.d <= 64 ? tc_fused_launch<T, 64, 64, 8, DQ_ORDERED>(p, st, scratch_bytes)
                         : tc_fused_launch<T, 128, 32, 8, DQ_ORDERED>(p, st, scratch_bytes);
      case 5:
      case 6:
        e = p.d <= 64 ? tc_dkdv_launch<T, 64, 64, 4, false, 2>(p, st) : tc_dkdv_launch<T, 128, 32, 4, false, 2>(p, st);
        if (e != cudaSuccess) return e;
        if (variant == 5)
          return p.d <= 64 ? tc_dq_launch<T, 64, 32, 4, false, 3>(p, st) : tc_dq_launch<T, 128, 32, 4, false, 3>(p, st);
        return p.d <= 64 ? tc_dq_launch<T, 64, 32, 4, false, 2, 2>(p, st) : tc_dq_launch<T, 128, 32, 4, false, 3, 2>(p, st);
      case 7:
        if (p.d > 64) {
          e = tc_dkdv_pair_launch<T, 128, 32, 2>(p, st);
          return e == cudaSuccess ? tc_dq_launch<T, 128, 32, 4, false, 3>(p, st) : e;
        }
        break;
      case 8:
      case 9:
      case 10:
        // Run 18: the FA2-layout fused kernel. 8: unordered dQ reductions, d = 128 with 64-query
        // blocks, d = 64 with 128; 9: the same with d = 128: 32, d = 64: 64; 10-12: 8's tiles with
        // the dQ adds in a fixed order (deterministic; the two passes where it does not apply), the
        // turn's forms FA2_ORD_SC, FA2_ORD, FA2_ORD_WARP; 13: FA2_ROT (unordered, rotated order).
        if (p.cu_q || p.cu_k || p.block_table) break;
        if (variant == 8)
          return p.d <= 64 ? tc_fa2_launch<T, 64, 128, FA2_FREE>(p, st, scratch_bytes)
                           : tc_fa2_launch<T, 128, 64, FA2_FREE>(p, st, scratch_bytes);
        if (variant == 9)
          return p.d <= 64 ? tc_fa2_launch<T, 64, 64, FA2_FREE>(p, st, scratch_bytes)
                           : tc_fa2_launch<T, 128, 32, FA2_FREE>(p, st, scratch_bytes);
        e = p.d <= 64 ? tc_fa2_launch<T, 64, 128, FA2_ORD_SC>(p, st, scratch_bytes)
                      : tc_fa2_launch<T, 128, 64, FA2_ORD_SC>(p, st, scratch_bytes);
        if (e != cudaErrorNotSupported) return e;
        break;
      case 11:
      case 12:
      case 13:
        if (p.cu_q || p.cu_k || p.block_table) break;
        if (variant == 11)
          e = p.d <= 64 ? tc_fa2_launch<T, 64, 128, FA2_ORD>(p, st, scratch_bytes)
                        : tc_fa2_launch<T, 128, 64, FA2_ORD>(p, st, scratch_bytes);
        else if (variant == 12)
          e = p.d <= 64 ? tc_fa2_launch<T, 64, 128, FA2_ORD_WARP>(p, st, scratch_bytes)
                        : tc_fa2_launch<T, 128, 64, FA2_ORD_WARP>(p, st, scratch_bytes);
        else
          e = p.d <= 64 ? tc_fa2_launch<T, 64, 128, FA2_ROT>(p, st, scratch_bytes)
                        : tc_fa2_launch<T, 128, 64, FA2_ROT>(p, st, scratch_bytes);
        if (e != cudaErrorNotSupported) return e;
        break;
      case 14: two_passes = true; break;
      case 15:
        // Run 20: the FA2-layout kernel with the 64-bit fixed-point dQ (FA2_FIX; deterministic, no
        // waiting), 8's tiles.
        if (p.cu_q || p.cu_k || p.block_table) break;
        return p.d <= 64 ? tc_fa2_launch<T, 64, 128, FA2_FIX>(p, st, scratch_bytes)
                         : tc_fa2_launch<T, 128, 64, FA2_FIX>(p, st, scratch_bytes);
      case 16:
        // Run 20b: the same with the fixed point carried in float32 (FA2_FIXF).
        if (p.cu_q || p.cu_k || p.block_table) break;
        e = p.d <= 64 ? tc_fa2_launch<T, 64, 128, FA2_FIXF>(p, st, scratch_bytes)
                      : tc_fa2_launch<T, 128, 64, FA2_FIXF>(p, st, scratch_bytes);
        if (e != cudaErrorNotSupported) return e;
        break;
      default: break;
    }
  }
#endif
  if constexpr (!EXTRAS) {
    if (!two_passes && allow_unordered && fa2_free_default(p)) {
      e = p.d <= 64 ? tc_fa2_launch<T, 64, 128, FA2_FREE>(p, st, scratch_bytes)
                    : tc_fa2_launch<T, 128, 64, FA2_FREE>(p, st, scratch_bytes);
      *unordered = e == cudaSuccess;
      return e;
    }
    if (!two_passes && fa2_default(p)) {
      e = p.d <= 64 ? tc_fa2_launch<T, 64, 128, FA2_ORD_WARP>(p, st, scratch_bytes)
                    : tc_fa2_launch<T, 128, 64, FA2_ORD_WARP>(p, st, scratch_bytes);
      if (e != cudaErrorNotSupported) return e;
    }
    if (!two_passes && fa2_fix_default(p)) {
      e = tc_fa2_launch<T, 128, 64, FA2_FIXF>(p, st, scratch_bytes);
      if (e != cudaErrorNotSupported) return e;
    }
  }
  (void)two_passes;
  // The two passes: dK/dV, then the default dQ pass (tc_dq_default_launch).
  if (p.d <= 64) {
    e = tc_dkdv_launch<T, 64, EXTRAS ? 32 : 64, 4, EXTRAS, 2>(p, st);
    if (e != cudaSuccess) return e;
    return tc_dq_default_launch<T, 64, EXTRAS>(p, st);
  }
  e = tc_dkdv_launch<T, 128, 32, 4, EXTRAS, 2>(p, st);
  if (e != cudaSuccess) return e;
  return tc_dq_default_launch<T, 128, EXTRAS>(p, st);
}

}  // namespace fa

#define FA_INSTANTIATE_TC_BWD(T, NAME)                                                    \
  namespace fa {                                                                         \
  cudaError_t tc_backward_##NAME(const AttnParams& p, bool extras, int variant, bool* unordered, cudaStream_t st, \
                                 size_t* scratch) {                                      \
    return extras ? tc_backward_t<T, true>(p, variant, unordered, st, scratch)           \
                  : tc_backward_t<T, false>(p, variant, unordered, st, scratch);         \
  }                                                                                      \
  }
