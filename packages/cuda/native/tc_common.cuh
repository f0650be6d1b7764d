// Pieces shared by the tensor-core kernels: swizzled shared-memory tiles, their cp.async loaders and
// the ldmatrix address patterns of the m16n8k16 fragments.
#pragma once
#include "device_common.cuh"

namespace fa {

constexpr float LOG2E = 1.4426950408889634f;
constexpr float LN2 = 0.6931471805599453f;

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

// A fragment (16 rows x k16) of a row-major tile, rows [r0, r0+16), k chunk pair 2*ks.
template <int D> FA_DEV void ld_a(uint32_t* a, const void* tile, int r0, int ks, int lane) {
  const int r = r0 + (lane & 15);
  const int c = (2 * ks + (lane >> 4)) * 8;
  ldmatrix_x4(a[0], a[1], a[2], a[3], static_cast<const uint16_t*>(tile) + swz<D>(r, c));
}

// B fragments of two n-tiles (rows n0..n0+15 of a row-major [n][k] tile), k16 step ks:
// b[0..1] for rows n0..n0+7, b[2..3] for rows n0+8..n0+15.
template <int D> FA_DEV void ld_b(uint32_t* b, const void* tile, int n0, int ks, int lane) {
  const int mi = lane >> 3;
  const int r = n0 + ((mi >> 1) << 3) + (lane & 7);
  const int c = (2 * ks + (mi & 1)) * 8;
  ldmatrix_x4(b[0], b[1], b[2], b[3], static_cast<const uint16_t*>(tile) + swz<D>(r, c));
}

// B fragments of two n-tiles from a row-major [k][n] tile (transposed load): k rows kk*16..kk*16+15,
// columns (n) dt*8..dt*8+15: b[0..1] for columns dt*8.., b[2..3] for dt*8+8...
template <int D> FA_DEV void ld_bt(uint32_t* b, const void* tile, int kk, int dt, int lane) {
  const int mi = lane >> 3;
  const int r = kk * 16 + ((mi & 1) << 3) + (lane & 7);
  const int c = (dt + (mi >> 1)) * 8;
  ldmatrix_x4_trans(b[0], b[1], b[2], b[3], static_cast<const uint16_t*>(tile) + swz<D>(r, c));
}

}  // namespace fa
