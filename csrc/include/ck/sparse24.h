// 2:4 semi-structured sparsity: the compressed layout and its metadata (torch-free, CUDA-usable).
//
// A weight w [N, K] (K a multiple of 4) is 2:4 sparse when every group of four consecutive k,
// w[n, 4g .. 4g + 3], holds at most two non-zeros. Its compressed form is
//
//   values [N, K / 2]: values[n, 2g + s] = w[n, 4g + idx_s(n, g)], s = 0, 1, idx_0 < idx_1;
//   meta   uint8 [N, ceil(K / 8)]: one 4-bit nibble per group, nibble(n, g) = idx_0 | (idx_1 << 2),
//          group g in byte g / 2, the low nibble for even g and the high nibble for odd g (a
//          trailing unused high nibble, when K % 8 == 4, is zero).
//
// A group with fewer than two non-zeros still names two distinct positions (the kept zeros are
// stored as values): the compressor fills them with the lowest unused positions, so a group of
// four zeros is nibble 0b0100 (positions 0 and 1). Nibbles with idx_0 >= idx_1 are invalid.
//
// The nibble is the one CUTLASS (and PyTorch's to_sparse_semi_structured) uses for 16- and 8-bit
// types; read as little-endian int16 (int32), four (eight) consecutive groups of a row of `meta`
// are CUTLASS's un-reordered metadata word. compress_kernels/sparse24_layout.py converts to and from the
// reordered (ColumnMajorInterleaved<2>) CUTLASS layout.
//
// Bytes: fp32 values + meta = 50% + 3.125% of dense; int8 values + meta = 50% + 12.5% of dense.
#pragma once

#include <cstdint>

#if defined(__CUDACC__)
#define CK_SPARSE24_HD __host__ __device__ __forceinline__
#else
#define CK_SPARSE24_HD inline
#endif

namespace ck::sparse24 {

constexpr int kGroup = 4;  // k per group
constexpr int kKept = 2;   // stored values per group

CK_SPARSE24_HD int64_t meta_cols(int64_t k) { return (k + 7) / 8; }

// The nibble of group g of a meta row.
CK_SPARSE24_HD int nibble(const uint8_t* meta_row, int64_t g) { return (meta_row[g >> 1] >> ((g & 1) * 4)) & 0xF; }

// Position (0..3) of stored value s (0 or 1) of a group with this nibble.
CK_SPARSE24_HD int position(int nib, int s) { return (nib >> (2 * s)) & 3; }

CK_SPARSE24_HD bool valid_nibble(int nib) { return position(nib, 0) < position(nib, 1); }

// The k index of stored value j (0 .. K/2 - 1) of a meta row.
CK_SPARSE24_HD int64_t k_of(const uint8_t* meta_row, int64_t j) {
  const int64_t g = j >> 1;
  return 4 * g + position(nibble(meta_row, g), static_cast<int>(j & 1));
}

// Chooses the stored positions of one group: the non-zeros, then the lowest unused positions.
// Returns false when the group has more than two non-zeros. `nonzero` is a 4-bit mask.
CK_SPARSE24_HD bool choose_positions(int nonzero, int* idx0, int* idx1) {
  int count = 0, pos[4];
  for (int i = 0; i < 4; ++i)
    if (nonzero & (1 << i)) pos[count++] = i;
  if (count > 2) return false;
  for (int i = 0; i < 4 && count < 2; ++i) {
    if (!(nonzero & (1 << i)) && (count == 0 || pos[0] != i)) pos[count++] = i;
  }
  if (pos[0] > pos[1]) {
    const int t = pos[0];
    pos[0] = pos[1];
    pos[1] = t;
  }
  *idx0 = pos[0];
  *idx1 = pos[1];
  return true;
}

}  // namespace ck::sparse24
