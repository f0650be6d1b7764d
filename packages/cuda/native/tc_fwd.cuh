// FlashAttention-2 forward on tensor cores (mma.sync m16n8k16, ldmatrix, cp.async), float16/bfloat16.
// One CTA per (query block, head, batch); K and V tiles stream through shared memory, V's load
// overlapping Q K^T and the next K's load overlapping P V; the online softmax lives in registers.
// EXTRAS adds softcap, ALiBi, bias and dropout per element; without it only boundary blocks of the
// causal / window / length mask pay for masking.
#pragma once
#include "tc_common.cuh"

namespace fa {

// STAGES = 1: K and V in one buffer each, V's load overlapping S = QK^T and the next K's overlapping
// P V (FA2's schedule, two barriers per block). STAGES >= 2: K and V of block n + STAGES - 1 are
// issued while block n is computed (a ring of STAGES buffers, one barrier per block).
// MINB: CTAs per SM that ptxas must fit in the registers (__launch_bounds__' second argument).
// CAP: a softcap and no other extra, on the plain kernel (the score's transform below; masks only on
// boundary blocks): the per-element path cost 4-7x the plain one at d <= 128 (run 24).
template <typename T, int D, int BR, int BC, int NW, bool EXTRAS, int STAGES, int MINB = 1, bool CAP = false>
__global__ void __launch_bounds__(NW * 32, MINB) tc_fwd_kernel(AttnParams p) {
  constexpr int NT = NW * 32;
  constexpr int MT = BR / (16 * NW);  // m16 tiles per warp
  constexpr int NB = BC / 8;          // n8 tiles of S
  constexpr int ND = D / 8;           // n8 tiles of O
  static_assert(MT >= 1 && BR == MT * 16 * NW, "BR must be a multiple of 16 * NW");
  static_assert(NB % 2 == 0 && ND % 2 == 0, "tiles come in pairs");
  static_assert(!(CAP && EXTRAS), "CAP is the plain kernel's");
  constexpr bool FOLD = !EXTRAS && !CAP && !(D == 128 && BC == 64);  // see the scores below
  extern __shared__ __align__(128) unsigned char smem_raw[];
  constexpr int NS = STAGES < 2 ? 1 : STAGES;
  T* Qs = reinterpret_cast<T*>(smem_raw);
  T* Ks = Qs + BR * D;
  T* Vs = Ks + NS * BC * D;

  const int mb = gridDim.x - 1 - blockIdx.x;  // heavy (late, causal) blocks first
  const int h = blockIdx.y, b = blockIdx.z;
  const int hkv = h / p.group;
  const int sq = seqlen_q(p, b), sk = seqlen_k(p, b);
  const int m0 = mb * BR;
  if (m0 >= sq) return;
  const int off = sk - sq, d = p.d;
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
  const int g = lane >> 2, tq = lane & 3;
  const int wr0 = warp * MT * 16;

  const T* qbase = static_cast<const T*>(p.q);
  const T* kbase = static_cast<const T*>(p.k);
  const T* vbase = static_cast<const T*>(p.v);

  // Key span of the block: lo of its first row, hi of its last valid row.
  const int last = min(m0 + BR, sq) - 1;
  int lo_first, hi_first, lo_last, hi_last;
  key_range(p, m0, sq, sk, lo_first, hi_first);
  key_range(p, last, sq, sk, lo_last, hi_last);
  const int nb_lo = lo_first / BC;
  const int nb_hi = hi_last > lo_first ? (hi_last + BC - 1) / BC : nb_lo;

  // Per row-slot (mt, half) state: rows wr0 + mt*16 + g + 8*half.
  float m[MT][2], l[MT][2];
  int rlo[MT][2], rhi[MT][2];
  float o[MT][ND][4];
#pragma unroll
  for (int mt = 0; mt < MT; mt++) {
#pragma unroll
    for (int hf = 0; hf < 2; hf++) {
      m[mt][hf] = -INFINITY;
      l[mt][hf] = 0.f;
      if constexpr (EXTRAS) key_range(p, m0 + wr0 + mt * 16 + g + 8 * hf, sq, sk, rlo[mt][hf], rhi[mt][hf]);
    }
#pragma unroll
    for (int dt = 0; dt < ND; dt++)
#pragma unroll
      for (int e = 0; e < 4; e++) o[mt][dt][e] = 0.f;
  }
  const float scale_log2 = p.scale * LOG2E;

  const long long kv0 = p.block_table ? 0 : kv_off(p, b, 0, hkv);  // row 0 of this key head (unpaged)
  auto load_k = [&](int nb, int stage) {
    const int j0 = nb * BC;
    if (p.block_table)
      tc_load_tile<T, D, NT>(Ks + stage * BC * D, BC, sk - j0, d, [&](int r) { return kbase + kv_off(p, b, j0 + r, hkv); },
                             kbase);
    else
      tc_load_tile_strided<T, D, NT, BC>(Ks + stage * BC * D, sk - j0, d, kbase + kv0 + j0 * p.kv_ss, p.kv_ss);
  };
  auto load_v = [&](int nb, int stage) {
    const int j0 = nb * BC;
    if (p.block_table)
      tc_load_tile<T, D, NT>(Vs + stage * BC * D, BC, sk - j0, d, [&](int r) { return vbase + kv_off(p, b, j0 + r, hkv); },
                             vbase);
    else
      tc_load_tile_strided<T, D, NT, BC>(Vs + stage * BC * D, sk - j0, d, vbase + kv0 + j0 * p.kv_ss, p.kv_ss);
  };

  if (nb_lo < nb_hi) {
    tc_load_tile_strided<T, D, NT, BR>(Qs, sq - m0, d, qbase + q_off(p, b, m0, h), p.q_ss);
    if constexpr (STAGES < 2) {
      load_k(nb_lo, 0);
      cp_async_commit();
    } else {
#pragma unroll
      for (int st = 0; st < STAGES - 1; st++) {
        if (nb_lo + st < nb_hi) {
          load_k(nb_lo + st, st);
          load_v(nb_lo + st, st);
        }
        cp_async_commit();
      }
    }
  }

  const uint32_t qaddr = FragAddr<D>::a(smem_u32(Qs + wr0 * D), lane);
  check_smem_alignment(smem_raw);
  for (int nb = nb_lo; nb < nb_hi; nb++) {
    const int j0 = nb * BC;
    const int stage = STAGES < 2 ? 0 : (nb - nb_lo) % NS;
    const uint32_t kaddr = FragAddr<D>::b(smem_u32(Ks + stage * BC * D), lane);
    const uint32_t vaddr = FragAddr<D>::bt(smem_u32(Vs + stage * BC * D), lane);
    if constexpr (STAGES < 2) {
      cp_async_wait<0>();
      __syncthreads();  // K[nb] (and Q) in place; every warp is done with V[nb-1]
      load_v(nb, 0);
      cp_async_commit();
    } else {
      cp_async_wait<STAGES - 2>();
      __syncthreads();  // block nb in place; every warp is done with the stage refilled next
      const int nf = nb + STAGES - 1;
      if (nf < nb_hi) {
        load_k(nf, (nf - nb_lo) % NS);
        load_v(nf, (nf - nb_lo) % NS);
      }
      cp_async_commit();
    }

    // S = Q K^T.
    float s[MT][NB][4];
#pragma unroll
    for (int mt = 0; mt < MT; mt++)
#pragma unroll
      for (int nt = 0; nt < NB; nt++)
#pragma unroll
        for (int e = 0; e < 4; e++) s[mt][nt][e] = 0.f;
#pragma unroll
    for (int ks = 0; ks < D / 16; ks++) {
      uint32_t a[MT][4];
#pragma unroll
      for (int mt = 0; mt < MT; mt++) ldsm_x4(a[mt], (qaddr ^ (ks << 5)) + mt * 16 * D * 2);
#pragma unroll
      for (int nt = 0; nt < NB; nt += 2) {
        uint32_t bb[4];
        ldsm_x4(bb, (kaddr ^ (ks << 5)) + nt * 8 * D * 2);
#pragma unroll
        for (int mt = 0; mt < MT; mt++) {
          mma16816<T>(s[mt][nt], a[mt], bb);
          mma16816<T>(s[mt][nt + 1], a[mt], bb + 2);
        }
      }
    }

    // Scores (in log2 units with EXTRAS), masked where needed.
    const bool need_mask = EXTRAS || !(j0 >= lo_last && j0 + BC <= hi_first);
    if constexpr (EXTRAS) {
#pragma unroll
      for (int mt = 0; mt < MT; mt++)
#pragma unroll
        for (int nt = 0; nt < NB; nt++)
#pragma unroll
          for (int e = 0; e < 4; e++) {
            const int hf = e >> 1;
            const int i = m0 + wr0 + mt * 16 + g + 8 * hf;
            const int j = j0 + nt * 8 + tq * 2 + (e & 1);
            float x = -INFINITY;
            float slope;  // unused here
            if (j >= rlo[mt][hf] && j < rhi[mt][hf])
              x = modify_score_tc(p, s[mt][nt][e] * p.scale, b, h, i, j, off, slope) * LOG2E;
            s[mt][nt][e] = x;
          }
    } else {
      // FOLD: raw scores, the scale (> 0 here: the dispatcher sends other scales to the EXTRAS
      // kernel) applied to the row max and inside the exponent's FFMA, one instruction per score
      // fewer. Not in the 128 x 64 tile at d = 128, where it made ptxas spill 48 B (run 8's build).
      if constexpr (CAP) {
        // cap tanh(scale dot / cap) in log2 units: scaled_tanh_exp2(K dot, C1) with K = 2 log2e scale /
        // cap, C1 = cap log2e: an FMUL, two MUFU, an FADD and an FFMA per score.
        const float K = 2.f * LOG2E * p.scale / p.softcap, C1 = p.softcap * LOG2E;
#pragma unroll
        for (int mt = 0; mt < MT; mt++)
#pragma unroll
          for (int nt = 0; nt < NB; nt++)
#pragma unroll
            for (int e = 0; e < 4; e++)
              s[mt][nt][e] = scaled_tanh_exp2(s[mt][nt][e] * K, C1);
      } else if constexpr (!FOLD) {
#pragma unroll
        for (int mt = 0; mt < MT; mt++)
#pragma unroll
          for (int nt = 0; nt < NB; nt++)
#pragma unroll
            for (int e = 0; e < 4; e++) s[mt][nt][e] *= scale_log2;
      }
      if (need_mask) {
        // A real branch: left to itself the compiler turns the mask into selects executed on every
        // block, with the row bounds recomputed each time (~180 instructions per block, run 4).
        asm volatile("");
#pragma unroll
        for (int mt = 0; mt < MT; mt++)
#pragma unroll
          for (int hf = 0; hf < 2; hf++) {
            int lo, hi;
            key_range(p, m0 + wr0 + mt * 16 + g + 8 * hf, sq, sk, lo, hi);
            const int a = lo - j0 - tq * 2;  // column c of the lane is allowed iff a <= c < a + (hi - lo)
            const unsigned w = (unsigned)(hi - lo);
#pragma unroll
            for (int nt = 0; nt < NB; nt++)
#pragma unroll
              for (int e1 = 0; e1 < 2; e1++)
                if ((unsigned)(nt * 8 + e1 - a) >= w) s[mt][nt][2 * hf + e1] = -INFINITY;
          }
      }
    }

    // Online softmax: row max over the quad, rescale, exponentiate.
    const float sc = FOLD ? scale_log2 : 1.f;  // otherwise the scores are already in log2 units
    float al[MT][2];
#pragma unroll
    for (int mt = 0; mt < MT; mt++)
#pragma unroll
      for (int hf = 0; hf < 2; hf++) {
        float mx = -INFINITY;
#pragma unroll
        for (int nt = 0; nt < NB; nt++) mx = max_nan(mx, max_nan(s[mt][nt][2 * hf], s[mt][nt][2 * hf + 1]));
        mx = max_nan(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
        mx = max_nan(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
        if constexpr (FOLD) mx *= scale_log2;
        // The reference maximum moves only when the block's exceeds it by more than 2^8: P may then
        // reach 256 (exact in 16 bits, and l and O are float32), and the O rescale below is rare.
        const float mn = max_nan(m[mt][hf], mx);
        float alpha = 1.f;
        if (mn > m[mt][hf] + 8.f) {
          alpha = exp2_approx(m[mt][hf] - mn);
          m[mt][hf] = mn;
        }
        const float mu = m[mt][hf] == -INFINITY ? 0.f : m[mt][hf];
        float rs = 0.f;
#pragma unroll
        for (int nt = 0; nt < NB; nt++) {
          const float p0 = exp2_approx(fmaf(s[mt][nt][2 * hf], sc, -mu));
          const float p1 = exp2_approx(fmaf(s[mt][nt][2 * hf + 1], sc, -mu));
          s[mt][nt][2 * hf] = p0;
          s[mt][nt][2 * hf + 1] = p1;
          rs += p0 + p1;
        }
        l[mt][hf] = l[mt][hf] * alpha + rs;
        al[mt][hf] = alpha;
      }
    // Once the running maxima settle (most blocks past the first few), the O rescale is skipped.
    bool rescale = false;
#pragma unroll
    for (int mt = 0; mt < MT; mt++) rescale |= al[mt][0] != 1.f || al[mt][1] != 1.f;
    if (__any_sync(0xffffffffu, rescale)) {
#pragma unroll
      for (int mt = 0; mt < MT; mt++)
#pragma unroll
        for (int dt = 0; dt < ND; dt++) {
          o[mt][dt][0] *= al[mt][0];
          o[mt][dt][1] *= al[mt][0];
          o[mt][dt][2] *= al[mt][1];
          o[mt][dt][3] *= al[mt][1];
        }
    }

    if constexpr (EXTRAS) {
      if (p.has_dropout) {
#pragma unroll
        for (int mt = 0; mt < MT; mt++)
#pragma unroll
          for (int nt = 0; nt < NB; nt++)
#pragma unroll
            for (int e = 0; e < 4; e++) {
              const int i = m0 + wr0 + mt * 16 + g + 8 * (e >> 1);
              const int j = j0 + nt * 8 + tq * 2 + (e & 1);
              if (s[mt][nt][e] != 0.f) s[mt][nt][e] *= drop_weight(p, b, h, i, j);
            }
      }
    }

    if constexpr (STAGES < 2) {
      cp_async_wait<0>();
      __syncthreads();  // V[nb] in place; every warp is done with K[nb]
      if (nb + 1 < nb_hi) {
        load_k(nb + 1, 0);
        cp_async_commit();
      }
    }

    // O += P V.
#pragma unroll
    for (int kk = 0; kk < BC / 16; kk++) {
      uint32_t a[MT][4];
#pragma unroll
      for (int mt = 0; mt < MT; mt++) {
        acc_to_a<T>(a[mt], s[mt][2 * kk], s[mt][2 * kk + 1]);
      }
#pragma unroll
      for (int dt = 0; dt < ND; dt += 2) {
        uint32_t bb[4];
        ldsm_x4_t(bb, (vaddr ^ (dt << 4)) + kk * 16 * D * 2);
#pragma unroll
        for (int mt = 0; mt < MT; mt++) {
          mma16816<T>(o[mt][dt], a[mt], bb);
          mma16816<T>(o[mt][dt + 1], a[mt], bb + 2);
        }
      }
    }
  }

  // Epilogue: normalise, stage this warp's rows in its own part of Qs, store 16-byte chunks.
  cp_async_wait<0>();
  __syncwarp();
#pragma unroll
  for (int mt = 0; mt < MT; mt++)
#pragma unroll
    for (int hf = 0; hf < 2; hf++) {
      float lt = l[mt][hf];
      lt += __shfl_xor_sync(0xffffffffu, lt, 1);
      lt += __shfl_xor_sync(0xffffffffu, lt, 2);
      const float inv = lt == 0.f ? 0.f : 1.f / lt;
      const int r = wr0 + mt * 16 + g + 8 * hf;
#pragma unroll
      for (int dt = 0; dt < ND; dt++) {
        const uint32_t v2 = pack2<T>(o[mt][dt][2 * hf] * inv, o[mt][dt][2 * hf + 1] * inv);
        *reinterpret_cast<uint32_t*>(Qs + swz<D>(r, dt * 8 + tq * 2)) = v2;
      }
      const int i = m0 + r;
      if (tq == 0 && p.lse && i < sq) {
        p.lse[lse_idx(p, b, h, i)] = lt == 0.f ? -INFINITY : m[mt][hf] * LN2 + logf(lt);
      }
    }
  __syncwarp();
  T* obase = static_cast<T*>(p.out);
  const int cpr = d >> 3;
  for (int idx = lane; idx < MT * 16 * ND; idx += 32) {
    const int rr = idx / ND, c = idx % ND;
    const int r = wr0 + rr, i = m0 + r;
    if (i < sq && c < cpr) {
      *reinterpret_cast<uint4*>(obase + q_off(p, b, i, h) + c * 8) =
          *reinterpret_cast<const uint4*>(Qs + swz<D>(r, c * 8));
    }
  }
}

template <typename T, int D, int BR, int BC, int NW, bool EXTRAS, int STAGES, int MINB = 1, bool CAP = false>
cudaError_t tc_fwd_launch(const AttnParams& p, cudaStream_t st) {
  constexpr size_t smem = (size_t)(BR + 2 * (STAGES < 2 ? 1 : STAGES) * BC) * D * sizeof(T);
  auto kern = tc_fwd_kernel<T, D, BR, BC, NW, EXTRAS, STAGES, MINB, CAP>;
  if (smem > 48 * 1024) {
    cudaError_t e = cudaFuncSetAttribute(kern, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem);
    if (e != cudaSuccess) return e;
  }
  dim3 grid((unsigned)((p.seq_q + BR - 1) / BR), (unsigned)p.hq, (unsigned)p.batch);
  if (grid.x == 0 || grid.y == 0 || grid.z == 0) return cudaSuccess;
  kern<<<grid, NW * 32, smem, st>>>(p);
  return cudaGetLastError();
}

// A softcap alone (cap): the plain kernels' default tiles with the CAP transform.
template <typename T> cudaError_t tc_forward_cap(const AttnParams& p, cudaStream_t st) {
  if (p.d <= 64) return tc_fwd_launch<T, 64, 128, 128, 4, false, 2, 1, true>(p, st);
  if (p.d <= 128) return tc_fwd_launch<T, 128, 128, 64, 4, false, 2, 1, true>(p, st);
  return tc_fwd_launch<T, 256, 64, 64, 4, false, 1, 1, true>(p, st);
}

// Tile configurations (chosen by the compiler's register report: no spills; see PERF.md) and
// pipeline depth. variant != 0 selects alternatives built with -DFA_TUNE for the benchmarks:
// d = 64 (128 x 64 tiles): 1 = single buffer (the default of runs 7-11), 2 = two stages, 3 = three
// stages (the default before run 7), 4-9 below; d = 128 (128 x 32 tiles): 1 = single buffer, 2 = two
// stages, 3 = three stages (the default before run 6).
template <typename T, bool EXTRAS> cudaError_t tc_forward_t(const AttnParams& p, int variant, cudaStream_t st) {
  (void)variant;
  if (p.d <= 64) {
    if constexpr (EXTRAS) {
      return tc_fwd_launch<T, 64, 128, 64, 4, EXTRAS, 3>(p, st);
    } else {
#ifdef FA_TUNE
      if (variant == 1) return tc_fwd_launch<T, 64, 128, 64, 4, EXTRAS, 1>(p, st);
      if (variant == 2) return tc_fwd_launch<T, 64, 128, 64, 4, EXTRAS, 2>(p, st);
      if (variant == 3) return tc_fwd_launch<T, 64, 128, 64, 4, EXTRAS, 3>(p, st);
      // More CTAs per SM (run 12): 64 x 64 tiles, 4 warps x 16 rows, four CTAs (125 registers); 64 x
      // 128, three CTAs (164 registers); 128 x 64 with two stages squeezed into three CTAs (168
      // registers, 84 B of spills); and the default's tile with three stages.
      if (variant == 4) return tc_fwd_launch<T, 64, 64, 64, 4, EXTRAS, 2, 4>(p, st);
      if (variant == 7) return tc_fwd_launch<T, 64, 64, 128, 4, EXTRAS, 2, 3>(p, st);
      if (variant == 8) return tc_fwd_launch<T, 64, 128, 64, 4, EXTRAS, 2, 3>(p, st);
      if (variant == 9) return tc_fwd_launch<T, 64, 128, 128, 4, EXTRAS, 3>(p, st);
#endif
      // FA2's tile for d = 64: 128 x 128, two stages (80 KB, two CTAs per SM; 255 registers with 60 B
      // of spills, which by the timings do not sit in the hot loop; not checked in SASS). Half the
      // per-block work of 128 x 64 (the barrier, the row maxima and their shuffles, the rescale
      // test): 9-12 % ahead of its single buffer at every length in run 12, and ahead of the three-
      // and four-CTA tiles everywhere but s = 512 causal.
      return tc_fwd_launch<T, 64, 128, 128, 4, EXTRAS, 2>(p, st);
    }
  }
  if (p.d <= 128) {
#ifdef FA_TUNE
    if constexpr (!EXTRAS) if (variant == 1) return tc_fwd_launch<T, 128, 128, 32, 4, EXTRAS, 1>(p, st);
    if constexpr (!EXTRAS) if (variant == 2) return tc_fwd_launch<T, 128, 128, 32, 4, EXTRAS, 2>(p, st);
    if constexpr (!EXTRAS) if (variant == 3) return tc_fwd_launch<T, 128, 128, 32, 4, EXTRAS, 3>(p, st);
#endif
    // 128 x 64 tiles, two stages (96 KB, two CTAs per SM): half the softmax and rescale work per key
    // of 128 x 32; it fits the registers once the mask's row bounds are no longer held (run 5).
    // With the per-element extras it would spill: those keep 128 x 32 and three stages.
    if constexpr (EXTRAS) return tc_fwd_launch<T, 128, 128, 32, 4, EXTRAS, 3>(p, st);
    else return tc_fwd_launch<T, 128, 128, 64, 4, EXTRAS, 2>(p, st);
  }
#ifdef FA_TUNE
  // d = 256 (run 22b, float16 ms at s = 4096 full / 16384 causal; the default 1.786 / 3.645): 1 = 64 x 32
  // with two stages (the default before run 22; 2.054 / 3.990), 2 = 128 x 64 with 8 warps, single
  // buffer (128 KB; 1.967 / 3.818), 3 = 128 x 32 with 8 warps, two stages (128 KB; 2.312 / 4.479),
  // 4 = 64 x 32, single buffer (64 KB; 2.146 / 4.176).
  if constexpr (!EXTRAS) {
    if (variant == 1) return tc_fwd_launch<T, 256, 64, 32, 4, EXTRAS, 2>(p, st);
    if (variant == 2) return tc_fwd_launch<T, 256, 128, 64, 8, EXTRAS, 1>(p, st);
    if (variant == 3) return tc_fwd_launch<T, 256, 128, 32, 8, EXTRAS, 2>(p, st);
    if (variant == 4) return tc_fwd_launch<T, 256, 64, 32, 4, EXTRAS, 1>(p, st);
  }
#endif
  // d <= 256: 64 x 64 tiles, single buffer (96 KB: two CTAs per SM, one's loads under the other's
  // products), since run 22: +12-15 % over 64 x 32 with two stages (96 KB too), which halves the keys
  // per online-softmax step and so doubles the rescales of the 128 O registers per thread. The same
  // for the extras since run 24 (+5-16 % with a softcap).
#ifdef FA_TUNE
  // With the extras, 1 = 64 x 32 with two stages (their default until run 24; softcap 30, float16 ms
  // at s = 4096 full / 16384 causal, 5.032 / 10.12 against 64 x 64's 4.340 / 8.866).
  if constexpr (EXTRAS)
    if (variant == 1) return tc_fwd_launch<T, 256, 64, 32, 4, EXTRAS, 2>(p, st);
#endif
  return tc_fwd_launch<T, 256, 64, 64, 4, EXTRAS, 1>(p, st);
}

}  // namespace fa

#define FA_INSTANTIATE_TC_FWD(T, NAME)                                                    \
  namespace fa {                                                                         \
  cudaError_t tc_forward_##NAME(const AttnParams& p, bool extras, bool cap, int variant, cudaStream_t st) { \
    if (cap) return tc_forward_cap<T>(p, st);                                            \
    return extras ? tc_forward_t<T, true>(p, variant, st) : tc_forward_t<T, false>(p, variant, st); \
  }                                                                                      \
  }
