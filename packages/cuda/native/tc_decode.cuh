// Split-KV decode on tensor cores (float16/bfloat16, head dims up to 128, no per-element extras): a
// few query rows against a long K/V cache. The sq * G query rows of one key head are packed into one
// m16 tile, so every K/V byte is read once per key head, and both products run on mma.sync: the
// CUDA-core decode spends its issue slots on conversions, FMA chains and loaders (1.3 TB/s at best),
// this kernel alone reads K/V at the copy rate (4.16 TB/s at 128k keys, PERF.md run 5).
//
// A CTA takes one key head and one split of the key range; its warps take interleaved key tiles, each
// through its own cp.async ring (no CTA barrier in the loop), and merge their softmax states at the
// end. Splits are sized so that every CTA is resident at once (one wave, no tail). The last CTA of a
// key head to finish merges the splits (since run 12; combine.cuh is kept for the tuning variants).
#pragma once
#include <algorithm>
#include <cstdio>

#include "combine.cuh"
#include "launch.h"
#include "tc_common.cuh"

namespace fa {

constexpr int DEC_ROWS = TC_DECODE_ROWS;

// Nanoseconds of the GPU's global timer (the same clock on every SM), for TRACE.
__device__ __forceinline__ unsigned long long global_ns() {
  unsigned long long t;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
  return t;
}

// FENCE_ALL (a tuning variant): every thread runs __threadfence() (fence.sc.gpu) before the arrival
// count, instead of one release by thread 0 after the CTA barrier (run 12). LAST_MERGE = false: no
// merge code at all (the combine kernel merges), so that the kernel keeps run 10's 178 registers and
// the programmatic combine's CTAs fit beside two of its CTAs per SM. INTERLEAVE (run 15, a tuning
// variant): warp w of split s takes the key head's tiles s * NW + w + S * NW * it, so that all CTAs
// of a key head sweep the keys together (the key head's rows, and the other key heads' parts of the
// same 2 KB rows, read at about the same time) instead of each CTA walking its own contiguous range.
// TRACE (diagnosis only): thread 0 of each CTA records %globaltimer at its milestones in p.trace, and a
// one-thread kernel after it prints them (run 17; run 15 printed from each CTA, and the other CTAs'
// printf traffic stretched the merge it meant to time).
template <typename T, int D, int KB, int NW, int STAGES, bool FENCE_ALL = false, bool LAST_MERGE = true,
          bool INTERLEAVE = false, bool TRACE = false, int MERGE_BATCH = 0>
__global__ void __launch_bounds__(NW * 32) tc_decode_kernel(AttnParams p) {
  constexpr int NB = KB / 8;  // n8 tiles of S per key tile
  constexpr int ND = D / 8;   // n8 tiles of O
  constexpr int OS = D + 4;   // float row stride of the epilogue's staging
  static_assert(KB % 16 == 0 && ND % 2 == 0, "tiles come in pairs");
  extern __shared__ __align__(128) unsigned char smem_raw[];
  T* Qs = reinterpret_cast<T*>(smem_raw);  // [16][D]
  T* ring = Qs + DEC_ROWS * D;             // per warp: [STAGES][K, V][KB][D]

#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  // Launched as a programmatic dependent (sm_90, tc_decode_launch): wait here, before any global
  // memory is read or written, for the kernel before it on the stream to finish (a no-op for a
  // plain launch). Its CTAs and this grid's launch may overlap that kernel's end instead of
  // following it.
  asm volatile("griddepcontrol.wait;" ::: "memory");
  // A dependent launched after this one (the combine kernel, or the next decode) may start now: it
  // waits with griddepcontrol.wait before touching memory.
  asm volatile("griddepcontrol.launch_dependents;");
#endif
  [[maybe_unused]] unsigned long long t_start = 0, t_first = 0;
  if constexpr (TRACE) t_start = global_ns();
  check_smem_alignment(smem_raw);
  const int split = blockIdx.x, S = gridDim.x;
  const int hkv = blockIdx.y, b = blockIdx.z;
  const int sq = seqlen_q(p, b), sk = seqlen_k(p, b);
  const int G = p.group, d = p.d;
  const int R = sq * G;
  if (R == 0) return;
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
  const int g = lane >> 2, tq = lane & 3;

  // Key span of the rows (lo and hi are monotone in the query index) and its part for this split.
  int lo_c, hi_first, lo_last, hi_c;
  key_range(p, 0, sq, sk, lo_c, hi_first);
  key_range(p, sq - 1, sq, sk, lo_last, hi_c);
  if (hi_c < lo_c) hi_c = lo_c;
  const int ntiles = (hi_c - lo_c + KB - 1) / KB;
  const int per = (ntiles + S - 1) / S;
  const int t0 = min(ntiles, split * per), t1 = min(ntiles, t0 + per);
  // This warp's tiles: tbase + tstep * it for it < n_my.
  const int tbase = INTERLEAVE ? split * NW + warp : t0 + warp;
  const int tstep = INTERLEAVE ? S * NW : NW;
  const int tlim = INTERLEAVE ? ntiles : t1;
  const int n_my = tbase < tlim ? (tlim - tbase + tstep - 1) / tstep : 0;

  const T* qbase = static_cast<const T*>(p.q);
  const T* kbase = static_cast<const T*>(p.k);
  const T* vbase = static_cast<const T*>(p.v);
  tc_load_tile<T, D, NW * 32>(
      Qs, DEC_ROWS, R, d, [&](int r) { return qbase + q_off(p, b, r / G, hkv * G + r % G); }, qbase);
  cp_async_commit();

  T* myring = ring + warp * STAGES * 2 * KB * D;
  // One tile of K and V: lane reads 16-byte chunk (lane % CPR) of rows lane / CPR + RPI * e. Unpaged,
  // each address is one add from a per-CTA base (the general row lookup per chunk cost more
  // instructions than everything else in the loop, run 4).
  constexpr int CPR = D / 8, RPI = 32 / CPR;
  const int cpr = d >> 3, lc = lane % CPR, lr = lane / CPR;
  const bool paged = p.block_table != nullptr;
  const long long kv0 = paged ? 0 : kv_off(p, b, 0, hkv) + lc * 8;
  auto load_tile = [&](int it) {
    T* Kt = myring + (it % STAGES) * 2 * KB * D;
    T* Vt = Kt + KB * D;
    const int j0 = lo_c + (tbase + tstep * it) * KB;
    const int valid = min(KB, hi_c - j0);
    const long long base = kv0 + (long long)(j0 + lr) * p.kv_ss;
#pragma unroll
    for (int e = 0; e < KB / RPI; e++) {
      const int r = lr + RPI * e;
      const bool ok = r < valid && lc < cpr;
      long long o = base + (long long)(RPI * e) * p.kv_ss;
      if (paged) o = ok ? kv_off(p, b, j0 + r, hkv) + lc * 8 : 0;
      cp_async16(Kt + swz<D>(r, lc * 8), ok ? kbase + o : kbase, ok ? 16 : 0);
      cp_async16(Vt + swz<D>(r, lc * 8), ok ? vbase + o : vbase, ok ? 16 : 0);
    }
  };
#pragma unroll
  for (int st = 0; st < STAGES - 1; st++) {
    if (st < n_my) load_tile(st);
    cp_async_commit();
  }

  // Per lane: rows g and g + 8 of the tile.
  int rlo[2], rhi[2];
#pragma unroll
  for (int hf = 0; hf < 2; hf++) {
    const int r = min(g + 8 * hf, R - 1);
    key_range(p, r / G, sq, sk, rlo[hf], rhi[hf]);
  }
  float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.f, 0.f};
  float o[ND][4];
#pragma unroll
  for (int dt = 0; dt < ND; dt++)
#pragma unroll
    for (int e = 0; e < 4; e++) o[dt][e] = 0.f;
  const float scale_log2 = p.scale * LOG2E;
  const int kd = (d + 15) >> 4;

  cp_async_wait<STAGES - 1>();
  __syncthreads();  // Q in place
  uint32_t qa[D / 16][4];
#pragma unroll
  for (int ks = 0; ks < D / 16; ks++) ld_a<D>(qa[ks], Qs, 0, ks, lane);

  for (int it = 0; it < n_my; it++) {
    cp_async_wait<STAGES - 2>();
    __syncwarp();  // tile it in place for every lane; every lane is done with the stage refilled next
    if constexpr (TRACE)
      if (it == 0) t_first = global_ns();
    if (it + STAGES - 1 < n_my) load_tile(it + STAGES - 1);
    cp_async_commit();
    const T* Kt = myring + (it % STAGES) * 2 * KB * D;
    const T* Vt = Kt + KB * D;
    const int j0 = lo_c + (tbase + tstep * it) * KB;

    // Two accumulator sets (even and odd k steps): dependent mma chains of 4, not 8.
    float s[NB][4], s2[NB][4];
#pragma unroll
    for (int nt = 0; nt < NB; nt++)
#pragma unroll
      for (int e = 0; e < 4; e++) s[nt][e] = s2[nt][e] = 0.f;
#pragma unroll
    for (int ks = 0; ks < D / 16; ks++) {
      if (ks < kd) {
#pragma unroll
        for (int nt = 0; nt < NB; nt += 2) {
          uint32_t bb[4];
          ld_b<D>(bb, Kt, nt * 8, ks, lane);
          if (ks & 1) {
            mma16816<T>(s2[nt], qa[ks], bb);
            mma16816<T>(s2[nt + 1], qa[ks], bb + 2);
          } else {
            mma16816<T>(s[nt], qa[ks], bb);
            mma16816<T>(s[nt + 1], qa[ks], bb + 2);
          }
        }
      }
    }
#pragma unroll
    for (int nt = 0; nt < NB; nt++)
#pragma unroll
      for (int e = 0; e < 4; e++) s[nt][e] += s2[nt][e];

    const bool need_mask = !(j0 >= lo_last && j0 + KB <= hi_first);
#pragma unroll
    for (int nt = 0; nt < NB; nt++)
#pragma unroll
      for (int e = 0; e < 4; e++) {
        float x = s[nt][e] * scale_log2;
        if (need_mask) {
          const int j = j0 + nt * 8 + tq * 2 + (e & 1);
          if (!(j >= rlo[e >> 1] && j < rhi[e >> 1])) x = -INFINITY;
        }
        s[nt][e] = x;
      }

    float alpha[2];
#pragma unroll
    for (int hf = 0; hf < 2; hf++) {
      float mx = -INFINITY;
#pragma unroll
      for (int nt = 0; nt < NB; nt++) mx = max_nan(mx, max_nan(s[nt][2 * hf], s[nt][2 * hf + 1]));
      mx = max_nan(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
      mx = max_nan(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
      // The reference maximum moves only when exceeded by more than 2^8 (P <= 256, see tc_fwd.cuh).
      const float mn = max_nan(m[hf], mx);
      alpha[hf] = 1.f;
      if (mn > m[hf] + 8.f) {
        alpha[hf] = exp2_approx(m[hf] - mn);
        m[hf] = mn;
      }
      const float mu = m[hf] == -INFINITY ? 0.f : m[hf];
      float rs = 0.f;
#pragma unroll
      for (int nt = 0; nt < NB; nt++) {
        const float p0 = exp2_approx(s[nt][2 * hf] - mu);
        const float p1 = exp2_approx(s[nt][2 * hf + 1] - mu);
        s[nt][2 * hf] = p0;
        s[nt][2 * hf + 1] = p1;
        rs += p0 + p1;
      }
      l[hf] = l[hf] * alpha[hf] + rs;
    }
    // Rare once the reference maxima are set: skipped unless a row of the warp moved.
    if (__any_sync(0xffffffffu, alpha[0] != 1.f || alpha[1] != 1.f)) {
#pragma unroll
      for (int dt = 0; dt < ND; dt++) {
        o[dt][0] *= alpha[0];
        o[dt][1] *= alpha[0];
        o[dt][2] *= alpha[1];
        o[dt][3] *= alpha[1];
      }
    }

#pragma unroll
    for (int kk = 0; kk < KB / 16; kk++) {
      uint32_t a[4];
      acc_to_a<T>(a, s[2 * kk], s[2 * kk + 1]);
#pragma unroll
      for (int dt = 0; dt < ND; dt += 2) {
        if (dt * 8 < d) {
          uint32_t bb[4];
          ld_bt<D>(bb, Vt, kk, dt, lane);
          mma16816<T>(o[dt], a, bb);
          mma16816<T>(o[dt + 1], a, bb + 2);
        }
      }
    }
  }

  // Merge the warps' states: each stages its rows' (m, l) and unnormalised O in the ring's space.
  cp_async_wait<0>();
  // Q's tile is unread since the fragments were loaded: the trace's per-warp loop ends go there.
  [[maybe_unused]] unsigned long long* trace_sh = reinterpret_cast<unsigned long long*>(Qs) + 8;
  if constexpr (TRACE)
    if (lane == 0) trace_sh[warp] = global_ns();
  __syncthreads();
  float* Os = reinterpret_cast<float*>(ring);  // [NW][16][OS]
  float* Ms = Os + NW * DEC_ROWS * OS;         // [NW][16]
  float* Ls = Ms + NW * DEC_ROWS;              // [NW][16]
#pragma unroll
  for (int hf = 0; hf < 2; hf++) {
    float lt = l[hf];
    lt += __shfl_xor_sync(0xffffffffu, lt, 1);
    lt += __shfl_xor_sync(0xffffffffu, lt, 2);
    const int r = g + 8 * hf;
    if (r < R) {  // only the packed rows that exist are read below
      if (tq == 0) {
        Ms[warp * DEC_ROWS + r] = m[hf];
        Ls[warp * DEC_ROWS + r] = lt;
      }
#pragma unroll
      for (int dt = 0; dt < ND; dt++)
        *reinterpret_cast<float2*>(Os + (warp * DEC_ROWS + r) * OS + dt * 8 + tq * 2) =
            make_float2(o[dt][2 * hf], o[dt][2 * hf + 1]);
    }
  }
  __syncthreads();

  const long long rows = p.cu_q ? (long long)p.hq * p.total_q : (long long)p.batch * p.hq * p.seq_q;
  for (int r = warp; r < R; r += NW) {
    float mx = -INFINITY;
#pragma unroll
    for (int w = 0; w < NW; w++) mx = max_nan(mx, Ms[w * DEC_ROWS + r]);
    const float mu = mx == -INFINITY ? 0.f : mx;
    float wt[NW], lt = 0.f;
#pragma unroll
    for (int w = 0; w < NW; w++) {
      wt[w] = exp2_approx(Ms[w * DEC_ROWS + r] - mu);
      lt += wt[w] * Ls[w * DEC_ROWS + r];
    }
    const float inv = lt == 0.f ? 0.f : 1.f / lt;
    const float lse = lt == 0.f ? -INFINITY : mx * LN2 + logf(lt);
    const int i = r / G, h = hkv * G + r % G;
    const long long li = lse_idx(p, b, h, i);
    T* out = static_cast<T*>(p.out) + q_off(p, b, i, h);
    float* part = p.o_part + ((long long)split * rows + li) * d;
    for (int c = lane; c < d; c += 32) {
      float x = 0.f;
#pragma unroll
      for (int w = 0; w < NW; w++) x = fmaf(wt[w], Os[(w * DEC_ROWS + r) * OS + c], x);
      x *= inv;
      if (S == 1) out[c] = from_f<T>(x);
      else part[c] = x;
    }
    if (lane == 0) {
      if (S == 1) {
        if (p.lse) p.lse[li] = lse;
      } else {
        p.lse_part[(long long)split * rows + li] = lse;
      }
    }
  }
  // One split: done. No counters (or no merge code): combine_kernel merges.
  if constexpr (LAST_MERGE) {
    if (S == 1 || !p.split_count) return;
    [[maybe_unused]] unsigned long long t_part = 0, t_atom = 0;
    // Recorded by thread 0 when the CTA is done (decode_trace_print_kernel's layout): its split, key
    // head, SM, whether it merged, its start, then first tile in place (warp 0), the loop ends of warps
    // 0 and 1 and of the earliest and the latest warp, partials stored (after the CTA barrier), arrival
    // counted, done.
    auto trace = [&](bool merged) {
      if constexpr (TRACE) {
        if (tid != 0 || !p.trace) return;
        unsigned smid;
        asm volatile("mov.u32 %0, %%smid;" : "=r"(smid));
        unsigned long long* rec =
            p.trace + 16 * ((long long)(blockIdx.z * gridDim.y + blockIdx.y) * gridDim.x + blockIdx.x);
        unsigned long long w_min = trace_sh[0], w_max = trace_sh[0];
        for (int w = 1; w < NW; w++) {
          w_min = min(w_min, trace_sh[w]);
          w_max = max(w_max, trace_sh[w]);
        }
        const unsigned long long v[13] = {(unsigned long long)split, (unsigned long long)hkv, smid,
                                          (unsigned long long)merged, t_start, t_first, trace_sh[0],
                                          trace_sh[NW > 1 ? 1 : 0], w_min, w_max, t_part, t_atom, global_ns()};
        for (int k = 0; k < 13; k++) rec[k] = v[k];
      } else {
        (void)merged;
      }
    };

    // The last of the key head's S CTAs to get here merges the partials (the last-block reduction
    // pattern): one kernel instead of two, and no wait for the whole grid (PERF.md run 12). Which
    // CTA is last varies; the merge does not depend on it.
    // The flag lives in Q's tile, unread since the fragments were loaded (a static __shared__ variable
    // would move the dynamic window off the 1 KB alignment FragAddr needs).
    volatile unsigned int* is_last = reinterpret_cast<unsigned int*>(Qs);
    if constexpr (FENCE_ALL) __threadfence();
    // The barrier orders every thread's partial stores before thread 0's release (acq_rel atomic:
    // cumulative at GPU scope), and its acquire before the other threads' loads after the second
    // barrier: the CTA-barrier-then-one-release pattern, without a fence.sc in each of 128 threads.
    __syncthreads();
    if constexpr (TRACE) t_part = global_ns();
    if (tid == 0) {
      unsigned int* cnt = p.split_count + (long long)b * p.hk + hkv;
      unsigned int prev;
      asm volatile("atom.add.acq_rel.gpu.global.u32 %0, [%1], 1;" : "=r"(prev) : "l"(cnt) : "memory");
      const bool last = prev == (unsigned)(S - 1);
      // Every arrival is in: back to zero for the next call on this stream (no memset per call).
      if (last) atomicExch(cnt, 0u);
      *is_last = last;
      if constexpr (TRACE) t_atom = global_ns();
    }
    __syncthreads();
    if (!*is_last) {
      trace(false);
      return;
    }
    if constexpr (FENCE_ALL) __threadfence();
    // Loads through L2 only (ld.global.cg): other SMs wrote the partials during this kernel. The
    // merge is in a fixed order of float operations, so the result is the same whichever CTA merges.
    const int c4n = d >> 2, units = R * c4n;
    // Thread = (row r, 4 columns), every split's lse and partial of that row, in split order with an
    // online rescale per batch of MB splits; each thread computes its row's weights itself (one expf
    // per split in each of the row's 32 threads). A batch of up to MB splits is in flight per thread:
    // one L2 round trip for the 33 splits of the decode shape (255 registers, no spills). With 8 warps
    // (16 splits) a batch of 16 (run 17b): the merge is straight-line code run once per key head, so
    // the instructions (and exponentials) of 20 empty slots cost time too.
    constexpr int MB = MERGE_BATCH > 0 ? MERGE_BATCH : NW >= 8 ? 16 : 36;
    const int nbatch = (S + MB - 1) / MB, step = (S + nbatch - 1) / nbatch;
    for (int u = tid; u < units; u += NW * 32) {
      const int r = u / c4n, c = (u % c4n) * 4;
      const int i = r / G, h = hkv * G + r % G;
      const long long li = lse_idx(p, b, h, i);
      const float* lp = p.lse_part + li;
      const float* op = p.o_part + li * d + c;
      float M = -INFINITY, L = 0.f;
      float4 acc = make_float4(0.f, 0.f, 0.f, 0.f);
      for (int s0 = 0; s0 < S; s0 += step) {
        float ls[MB];
        float4 ov[MB];
#pragma unroll
        for (int k = 0; k < MB; k++) {
          const bool ok = k < step && s0 + k < S;
          ls[k] = ok ? __ldcg(lp + (long long)(s0 + k) * rows) : -INFINITY;
          ov[k] = ok ? __ldcg(reinterpret_cast<const float4*>(op + (long long)(s0 + k) * rows * d))
                     : make_float4(0.f, 0.f, 0.f, 0.f);
        }
        float mb = M;
#pragma unroll
        for (int k = 0; k < MB; k++) mb = max_nan(mb, ls[k]);
        if (mb == -INFINITY) continue;  // every split so far saw no key of this row
        const float a = expf(M - mb);
        L *= a;
        acc.x *= a;
        acc.y *= a;
        acc.z *= a;
        acc.w *= a;
#pragma unroll
        for (int k = 0; k < MB; k++) {
          const float w = expf(ls[k] - mb);
          L += w;
          acc.x = fmaf(w, ov[k].x, acc.x);
          acc.y = fmaf(w, ov[k].y, acc.y);
          acc.z = fmaf(w, ov[k].z, acc.z);
          acc.w = fmaf(w, ov[k].w, acc.w);
        }
        M = mb;
      }
      const float inv = L == 0.f ? 0.f : 1.f / L;
      T* out = static_cast<T*>(p.out) + q_off(p, b, i, h) + c;
      *reinterpret_cast<uint2*>(out) =
          make_uint2(pack2<T>(acc.x * inv, acc.y * inv), pack2<T>(acc.z * inv, acc.w * inv));
      if (c == 0 && p.lse) p.lse[li] = L == 0.f ? -INFINITY : M + logf(L);
    }
    if constexpr (TRACE) {
      __syncthreads();  // thread 0's end time after every thread's merge
      trace(true);
    }
  }
}

// Dynamic shared memory of a decode CTA: the query tile and each warp's K/V ring.
template <int D, int KB, int NW, int STAGES, typename T>
constexpr size_t tc_decode_smem() {
  return (size_t)DEC_ROWS * D * sizeof(T) + (size_t)NW * STAGES * 2 * KB * D * sizeof(T);
}

// TRACE: prints what tc_decode_kernel recorded, one "TRACE ..." line per CTA (times in ns after the
// CTA's start; packages/cuda/bench/decode_trace.py reads them), after the decode has finished.
static __global__ void decode_trace_print_kernel(const unsigned long long* rec, int n) {
  for (int c = 0; c < n; c++, rec += 16) {
    if (rec[4] == 0) continue;  // a CTA that returned before its trace (no rows)
    auto rel = [&](int k) { return (long long)(rec[k] - rec[4]); };
    printf("TRACE s=%d h=%d sm=%u last=%d start=%llu first=%lld w=%lld,%lld,%lld,%lld part=%lld atom=%lld end=%lld\n",
           (int)rec[0], (int)rec[1], (unsigned)rec[2], (int)rec[3], rec[4], rel(5), rel(6), rel(7), rel(8), rel(9),
           rel(10), rel(11), rel(12));
  }
}

// How the splits' partials are merged: in the decode's last CTA per key head (the default since run
// 12), or by combine_kernel launched after it, as a programmatic dependent (sm_90; runs 9-10) or plainly.
enum class DecodeMerge { LastCta, CombinePdl, CombinePlain };

// MERGE is a template argument so that the combine-kernel variants use the kernel without merge code.
// pdl: launch the decode itself as a programmatic dependent of the kernel before it (sm_90), so that
// its launch can overlap that kernel's end. In the benchmark, where an event record separates the
// calls, it measured the same as a plain launch (run 12, variant 6).
// WAVES (a tuning variant, run 15): that many times the splits that fit at once, so that the CTA
// scheduler hands a finished CTA's slot to another split (smaller pieces, more partials to merge).
// The partials go to the caller's kept buffer (p.decode_part, grown here stream-ordered) when there is
// one and the call needs at most 32 MB, else to a stream-ordered allocation freed after the launch
// (run 15's variant 11 measured the kept buffer ~1 us faster at 32k keys); kept = false forces the
// allocation (the variants that time it).
constexpr size_t DECODE_KEPT_MAX = 32u << 20;
template <typename T, int D, int KB, int NW, int STAGES, DecodeMerge MERGE = DecodeMerge::LastCta,
          bool FENCE_ALL = false, bool INTERLEAVE = false, bool TRACE = false, int WAVES = 1, int MERGE_BATCH = 0>
cudaError_t tc_decode_launch(AttnParams p, const DeviceProps& dev, cudaStream_t st, Plan* plan, bool pdl = true,
                             bool kept = true) {
  constexpr DecodeMerge merge = MERGE;
  constexpr size_t ring = (size_t)NW * STAGES * 2 * KB * D * sizeof(T);
  constexpr size_t staging = (size_t)NW * DEC_ROWS * (D + 4 + 2) * sizeof(float);
  static_assert(staging <= ring, "the merge staging reuses the ring");
  constexpr size_t smem = tc_decode_smem<D, KB, NW, STAGES, T>();
  auto kern =
      tc_decode_kernel<T, D, KB, NW, STAGES, FENCE_ALL, MERGE == DecodeMerge::LastCta, INTERLEAVE, TRACE, MERGE_BATCH>;
  // Set once per instantiation, as `resident` below is asked once (one device per process): host work
  // only, but run 15a's variant 11 (this and a kept partials buffer) ran ~1 us faster per call.
  static bool attr_set = false;
  cudaError_t e = cudaSuccess;
  if (!attr_set) e = cudaFuncSetAttribute(kern, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem);
  if (e != cudaSuccess) return e;
  attr_set = true;
  static int resident = 0;  // CTAs per SM, asked once per instantiation
  if (resident == 0) {
    e = cudaOccupancyMaxActiveBlocksPerMultiprocessor(&resident, kern, NW * 32, smem);
    if (e != cudaSuccess) return e;
    resident = std::max(resident, 1);
  }
  const long long heads = (long long)p.batch * p.hk;
  if (heads == 0) return cudaSuccess;
  // One wave: as many splits as fit beside the other key heads, each with two tiles per warp or more.
  const long long tiles = ((long long)p.seq_k + KB - 1) / KB;
  long long splits = (long long)WAVES * resident * dev.sm_count / heads;
  splits = std::min<long long>(splits, tiles / (2 * NW));
  splits = std::max<long long>(1, std::min<long long>(splits, 256));
  Scratch scratch(st);
  if (splits > 1) {
    const long long rows = p.cu_q ? (long long)p.hq * p.total_q : (long long)p.batch * p.hq * p.seq_q;
    const size_t obytes = (size_t)splits * rows * p.d * sizeof(float);
    const size_t lbytes = (size_t)splits * rows * sizeof(float);
    KeptBuffer* buf = kept ? p.decode_part : nullptr;
    if (buf && obytes + lbytes <= DECODE_KEPT_MAX) {
      if (obytes + lbytes > buf->bytes) {
        // Stream-ordered: the calls before this one on the stream finish with the old buffer first.
        if (buf->ptr) cudaFreeAsync(buf->ptr, st);
        *buf = KeptBuffer{};
        void* ptr = nullptr;
        e = cudaMallocAsync(&ptr, obytes + lbytes, st);
        if (e != cudaSuccess) return e;
        *buf = KeptBuffer{ptr, obytes + lbytes};
      }
      p.o_part = static_cast<float*>(buf->ptr);
      p.lse_part = p.o_part + obytes / sizeof(float);
    } else {
      p.o_part = static_cast<float*>(scratch.alloc(obytes));
      p.lse_part = static_cast<float*>(scratch.alloc(lbytes));
      if (!p.o_part || !p.lse_part) return scratch.err;
    }
    plan->scratch_bytes = obytes + lbytes;
  }
  p.num_splits = (int)splits;
  const bool last_cta = merge == DecodeMerge::LastCta && p.split_count && p.split_count_len >= heads;
  if (!last_cta) p.split_count = nullptr;
  plan->kernel = "tc-decode";
  plan->splits = (int)splits;
  const dim3 grid((unsigned)splits, (unsigned)p.hk, (unsigned)p.batch);
  const long long nctas = (long long)grid.x * grid.y * grid.z;
  p.trace = nullptr;
  if constexpr (TRACE) {
    p.trace = static_cast<unsigned long long*>(scratch.alloc((size_t)nctas * 16 * sizeof(unsigned long long)));
    if (!p.trace) return scratch.err;
    e = cudaMemsetAsync(p.trace, 0, (size_t)nctas * 16 * sizeof(unsigned long long), st);
    if (e != cudaSuccess) return e;
  }
  e = launch_kernel(kern, grid, dim3(NW * 32), smem, st, pdl && dev.major >= 9, p);
  if constexpr (TRACE) {
    if (e != cudaSuccess) return e;
    decode_trace_print_kernel<<<1, 1, 0, st>>>(p.trace, (int)nctas);
    e = cudaGetLastError();
  }
  if (e != cudaSuccess || splits == 1 || last_cta) return e;
  return combine_launch<T>(p, (int)splits, st, merge != DecodeMerge::CombinePlain && dev.major >= 9);
}

// Ring depth and tile: 16 keys per stage, 3 stages. Since run 17, 8 warps per CTA and one CTA per SM
// where the device lets a CTA have its 196 KB of shared memory (sm_90: 227 KB), else (sm_80: 163 KB) 4
// warps and two CTAs per SM (100 KB each): 8 warps per SM either way; devices with 99 KB per CTA (sm_86,
// sm_89, running the sm_80 code) take two stages. The warps are latency-bound (one
// instruction per ~5 cycles each, run 4), so warps per SM count more than bytes in flight: 4 stages and
// one 4-warp CTA per SM ran at half the rate. With 8 warps a key head has half the splits (16 at the
// decode shape: one merge batch) and 3 % fewer warps in flight; run 15 measured it 0.8 us faster at 32k
// keys, 1.4 at 64k, 0.3 slower at 128k.
// FA_TUNE variants for the benchmark (4 warps unless said; all but 8 and 12 with the kept partials):
// 1 = 2 stages, 2 = 4 stages (one CTA per SM), 3 = the combine kernel as a programmatic dependent (the
// default of runs 9-10), 4 = the combine launched plainly (up to run 8), 5 = the last-CTA merge with a
// fence.sc per thread, 6 = launched plainly (not as a programmatic dependent of the kernel before it);
// 3-6 launch the decode plainly. Run 15: 7 = tiles interleaved across the key head's CTAs, 8 = 8
// warps with the partials allocated per call (run 15's variant 8), 9 = two waves of splits, 10 = TRACE
// (the default's form with its timeline; diagnosis only, not for timing). Run 17: 11 = 4 warps (the sm_80 path), 12 = 4 warps with
// the partials allocated per call (the default of runs 12-16), 13 = 8 warps with interleaved tiles, 14 =
// 8 warps with run 17a's merge batch of 36 splits (the default: 16), 15 = 14 with TRACE.
// Run 15's merge candidate (each split's weight once per row, shared through shared memory) measured
// 2.4-2.8 us slower at every sk and was removed (PERF.md row 15b).
template <typename T> cudaError_t tc_decode_t(const AttnParams& p, const DeviceProps& dev, int variant,
                                              cudaStream_t st, Plan* plan) {
  (void)variant;
#ifdef FA_TUNE
  if (variant == 1) return tc_decode_launch<T, 128, 16, 4, 2>(p, dev, st, plan);
  if (variant == 2) return tc_decode_launch<T, 128, 16, 4, 4>(p, dev, st, plan);
  if (variant == 3) return tc_decode_launch<T, 128, 16, 4, 3, DecodeMerge::CombinePdl>(p, dev, st, plan, false);
  if (variant == 4) return tc_decode_launch<T, 128, 16, 4, 3, DecodeMerge::CombinePlain>(p, dev, st, plan, false);
  if (variant == 5) return tc_decode_launch<T, 128, 16, 4, 3, DecodeMerge::LastCta, true>(p, dev, st, plan, false);
  if (variant == 6) return tc_decode_launch<T, 128, 16, 4, 3>(p, dev, st, plan, false);
  if (variant == 7) return tc_decode_launch<T, 128, 16, 4, 3, DecodeMerge::LastCta, false, true>(p, dev, st, plan);
  if (variant == 8 && dev.smem_optin >= (int)tc_decode_smem<128, 16, 8, 3, T>())
    return tc_decode_launch<T, 128, 16, 8, 3>(p, dev, st, plan, true, false);
  if (variant == 9)
    return tc_decode_launch<T, 128, 16, 4, 3, DecodeMerge::LastCta, false, false, false, 2>(p, dev, st, plan);
  if (variant == 10 && dev.smem_optin >= (int)tc_decode_smem<128, 16, 8, 3, T>())
    return tc_decode_launch<T, 128, 16, 8, 3, DecodeMerge::LastCta, false, false, true>(p, dev, st, plan);
  if (variant == 11) return tc_decode_launch<T, 128, 16, 4, 3>(p, dev, st, plan);
  if (variant == 12) return tc_decode_launch<T, 128, 16, 4, 3>(p, dev, st, plan, true, false);
  if (variant == 13 && dev.smem_optin >= (int)tc_decode_smem<128, 16, 8, 3, T>())
    return tc_decode_launch<T, 128, 16, 8, 3, DecodeMerge::LastCta, false, true>(p, dev, st, plan);
  if (variant == 14 && dev.smem_optin >= (int)tc_decode_smem<128, 16, 8, 3, T>())
    return tc_decode_launch<T, 128, 16, 8, 3, DecodeMerge::LastCta, false, false, false, 1, 36>(p, dev, st, plan);
  if (variant == 15 && dev.smem_optin >= (int)tc_decode_smem<128, 16, 8, 3, T>())
    return tc_decode_launch<T, 128, 16, 8, 3, DecodeMerge::LastCta, false, false, true, 1, 36>(p, dev, st, plan);
#endif
  if (dev.smem_optin >= (int)tc_decode_smem<128, 16, 8, 3, T>()) return tc_decode_launch<T, 128, 16, 8, 3>(p, dev, st, plan);
  if (dev.smem_optin >= (int)tc_decode_smem<128, 16, 4, 3, T>()) return tc_decode_launch<T, 128, 16, 4, 3>(p, dev, st, plan);
  // sm_86 / sm_89 (99 KB per CTA) run the sm_80 code but not its 100 KB ring: two stages (68 KB).
  return tc_decode_launch<T, 128, 16, 4, 2>(p, dev, st, plan);
}

}  // namespace fa

#define FA_INSTANTIATE_TC_DECODE(T, NAME)                                                                   \
  namespace fa {                                                                                          \
  cudaError_t tc_decode_##NAME(const AttnParams& p, const DeviceProps& dev, int variant, cudaStream_t st, \
                               Plan* plan) {                                                              \
    return tc_decode_t<T>(p, dev, variant, st, plan);                                                     \
  }                                                                                                       \
  }
