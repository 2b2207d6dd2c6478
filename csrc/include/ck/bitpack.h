// Bit-packed codebook indices: the one layout that codebook_pack writes, codebook_unpack reads and
// every codebook kernel (CPU, and CUDA where built) consumes. Torch-free; `__host__ __device__`
// under nvcc.
//
// Layout of an index matrix idx [n, k] with b bits per index (1 <= b <= 8):
//   * c = 32 / b indices share one 32-bit word (1:32, 2:16, 3:10, 4:8, 5:6, 6:5, 7:4, 8:4);
//     index j of a word (j = 0 .. c-1) occupies bits [j*b, j*b + b). Unused high bits are zero.
//   * A row holds kw = ceil(k / c) words; word g of row r covers k = g*c .. g*c + c-1. Index slots
//     beyond k are zero.
//   * Rows are interleaved in blocks of 16 output rows (the last block holds n % 16 rows when n is
//     not a multiple of 16): word g of row 16*blk + i is stored at word offset
//     16*blk*kw + g*rows_in_block + i. So one 64-byte load of a full block yields, in lane i, the
//     next c indices of row 16*blk + i: the operand order of a 16-lane table lookup (`vpermps`
//     reads the low 4 bits of each lane, `vpermt2ps` the low 5), after which a right shift by b
//     exposes the next index. That is why indices do not straddle words, at the cost of
//     32 mod b wasted bits per word for b = 3, 5, 6, 7 (3 bits cost 3.2 bits of storage).
//   * This is the payload of codebook_pack's int32 tensor [header_rows(kw) + n, kw], after the
//     header rows of ck/packed_header.h (which record n, k and b); the kernels get a pointer past
//     them.
#pragma once

#include <cstdint>

#if defined(__CUDACC__)
#define CK_BITPACK_FN __host__ __device__ __forceinline__
#else
#define CK_BITPACK_FN inline
#endif

namespace ck::bitpack {

constexpr int64_t kBlockRows = 16;  // rows interleaved per block: one 16-lane fp32 vector

// Indices per 32-bit word for b bits (no index straddles two words).
CK_BITPACK_FN int64_t per_word(int bits) { return 32 / bits; }

// Words per row for k indices of b bits.
CK_BITPACK_FN int64_t words_per_row(int64_t k, int bits) {
  const int64_t c = per_word(bits);
  return (k + c - 1) / c;
}

// Rows stored in the block that holds row r (16, or n % 16 for the last block).
CK_BITPACK_FN int64_t rows_in_block(int64_t n, int64_t block) {
  const int64_t left = n - block * kBlockRows;
  return left < kBlockRows ? left : kBlockRows;
}

// Word offset of word g of row r in a packed [n, kw] matrix.
CK_BITPACK_FN int64_t word_offset(int64_t n, int64_t kw, int64_t r, int64_t g) {
  const int64_t block = r / kBlockRows;
  return block * kBlockRows * kw + g * rows_in_block(n, block) + (r - block * kBlockRows);
}

// The index at (r, kk) of a packed [n, kw] matrix with b bits.
CK_BITPACK_FN uint32_t get_index(const uint32_t* packed, int64_t n, int64_t kw, int bits, int64_t r, int64_t kk) {
  const int64_t c = per_word(bits);
  const int64_t g = kk / c;
  const int j = static_cast<int>(kk - g * c);
  return (packed[word_offset(n, kw, r, g)] >> (j * bits)) & ((1u << bits) - 1u);
}

// Packs the c indices idx[0 .. count-1] (count <= c, each < 2^b) of one word.
CK_BITPACK_FN uint32_t pack_word(const uint8_t* idx, int64_t count, int bits) {
  uint32_t w = 0;
  for (int64_t j = 0; j < count; ++j) w |= static_cast<uint32_t>(idx[j]) << (j * bits);
  return w;
}

}  // namespace ck::bitpack
