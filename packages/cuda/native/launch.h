// Host entry points of the kernels (one set per element type) and the dispatcher.
#pragma once
#include <cuda_runtime.h>

#include "attn_params.h"

namespace fa {

#define FA_DECLARE_GENERIC(NAME)                                                                    \
  cudaError_t gen_forward_##NAME(const AttnParams& p, int splits, bool decode, cudaStream_t st);     \
  cudaError_t dsum_##NAME(const AttnParams& p, cudaStream_t st);                                     \
  cudaError_t gen_backward_##NAME(const AttnParams& p, float* dk, float* dv, bool serial, cudaStream_t st); \
  cudaError_t convert_##NAME(const float* src, void* dst, long long n, cudaStream_t st);
FA_DECLARE_GENERIC(f32)
FA_DECLARE_GENERIC(f16)
FA_DECLARE_GENERIC(bf16)

// Tensor-core kernels (float16/bfloat16, head dims that are multiples of 8 up to 256).
// extras: softcap, ALiBi, bias or dropout are present (the per-element kernels); cap: a softcap alone
// (the plain forward kernel's CAP form).
cudaError_t tc_forward_f16(const AttnParams& p, bool extras, bool cap, int variant, cudaStream_t st);
cudaError_t tc_forward_bf16(const AttnParams& p, bool extras, bool cap, int variant, cudaStream_t st);
// Backward for head dims up to 256: dK, dV and dQ. Adds the scratch it takes (the fused kernel's
// float32 dQ accumulator and counters) to *scratch.
// `unordered`: the caller allows dQ added in no fixed order (Options::nondeterministic); set on return
// when that kernel ran.
cudaError_t tc_backward_f16(const AttnParams& p, bool extras, int variant, bool* unordered, cudaStream_t st,
                            size_t* scratch);
cudaError_t tc_backward_bf16(const AttnParams& p, bool extras, int variant, bool* unordered, cudaStream_t st,
                             size_t* scratch);

struct DeviceProps {
  int sm_count;
  int smem_optin;
  int major, minor;
};

// Kernel choice, recorded for the caller (benchmarks print it).
struct Plan {
  const char* kernel;  // "tc", "tc-nondeterministic", "tc-decode", "generic", "generic-split", "generic-serial"
  int splits;
  size_t scratch_bytes;  // device memory taken for the call beyond its outputs
};

struct Options {
  int force_generic;  // 1: the generic kernels everywhere (testing)
  int variant;        // pipeline / tile variant of the tensor-core kernels (FA_TUNE builds; 0 = default)
  int nondeterministic;  // 1: the backward may add dQ in no fixed order where that is faster (opt-in)
};

// Scratch allocation on the stream (stream-ordered allocator); returns null on failure.
struct Scratch {
  cudaStream_t st;
  void* ptrs[8];
  int n;
  cudaError_t err;
  explicit Scratch(cudaStream_t s) : st(s), n(0), err(cudaSuccess) {}
  void* alloc(size_t bytes) {
    void* ptr = nullptr;
    cudaError_t e = cudaMallocAsync(&ptr, bytes < 256 ? 256 : bytes, st);
    if (e != cudaSuccess) {
      err = e;
      return nullptr;
    }
    ptrs[n++] = ptr;
    return ptr;
  }
  ~Scratch() {
    for (int i = 0; i < n; i++) cudaFreeAsync(ptrs[i], st);
  }
};

// Split-KV decode on tensor cores (tc_decode.cuh): rows sq * group <= TC_DECODE_ROWS, head dim <= 128 with
// d % 8 == 0, no softcap / ALiBi / bias / dropout. Chooses its splits and allocates their scratch.
constexpr int TC_DECODE_ROWS = 16;  // packed (query, head) rows: one m16 tile
cudaError_t tc_decode_f16(const AttnParams& p, const DeviceProps& dev, int variant, cudaStream_t st, Plan* plan);
cudaError_t tc_decode_bf16(const AttnParams& p, const DeviceProps& dev, int variant, cudaStream_t st, Plan* plan);

// Forward: out (and lse when p.lse) from q, k, v. Allocates split-KV scratch itself.
cudaError_t run_forward(AttnParams p, const DeviceProps& dev, const Options& opt, cudaStream_t st, Plan* plan);
// Backward: dq, dk, dv from dout, q, k, v, out, lse. `pages_shared`: the block table maps one page
// more than once (then dK/dV are summed in a serial, deterministic order).
cudaError_t run_backward(AttnParams p, const DeviceProps& dev, const Options& opt, bool pages_shared,
                         cudaStream_t st, Plan* plan);

}  // namespace fa
