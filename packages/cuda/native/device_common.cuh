// Device helpers shared by every kernel: indexing of SPEC §2/§3 (varlen, paged, strides), the mask
// interval, score modifiers, SPEC §5's Philox, dtype conversion, cp.async and mma.sync.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <cstdint>

#include "attn_params.h"

namespace fa {

#define FA_DEV __device__ __forceinline__

// ------------------------------------------------------------------------------------------------
// Indexing (mirrors core/src/problem.ts: seqLenQ, seqLenK, qOffset, kvOffset, lseIndex).

FA_DEV int seqlen_q(const AttnParams& p, int b) { return p.cu_q ? p.cu_q[b + 1] - p.cu_q[b] : p.seq_q; }

FA_DEV int seqlen_k(const AttnParams& p, int b) {
  if (p.cu_k) return p.cu_k[b + 1] - p.cu_k[b];
  return p.seqlens_k ? p.seqlens_k[b] : p.seq_k;
}

// Element offset of query row `row` of sequence b, head h, in the dense layout (no varlen lookup).
FA_DEV long long q_off_dense(const AttnParams& p, int b, long long row, int h) {
  return (long long)b * p.q_sb + row * p.q_ss + (long long)h * p.q_sh;
}

FA_DEV long long q_off(const AttnParams& p, int b, int i, int h) {
  return q_off_dense(p, b, p.cu_q ? (long long)p.cu_q[b] + i : (long long)i, h);
}

FA_DEV long long kv_off(const AttnParams& p, int b, int j, int hk) {
  if (p.block_table) {
    const int page = p.block_table[(long long)b * p.max_pages + j / p.page_size];
    return ((long long)page * p.page_size + j % p.page_size) * p.kv_ss + (long long)hk * p.kv_sh;
  }
  const long long row = p.cu_k ? (long long)p.cu_k[b] + j : (long long)j;
  return (long long)b * p.kv_sb + row * p.kv_ss + (long long)hk * p.kv_sh;
}

// Index of (b, h, i) in lse and D, dense layout (no varlen).
FA_DEV long long lse_idx_dense(const AttnParams& p, int b, int h, int i) { return ((long long)b * p.hq + h) * p.seq_q + i; }

FA_DEV long long lse_idx(const AttnParams& p, int b, int h, int i) {
  return p.cu_q ? (long long)h * p.total_q + p.cu_q[b] + i : lse_idx_dense(p, b, h, i);
}

// Keys [lo, hi) that query i of a sequence with sq rows and sk keys may see (core/src/mask.ts).
FA_DEV void key_range(const AttnParams& p, int i, int sq, int sk, int& lo, int& hi) {
  const int diag = i + sk - sq;
  lo = 0;
  hi = sk;
  if (p.causal) hi = min(hi, diag + 1);
  if (p.wr >= 0) hi = min(hi, diag + p.wr + 1);
  if (p.wl >= 0) lo = max(lo, diag - p.wl);
  if (hi < lo) hi = lo;
}

// ------------------------------------------------------------------------------------------------
// Conversions.

template <typename T> struct TypeOf;
template <> struct TypeOf<float> { static constexpr int code = F32; };
template <> struct TypeOf<__half> { static constexpr int code = F16; };
template <> struct TypeOf<__nv_bfloat16> { static constexpr int code = BF16; };

FA_DEV float to_f(float x) { return x; }
FA_DEV float to_f(__half x) { return __half2float(x); }
FA_DEV float to_f(__nv_bfloat16 x) { return __bfloat162float(x); }

template <typename T> FA_DEV T from_f(float x);
template <> FA_DEV float from_f<float>(float x) { return x; }
template <> FA_DEV __half from_f<__half>(float x) { return __float2half_rn(x); }
template <> FA_DEV __nv_bfloat16 from_f<__nv_bfloat16>(float x) { return __float2bfloat16_rn(x); }

FA_DEV float load_any(const void* base, int dtype, long long idx) {
  if (dtype == F32) return static_cast<const float*>(base)[idx];
  if (dtype == F16) return __half2float(static_cast<const __half*>(base)[idx]);
  return __bfloat162float(static_cast<const __nv_bfloat16*>(base)[idx]);
}

// NaN-propagating max (PTX max.NaN, sm_80+): the reference lets a NaN score poison its row.
FA_DEV float max_nan(float a, float b) {
  float r;
  asm("max.NaN.f32 %0, %1, %2;" : "=f"(r) : "f"(a), "f"(b));
  return r;
}

// ------------------------------------------------------------------------------------------------
// Philox4x32-10 (SPEC §5; core/src/philox.ts). Returns word 0.

FA_DEV uint32_t philox_word0(uint32_t c0, uint32_t c1, uint32_t c2, uint32_t c3, uint32_t k0, uint32_t k1) {
  const uint32_t M0 = 0xd2511f53u, M1 = 0xcd9e8d57u, W0 = 0x9e3779b9u, W1 = 0xbb67ae85u;
#pragma unroll
  for (int r = 0; r < 10; r++) {
    if (r > 0) {
      k0 += W0;
      k1 += W1;
    }
    const uint32_t hi0 = __umulhi(M0, c0), lo0 = M0 * c0;
    const uint32_t hi1 = __umulhi(M1, c2), lo1 = M1 * c2;
    const uint32_t y0 = hi1 ^ c1 ^ k0;
    const uint32_t y2 = hi0 ^ c3 ^ k1;
    c0 = y0;
    c1 = lo1;
    c2 = y2;
    c3 = lo0;
  }
  return c0;
}

// keep_ij / (1 - p) for query i, key j (per-sequence indices), row bh = b*hq + h; 1 without dropout.
FA_DEV float drop_weight(const AttnParams& p, int b, int h, int i, int j) {
  if (!p.has_dropout) return 1.f;
  const uint32_t w = philox_word0((uint32_t)j, (uint32_t)i, (uint32_t)(b * p.hq + h), p.drop_offset, p.key0, p.key1);
  return (unsigned long long)w >= p.drop_threshold ? p.keep_scale : 0.f;
}

// s = scale*dot, then softcap, ALiBi and bias (SPEC §3). `dot` is q.k in float32.
// ALiBi and bias, the modifiers after the softcap.
FA_DEV float add_alibi_bias(const AttnParams& p, float s, int b, int h, int i, int j, int off) {
  if (p.alibi) {
    const float slope = p.alibi[p.alibi_per_batch ? b * p.hq + h : h];
    s -= slope * fabsf((float)(i + off - j));
  }
  if (p.bias) {
    const long long o = (long long)b * p.bias_s0 + (long long)h * p.bias_s1 + (long long)i * p.bias_s2 + (long long)j * p.bias_s3;
    s += load_any(p.bias, p.bias_dtype, o);
  }
  return s;
}

FA_DEV float modify_score(const AttnParams& p, float s, int b, int h, int i, int j, int off) {
  if (p.softcap > 0.f) s = p.softcap * tanhf(s / p.softcap);
  return add_alibi_bias(p, s, b, h, i, j, off);
}

// d s / d (scale q.k): the softcap's tanh' (1 without softcap). `raw` = scale*dot.
FA_DEV float score_slope(const AttnParams& p, float raw) {
  if (p.softcap <= 0.f) return 1.f;
  const float t = tanhf(raw / p.softcap);
  return 1.f - t * t;
}

// ------------------------------------------------------------------------------------------------
// Async copies.

FA_DEV uint32_t smem_u32(const void* ptr) { return static_cast<uint32_t>(__cvta_generic_to_shared(ptr)); }

// 16 bytes global -> shared; src_bytes < 16 zero-fills the rest (0 = all zeros, src not read).
FA_DEV void cp_async16(void* smem, const void* gmem, int src_bytes) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(smem_u32(smem)), "l"(gmem), "r"(src_bytes));
}
// The same without the source size (no zero fill): for chunks known to be in range.
FA_DEV void cp_async16_full(void* smem, const void* gmem) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(smem_u32(smem)), "l"(gmem));
}
FA_DEV void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N> FA_DEV void cp_async_wait() { asm volatile("cp.async.wait_group %0;\n" ::"n"(N)); }

// ------------------------------------------------------------------------------------------------
// Tensor cores: mma.sync m16n8k16 with float32 accumulators (ldmatrix: tc_common.cuh).

template <typename T> FA_DEV void mma16816(float* c, const uint32_t* a, const uint32_t* b);
template <> FA_DEV void mma16816<__half>(float* c, const uint32_t* a, const uint32_t* b) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}
template <> FA_DEV void mma16816<__nv_bfloat16>(float* c, const uint32_t* a, const uint32_t* b) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}

template <typename T> FA_DEV uint32_t pack2(float lo, float hi);
template <> FA_DEV uint32_t pack2<__half>(float lo, float hi) {
  __half2 h = __floats2half2_rn(lo, hi);
  return *reinterpret_cast<uint32_t*>(&h);
}
template <> FA_DEV uint32_t pack2<__nv_bfloat16>(float lo, float hi) {
  __nv_bfloat162 h = __floats2bfloat162_rn(lo, hi);
  return *reinterpret_cast<uint32_t*>(&h);
}

// Two m16n8 float accumulators (columns n..n+7 and n+8..n+15) as the m16k16 A operand of the next
// mma: the accumulator layout of mma.m16n8k16 is its A layout, so packing to 16 bits is all it takes.
template <typename T> FA_DEV void acc_to_a(uint32_t a[4], const float lo[4], const float hi[4]) {
  a[0] = pack2<T>(lo[0], lo[1]);
  a[1] = pack2<T>(lo[2], lo[3]);
  a[2] = pack2<T>(hi[0], hi[1]);
  a[3] = pack2<T>(hi[2], hi[3]);
}

FA_DEV float exp2_approx(float x) {
  float r;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(r) : "f"(x));
  return r;
}

// Warp reductions (NaN-propagating max).
FA_DEV float warp_max(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = max_nan(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}
FA_DEV float warp_sum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// Launches kern on st; with dependent, as a programmatic dependent of the kernel before it on the
// stream (sm_90: its launch and its CTAs' start may overlap that kernel's end, so the kernel must run
// griddepcontrol.wait before it touches memory the earlier kernel writes).
template <typename... Params, typename... Args>
cudaError_t launch_kernel(void (*kern)(Params...), dim3 grid, dim3 block, size_t smem, cudaStream_t st,
                          bool dependent, Args... args) {
  if (!dependent) {
    kern<<<grid, block, smem, st>>>(args...);
    return cudaGetLastError();
  }
  cudaLaunchConfig_t cfg = {};
  cfg.gridDim = grid;
  cfg.blockDim = block;
  cfg.dynamicSmemBytes = smem;
  cfg.stream = st;
  cudaLaunchAttribute attr[1];
  attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attr[0].val.programmaticStreamSerializationAllowed = 1;
  cfg.attrs = attr;
  cfg.numAttrs = 1;
  return cudaLaunchKernelEx(&cfg, kern, args...);
}

}  // namespace fa

