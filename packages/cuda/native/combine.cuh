// Merge of split-KV partials (core's mergeLse), shared by the generic and the tensor-core decode.
#pragma once
#include "device_common.cuh"

namespace fa {

// One CTA of CB_THREADS threads per (b, h, i). The splits' lse are read side by side, and every
// thread keeps several splits' partial rows in flight: one warp per row walking the splits one by one
// spent ~10 us on 33 splits, a quarter of a 32k-key decode (run 5). Since run 9, 256 threads (was
// 128): at d = 128 two lanes per column take every other split, so that each thread walks half the
// splits (17 of 33 at the decode shape: three batches of 8 loads in flight instead of five).
// Partials: o_part [splits][rows][d] (normalised per split) and lse_part [splits][rows].
constexpr int CB_THREADS = 256;
// Launched with programmatic dependent launch after the tensor-core decode (sm_90, combine_launch's
// `pdl`): the CTAs may become resident while the decode still runs, and wait here for its grid to
// finish and its partials to be visible. Without that launch attribute the wait returns at once.
template <typename T>
__global__ void __launch_bounds__(CB_THREADS) combine_kernel(AttnParams p, int splits) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
  constexpr int NT = CB_THREADS, NWC = NT / 32;
  __shared__ float red[NWC];
  __shared__ float wsh[256];
  __shared__ float part[2][NT];
  const int row = blockIdx.x, tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
  const int i = row % p.seq_q, h = (row / p.seq_q) % p.hq, b = row / (p.seq_q * p.hq);
  if (i >= seqlen_q(p, b)) return;
  const long long rows = p.cu_q ? (long long)p.hq * p.total_q : (long long)p.batch * p.hq * p.seq_q;
  const long long li = lse_idx(p, b, h, i);
  const float* lp = p.lse_part + li;
  const int d = p.d;
  T* o = static_cast<T*>(p.out) + q_off(p, b, i, h);
  // Block-wide max, then sum of exp(lse_s - max), over at most 256 splits (one per thread).
  static_assert(NT >= 256, "one split's lse per thread");
  const float l0 = tid < splits ? lp[tid * rows] : -INFINITY;
  float mx = warp_max(l0);
  if (lane == 0) red[warp] = mx;
  __syncthreads();
  mx = red[0];
#pragma unroll
  for (int w = 1; w < NWC; w++) mx = max_nan(mx, red[w]);
  __syncthreads();
  if (mx == -INFINITY) {
    for (int c = tid; c < d; c += NT) o[c] = from_f<T>(0.f);
    if (tid == 0 && p.lse) p.lse[li] = -INFINITY;
    return;
  }
  float sum = warp_sum(expf(l0 - mx));
  if (lane == 0) red[warp] = sum;
  __syncthreads();
  sum = 0.f;
#pragma unroll
  for (int w = 0; w < NWC; w++) sum += red[w];
  const float lse = mx + logf(sum);
  if (tid < splits) wsh[tid] = expf(l0 - lse);
  __syncthreads();
  // Thread = (split lane sl, column c): NSL lanes take every NSL-th split, columns c and c + CW
  // (d <= 2 * CW: head dims up to 256).
  const int cw = d <= 32 ? 32 : d <= 64 ? 64 : 128;
  const int nsl = NT / cw, sl = tid / cw, c = tid % cw;
  const float* op = p.o_part + li * d;
  const long long ostride = rows * d;
  float x0 = 0.f, x1 = 0.f;
#pragma unroll 8
  for (int s = sl; s < splits; s += nsl) {
    const float w = wsh[s];
    const float* q = op + s * ostride;
    if (c < d) x0 = fmaf(w, q[c], x0);
    if (c + cw < d) x1 = fmaf(w, q[c + cw], x1);
  }
  part[0][tid] = x0;
  part[1][tid] = x1;
  __syncthreads();
  if (sl == 0) {
    // Fixed order of the split lanes: deterministic.
    for (int k = 1; k < nsl; k++) {
      x0 += part[0][k * cw + c];
      x1 += part[1][k * cw + c];
    }
    if (c < d) o[c] = from_f<T>(x0);
    if (c + cw < d) o[c + cw] = from_f<T>(x1);
  }
  if (tid == 0 && p.lse) p.lse[li] = lse;
}

// pdl: launch as a programmatic dependent of the kernel before it on the stream (sm_90 and later;
// that kernel must trigger with griddepcontrol.launch_dependents or simply exit). Its launch latency
// and the CTAs' start then overlap the decode instead of following it (PERF.md run 9).
template <typename T>
cudaError_t combine_launch(const AttnParams& p, int splits, cudaStream_t st, bool pdl = false) {
  const long long nrows = (long long)p.batch * p.hq * p.seq_q;
  if (nrows == 0) return cudaSuccess;
  return launch_kernel(combine_kernel<T>, dim3((unsigned)nrows), dim3(CB_THREADS), 0, st, pdl, p, splits);
}

}  // namespace fa
