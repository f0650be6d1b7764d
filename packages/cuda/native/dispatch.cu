// Chooses the kernels for a call and runs them on the stream (see launch.h).
#include <algorithm>
#include <cstdint>

#include "generic.cuh"
#include "launch.h"

namespace fa {

namespace {

bool aligned16(const void* x) { return (reinterpret_cast<uintptr_t>(x) & 15) == 0; }

// The tensor-core kernels need 16-byte rows: d % 8 == 0, aligned bases, strides in whole chunks.
bool tc_layout_ok(const AttnParams& p) {
  return p.d % 8 == 0 && aligned16(p.q) && aligned16(p.k) && aligned16(p.v) && (!p.out || aligned16(p.out)) &&
         (!p.dout || aligned16(p.dout)) && p.q_sb % 8 == 0 && p.q_ss % 8 == 0 && p.q_sh % 8 == 0 &&
         p.kv_sb % 8 == 0 && p.kv_ss % 8 == 0 && p.kv_sh % 8 == 0;
}

bool has_extras(const AttnParams& p) { return p.softcap > 0.f || p.alibi || p.bias || p.has_dropout; }

long long lse_rows(const AttnParams& p) {
  return p.cu_q ? (long long)p.hq * p.total_q : (long long)p.batch * p.hq * p.seq_q;
}

// Split-KV factor of the generic forward: enough CTAs for ~4 per SM, at least 4 key tiles per split.
int choose_splits(const AttnParams& p, const DeviceProps& dev) {
  const long long rows = (long long)p.seq_q * p.group;
  const long long base = (long long)p.batch * p.hk * ((rows + GEN_BR - 1) / GEN_BR);
  if (base == 0) return 1;
  const long long target = 4LL * dev.sm_count;
  if (base >= target / 2) return 1;
  const long long tiles = (p.seq_k + GEN_BC - 1) / GEN_BC;
  long long s = (target + base - 1) / base;
  s = std::min<long long>(s, std::max<long long>(1, tiles / 4));
  s = std::min<long long>(s, 128);
  return (int)std::max<long long>(1, s);
}

cudaError_t gen_forward(const AttnParams& p, int splits, bool decode, cudaStream_t st) {
  switch (p.dtype) {
    case F32: return gen_forward_f32(p, splits, decode, st);
    case F16: return gen_forward_f16(p, splits, decode, st);
    default: return gen_forward_bf16(p, splits, decode, st);
  }
}

}  // namespace

cudaError_t run_forward(AttnParams p, const DeviceProps& dev, const Options& opt, cudaStream_t st, Plan* plan) {
  plan->splits = 1;
  plan->scratch_bytes = 0;
  const bool tc = !opt.force_generic && p.dtype != F32 && tc_layout_ok(p);
  const int splits = choose_splits(p, dev);
  const bool decode = (long long)p.seq_q * p.group <= 64 && splits > 1;
  if (tc && decode && !has_extras(p) && p.d <= 128 && (long long)p.seq_q * p.group <= TC_DECODE_ROWS) {
    return p.dtype == F16 ? tc_decode_f16(p, dev, opt.variant, st, plan) : tc_decode_bf16(p, dev, opt.variant, st, plan);
  }
  if (tc && !decode) {
    plan->kernel = "tc";
    // The plain kernel folds the scale into its exponent and needs it positive; a softcap alone runs
    // on it too (its CAP form, run 25).
#ifdef FA_TUNE
    const bool cap_off = opt.variant == 20;  // tuning builds: variant 20 runs a softcap on the extras kernel
#else
    const bool cap_off = false;
#endif
    const bool cap = p.softcap > 0.f && !p.alibi && !p.bias && !p.has_dropout && p.scale > 0.f && !cap_off;
    const bool extras = !cap && (has_extras(p) || !(p.scale > 0.f));
    if (p.dtype == F16) return tc_forward_f16(p, extras, cap, opt.variant, st);
    return tc_forward_bf16(p, extras, cap, opt.variant, st);
  }
  if (splits > 1) {
    Scratch scratch(st);
    const long long rows = lse_rows(p);
    const size_t obytes = (size_t)splits * rows * p.d * sizeof(float);
    const size_t lbytes = (size_t)splits * rows * sizeof(float);
    p.o_part = static_cast<float*>(scratch.alloc(obytes));
    p.lse_part = static_cast<float*>(scratch.alloc(lbytes));
    if (!p.o_part || !p.lse_part) return scratch.err;
    p.num_splits = splits;
    plan->kernel = "generic-split";
    plan->splits = splits;
    plan->scratch_bytes = obytes + lbytes;
    return gen_forward(p, splits, decode, st);
  }
  plan->kernel = "generic";
  p.num_splits = 1;
  return gen_forward(p, 1, false, st);
}

cudaError_t run_backward(AttnParams p, const DeviceProps& dev, const Options& opt, bool pages_shared, cudaStream_t st,
                         Plan* plan) {
  (void)dev;
  plan->splits = 1;
  Scratch scratch(st);
  const long long rows = lse_rows(p);
  p.dsum = static_cast<float*>(scratch.alloc((size_t)std::max<long long>(rows, 1) * sizeof(float)));
  if (!p.dsum) return scratch.err;
  size_t scratch_bytes = (size_t)std::max<long long>(rows, 1) * sizeof(float);
  const size_t esz = p.dtype == F32 ? 4 : 2;
  const long long kv_elems = (long long)p.total_k * p.hk * p.d;
  cudaError_t e;
  switch (p.dtype) {
    case F32: e = dsum_f32(p, st); break;
    case F16: e = dsum_f16(p, st); break;
    default: e = dsum_bf16(p, st); break;
  }
  if (e != cudaSuccess) return e;
  const bool tc = !opt.force_generic && p.dtype != F32 && tc_layout_ok(p) && p.d <= 256 && !pages_shared;
  if (tc) {
    plan->kernel = "tc";
    // Keys no sequence reaches (padding, pages no table names) keep a zero gradient; the kernels write
    // every other key row, so dense K/V need no clearing (two passes over 2 * kv bytes saved).
    if (p.seqlens_k || p.block_table || p.cu_k) {
      e = cudaMemsetAsync(p.dk, 0, kv_elems * esz, st);
      if (e == cudaSuccess) e = cudaMemsetAsync(p.dv, 0, kv_elems * esz, st);
      if (e != cudaSuccess) return e;
    }
    bool unordered = opt.nondeterministic != 0;
    e = p.dtype == F16 ? tc_backward_f16(p, has_extras(p), opt.variant, &unordered, st, &scratch_bytes)
                       : tc_backward_bf16(p, has_extras(p), opt.variant, &unordered, st, &scratch_bytes);
    if (unordered) plan->kernel = "tc-nondeterministic";
    plan->scratch_bytes = scratch_bytes;
    return e;
  }
  plan->kernel = pages_shared ? "generic-serial" : "generic";
  float* dk_acc;
  float* dv_acc;
  if (p.dtype == F32) {
    dk_acc = static_cast<float*>(p.dk);
    dv_acc = static_cast<float*>(p.dv);
  } else {
    dk_acc = static_cast<float*>(scratch.alloc((size_t)std::max<long long>(kv_elems, 1) * 4));
    dv_acc = static_cast<float*>(scratch.alloc((size_t)std::max<long long>(kv_elems, 1) * 4));
    if (!dk_acc || !dv_acc) return scratch.err;
    scratch_bytes += 2 * (size_t)std::max<long long>(kv_elems, 1) * 4;
  }
  plan->scratch_bytes = scratch_bytes;
  e = cudaMemsetAsync(dk_acc, 0, kv_elems * 4, st);
  if (e == cudaSuccess) e = cudaMemsetAsync(dv_acc, 0, kv_elems * 4, st);
  if (e != cudaSuccess) return e;
  switch (p.dtype) {
    case F32: e = gen_backward_f32(p, dk_acc, dv_acc, pages_shared, st); break;
    case F16: e = gen_backward_f16(p, dk_acc, dv_acc, pages_shared, st); break;
    default: e = gen_backward_bf16(p, dk_acc, dv_acc, pages_shared, st); break;
  }
  if (e != cudaSuccess || p.dtype == F32) return e;
  if (p.dtype == F16) {
    e = convert_f16(dk_acc, p.dk, kv_elems, st);
    if (e == cudaSuccess) e = convert_f16(dv_acc, p.dv, kv_elems, st);
  } else {
    e = convert_bf16(dk_acc, p.dk, kv_elems, st);
    if (e == cudaSuccess) e = convert_bf16(dv_acc, p.dv, kv_elems, st);
  }
  return e;
}

}  // namespace fa
