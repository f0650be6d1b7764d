// The plain descriptor every kernel reads: @flashattn/core's Problem, flattened for the device.
// Shared by the host code (addon.cc, launch code) and the kernels; no CUDA types here.
#pragma once
#include <cstdint>

namespace fa {

enum DType : int { F32 = 0, F16 = 1, BF16 = 2 };

inline int dtype_size(int dt) { return dt == F32 ? 4 : 2; }

// Device memory kept across calls on one stream and grown there (stream-ordered) when a call needs
// more; owned and freed by the caller (addon.cc's Context).
struct KeptBuffer {
  void* ptr = nullptr;
  unsigned long long bytes = 0;
};

struct AttnParams {
  int dtype;
  int batch, seq_q, seq_k, hq, hk, d, group;
  int total_q, total_k;
  // Element strides: q, out, dout, dq share q's; k, v, dk, dv share kv's. batch stride 0 for varlen/paged.
  long long q_sb, q_ss, q_sh;
  long long kv_sb, kv_ss, kv_sh;
  const void* q;
  const void* k;
  const void* v;
  void* out;
  float* lse;  // [b, hq, sq] or [hq, totalQ]; may be null in forward when not wanted
  // Sequence structure.
  const int* cu_q;        // varlen prefix sums [b+1] or null
  const int* cu_k;        // varlen prefix sums [b+1] or null
  const int* seqlens_k;   // [b] or null
  const int* block_table; // [b, max_pages] or null
  int page_size, max_pages;
  // Mask and score modifiers.
  float scale, softcap;
  int causal, wl, wr;
  const float* alibi;  // [hq] or [b*hq] or null
  int alibi_per_batch;
  const void* bias;  // null = none
  int bias_dtype;
  long long bias_s0, bias_s1, bias_s2, bias_s3;
  // Dropout (SPEC §5): keep iff Philox word0 >= drop_threshold (= ceil(p * 2^32)).
  int has_dropout;
  unsigned long long drop_threshold;
  float keep_scale;
  unsigned key0, key1, drop_offset;
  // Split-KV scratch (generic forward): [splits, b*hq*sq_max rows, d] and [splits, rows].
  int num_splits;
  float* o_part;
  float* lse_part;
  // Arrival counters of the tensor-core decode, one per (batch, key head), owned by the caller's
  // stream and zero between calls: the last split CTA of a key head to finish merges the partials
  // and sets its counter back to zero. Null (or fewer than batch * hk): a separate combine kernel.
  unsigned int* split_count;
  long long split_count_len;
  // The tensor-core decode's partials buffer, kept by the caller across calls on its stream (since run
  // 17; null: a stream-ordered allocation per call). A host pointer: the launch code grows it.
  struct KeptBuffer* decode_part;
  // Diagnosis builds only (the decode's TRACE variant): 16 timer readings per CTA.
  unsigned long long* trace;
  // Backward.
  const void* dout;
  const float* lse_in;
  float* dsum;  // D_i = dO_i . O_i, laid out like lse
  // The fixed-point dQ (tc_bwd.cuh, FA2_FIX): max |K| and max |V_j| (float bits), and a flag set
  // where a dQ contribution fell outside its range; the dQ pass kernel then recomputes dQ.
  unsigned* fix_state;
  float* fix_rows;  // the rows' multipliers f_i, laid out like lse
  const unsigned* run_if;  // not null: the dQ pass kernel does nothing unless *run_if != 0
  void* dq;
  void* dk;
  void* dv;
  int only_batch;   // >= 0: the dK/dV kernel handles this batch only (serial mode for shared pages)
  int accumulate;   // dK/dV kernel adds into dk/dv instead of storing
  int only_kblock;  // >= 0: the dK/dV kernel handles this key block only (serial mode)
};

}  // namespace fa
