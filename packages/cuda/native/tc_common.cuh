// Pieces shared by the tensor-core kernels: swizzled shared-memory tiles, their cp.async loaders and
// the ldmatrix address patterns of the m16n8k16 fragments.
#pragma once
#include "device_common.cuh"

namespace fa {

constexpr float LOG2E = 1.4426950408889634f;
constexpr float LN2 = 0.6931471805599453f;

// a tanh(x) for the 16-bit kernels' softcap, from y = 2 x log2 e: a - 2a / (2^y + 1) with the hardware
// exp2 and reciprocal (__fdividef: 0 for an infinite divisor), absolute error ~3e-7 a (saturating to
// +-a, NaN kept), so that cap tanh(s / cap) is off by cap 3e-7 at most, far below what 16-bit scores
// carry. tanhf and the true division cost ~40 instructions per score: the extras path at d = 256 ran
// at a third of the plain one (run 24). The plain forward's CAP form folds the scales into y and a.
FA_DEV float scaled_tanh_exp2(float y, float a) { return fmaf(-2.f * a, __fdividef(1.f, exp2_approx(y) + 1.f), a); }
FA_DEV float tanh_fast(float x) { return scaled_tanh_exp2(2.f * LOG2E * x, 1.f); }

// The score modifiers for the 16-bit kernels (modify_score with tanh_fast and approximate division);
// slope = d s / d raw, the softcap's tanh' (1 without softcap).
FA_DEV float modify_score_tc(const AttnParams& p, float raw, int b, int h, int i, int j, int off, float& slope) {
  float s = raw;
  slope = 1.f;
  if (p.softcap > 0.f) {
    const float t = tanh_fast(__fdividef(raw, p.softcap));
    s = p.softcap * t;
    slope = 1.f - t * t;
  }
  return add_alibi_bias(p, s, b, h, i, j, off);
}

// Element offset of (row r, column c) in a [rows][D] tile whose 16-byte chunks are XOR-swizzled by
// row: ldmatrix reads 8 rows of one logical chunk from 8 different bank groups. Needs D >= 64.
template <int D> FA_DEV int swz(int r, int c) { return r * D + ((((c >> 3) ^ (r & 7))) << 3) + (c & 7); }

// cp.async of `rows` rows of a [rows][D] tile; rows >= valid and columns >= d are zero-filled.
// row_ptr(r) is the row's global address (16-byte aligned: d % 8 == 0).
template <typename T, int D, int NT, typename RowPtr>
FA_DEV void tc_load_tile(T* tile, int rows, int valid, int d, RowPtr row_ptr, const T* any_valid) {
  constexpr int CPR = D / 8;
  const int cpr = d >> 3;
  for (int idx = threadIdx.x; idx < rows * CPR; idx += NT) {
    const int r = idx / CPR, c = idx % CPR;
    const bool ok = r < valid && c < cpr;
    cp_async16(tile + swz<D>(r, c * 8), ok ? row_ptr(r) + c * 8 : any_valid, ok ? 16 : 0);
  }
}

// The same for ROWS rows at a fixed stride from row0 (all but paged K/V), unrolled: a chunk's address
// is one add from the previous one, where the general loader above computes the whole index (64-bit
// multiplies, varlen and paged lookups) for every 16 bytes: in the d = 128 forward that was about a
// third of all instructions (Nsight Compute, PERF.md run 4).
template <typename T, int D, int NT, int ROWS>
FA_DEV void tc_load_tile_strided(T* tile, int valid, int d, const T* row0, long long stride) {
  constexpr int CPR = D / 8;
  static_assert(NT % CPR == 0 && ROWS % (NT / CPR) == 0, "whole rows per pass");
  constexpr int RS = NT / CPR;
  const int c = threadIdx.x % CPR, r0 = threadIdx.x / CPR;
  const bool cok = c < (d >> 3);
  const T* src = row0 + r0 * stride + c * 8;
  T* dst = tile + swz<D>(r0, c * 8);
#pragma unroll
  for (int i = 0; i < ROWS / RS; i++) {
    const bool ok = cok && r0 + i * RS < valid;
    // RS is a multiple of 8 wherever D <= 128, so the swizzle of row r0 + i * RS is that of r0.
    T* to = (RS % 8 == 0) ? dst + i * RS * D : tile + swz<D>(r0 + i * RS, c * 8);
    cp_async16(to, ok ? src + i * RS * stride : row0, ok ? 16 : 0);
  }
}

// Fragment addresses without per-load index arithmetic. In a swizzled [rows][D] tile the 16-byte chunk
// a lane reads for k step ks (or column pair dt) is its chunk for step 0 XOR 2 * ks (resp. dt): the
// step's own bits never meet the row's. So each lane keeps one byte address per tile, XORs in the
// step (one LOP3) and adds row offsets as immediates; computing the swizzled index per load cost
// about four integer instructions per ldmatrix, a quarter of the forward's instructions (run 5). This
// needs the tile's shared address to have bits 4..8 clear: the dynamic shared window starts 1 KB-aligned
// (after the 1 KB the hardware reserves) and every tile offset is a multiple of 1 KB.
template <int D> struct FragAddr {
  // ldmatrix.x4 of A (rows r0 + 0..15, k chunk pair 2 ks): lane reads row lane % 16, chunk lane / 16.
  static FA_DEV uint32_t a(uint32_t tile, int lane) {
    return tile + (lane & 15) * (D * 2) + ((((lane >> 4) ^ lane) & 7) << 4);
  }
  // B of two n-tiles from [n][k]: row 8 * (lane / 16) + lane % 8, chunk (lane / 8) % 2.
  static FA_DEV uint32_t b(uint32_t tile, int lane) {
    return tile + ((((lane >> 4) & 1) << 3) + (lane & 7)) * (D * 2) + (((((lane >> 3) & 1)) ^ (lane & 7)) << 4);
  }
  // B of two n-tiles from [k][n] (transposed): row 8 * ((lane / 8) % 2) + lane % 8, chunk lane / 16.
  static FA_DEV uint32_t bt(uint32_t tile, int lane) {
    return tile + ((((lane >> 3) & 1) << 3) + (lane & 7)) * (D * 2) + ((((lane >> 4) & 1) ^ (lane & 7)) << 4);
  }
};

FA_DEV void ldsm_x4(uint32_t* r, uint32_t addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
}
FA_DEV void ldsm_x4_t(uint32_t* r, uint32_t addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
}

// The general fragment loads, in the same XOR form (FragAddr): the lane's address for the tile is
// common to every k step (the compiler computes it once per tile), each step is one LOP3 and the row
// offset an immediate. r0 and n0 are multiples of 8 rows, dt is even.
// A fragment (16 rows x k16) of a row-major tile, rows [r0, r0+16), k chunk pair 2*ks.
template <int D> FA_DEV void ld_a(uint32_t* a, const void* tile, int r0, int ks, int lane) {
  ldsm_x4(a, (FragAddr<D>::a(smem_u32(tile), lane) ^ (ks << 5)) + r0 * (D * 2));
}

// B fragments of two n-tiles (rows n0..n0+15 of a row-major [n][k] tile), k16 step ks:
// b[0..1] for rows n0..n0+7, b[2..3] for rows n0+8..n0+15.
template <int D> FA_DEV void ld_b(uint32_t* b, const void* tile, int n0, int ks, int lane) {
  ldsm_x4(b, (FragAddr<D>::b(smem_u32(tile), lane) ^ (ks << 5)) + n0 * (D * 2));
}

// B fragments of two n-tiles from a row-major [k][n] tile (transposed load): k rows kk*16..kk*16+15,
// columns (n) dt*8..dt*8+15: b[0..1] for columns dt*8.., b[2..3] for dt*8+8...
template <int D> FA_DEV void ld_bt(uint32_t* b, const void* tile, int kk, int dt, int lane) {
  ldsm_x4_t(b, (FragAddr<D>::bt(smem_u32(tile), lane) ^ (dt << 4)) + kk * 16 * (D * 2));
}

// FragAddr needs every tile to start at a shared address with bits 4..8 clear: the window is 1 KB
// aligned and the tiles sit at multiples of 1 KB. Checked once per CTA: a violation is a launch
// error, never silently wrong output.
FA_DEV void check_smem_alignment(const void* smem) {
  if (threadIdx.x == 0 && (smem_u32(smem) & 1023u) != 0) __trap();
}

}  // namespace fa
