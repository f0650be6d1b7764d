// Merge of split-KV partials (core's mergeLse), shared by the generic and the tensor-core decode.
#pragma once
#include "device_common.cuh"

namespace fa {

// One CTA of 128 threads per (b, h, i). The splits' lse are read side by side, and every thread
// keeps several splits' partial rows in flight: one warp per row walking the splits one by one spent
// ~10 us on 33 splits, a quarter of a 32k-key decode (run 5).
// Partials: o_part [splits][rows][d] (normalised per split) and lse_part [splits][rows].
template <typename T>
__global__ void __launch_bounds__(128) combine_kernel(AttnParams p, int splits) {
  __shared__ float red[4];
  __shared__ float wsh[256];
  __shared__ float part[128];
  const int row = blockIdx.x, tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
  const int i = row % p.seq_q, h = (row / p.seq_q) % p.hq, b = row / (p.seq_q * p.hq);
  if (i >= seqlen_q(p, b)) return;
  const long long rows = p.cu_q ? (long long)p.hq * p.total_q : (long long)p.batch * p.hq * p.seq_q;
  const long long li = lse_idx(p, b, h, i);
  const float* lp = p.lse_part + li;
  const int d = p.d;
  T* o = static_cast<T*>(p.out) + q_off(p, b, i, h);
  // Block-wide max, then sum of exp(lse_s - max), over at most 256 splits (two per thread).
  const float l0 = tid < splits ? lp[tid * rows] : -INFINITY;
  const float l1 = tid + 128 < splits ? lp[(tid + 128) * rows] : -INFINITY;
  float mx = warp_max(max_nan(l0, l1));
  if (lane == 0) red[warp] = mx;
  __syncthreads();
  mx = max_nan(max_nan(red[0], red[1]), max_nan(red[2], red[3]));
  __syncthreads();
  if (mx == -INFINITY) {
    for (int c = tid; c < d; c += 128) o[c] = from_f<T>(0.f);
    if (tid == 0 && p.lse) p.lse[li] = -INFINITY;
    return;
  }
  float sum = warp_sum(expf(l0 - mx) + expf(l1 - mx));
  if (lane == 0) red[warp] = sum;
  __syncthreads();
  sum = red[0] + red[1] + red[2] + red[3];
  const float lse = mx + logf(sum);
  if (tid < splits) wsh[tid] = expf(l0 - lse);
  if (tid + 128 < splits) wsh[tid + 128] = expf(l1 - lse);
  __syncthreads();
  // Thread = (split lane sl, column c): NSL lanes take every NSL-th split, columns c and c + CW.
  const int nsl = d <= 32 ? 4 : d <= 64 ? 2 : 1;
  const int cw = 128 / nsl, sl = tid / cw, c = tid % cw;
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
  if (nsl > 1) {
    part[tid] = x0;
    __syncthreads();
    if (sl == 0)
      for (int k = 1; k < nsl; k++) x0 += part[k * cw + c];
  }
  if (sl == 0) {
    if (c < d) o[c] = from_f<T>(x0);
    if (c + cw < d) o[c + cw] = from_f<T>(x1);
  }
  if (tid == 0 && p.lse) p.lse[li] = lse;
}

template <typename T> cudaError_t combine_launch(const AttnParams& p, int splits, cudaStream_t st) {
  const long long nrows = (long long)p.batch * p.hq * p.seq_q;
  if (nrows == 0) return cudaSuccess;
  combine_kernel<T><<<(unsigned)nrows, 128, 0, st>>>(p, splits);
  return cudaGetLastError();
}

}  // namespace fa
