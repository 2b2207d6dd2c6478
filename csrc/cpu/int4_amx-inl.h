// Included by int4_amx.cpp (amx tier: avx512f/bw/vl/dq/vnni + amx-tile/int8) and int4_amx_emulated.cpp
// (amx_emulated tier: no target flags). The w4a8 int4 kernel on AMX tiles, a template over the tile
// policy (amx_tiles.h) and a per-group accumulation policy; everything here has internal linkage.
//
// Per row block of the weight (16 output columns) the kernel decodes the whole block once into the
// tdpbssd B layout in per-thread scratch: the nibbles u of chunk c of a group, one 32-bit word per
// row, are exactly B rows 2c (low nibbles, k = 8c..8c+3) and 2c + 1 (high nibbles, k = 8c+4..8c+7)
// once each byte becomes the signed q = u - 8, so the decode is a mask, a shift and a subtract per
// 64 bytes. Then, per tile of 16 rows of x and per group g in order, tdpbssd sums q * q_x over the
// group into a zeroed accumulator tile (one dot of K = 32 for groups of 32, group_size / 64 dots of
// K = 64 otherwise), the tile is stored, and the policy adds each column's
//   d = sum_{k in g} q[n, k] * q_x[m, k] - z[n, g] * xsum[m, g]
// (the exact int32 d_g of int4.h: u - o = q - z) to the fp32 accumulator as acc + float(d) * s[n, g].
// Consecutive groups alternate between two accumulator tiles (0 with A 4 / B 6, 3 with A 5 / B 7),
// so the tile unit can run one group while the vector unit accumulates the previous one.
// The result is int4.h's w4a8 semantics bit for bit: the same exact d_g, the same fp32 operations in
// the same order.
#pragma once

#include <cstdint>
#include <cstring>
#include <vector>

#include "amx_tiles.h"
#include "int4.h"

namespace ck::cpu {
namespace {

// Per-thread scratch, grown to the largest call and reused.
struct Int4AmxScratch {
  std::vector<int8_t> b;          // the block's decoded B rows: K / 4 rows x 64 bytes
  std::vector<int8_t> a_tail;     // the last, partial tile of x rows, zero-padded to 16 rows: 16 x K
  std::vector<int32_t> sums;      // two staged accumulator tiles: 2 x 16 x 16
  std::vector<int32_t> xsum_tail; // asymmetric packs: group sums of the partial tile, zero-padded
  std::vector<float> fsums;       // w4a16: two staged fp32 accumulator tiles
  std::vector<uint16_t> x_tail;   // w4a16: the last, partial tile of bf16 x rows, zero-padded
  std::vector<float> fxsum_tail;  // w4a16, asymmetric packs: fp32 group sums of the partial tile
};

inline Int4AmxScratch& int4_amx_scratch() {
  thread_local Int4AmxScratch s;
  return s;
}

template <class T>
T* int4_grow(std::vector<T>& v, size_t n) {
  if (v.size() < n) v.resize(n);
  return v.data();
}

// The rows [first_row, first_row + rows) of a row-major [*, cols] matrix copied into scratch v, zero-padded
// to kAmxTileRows rows: the last, partial tile of x (its padding rows then sum to 0) and its group sums.
template <class T>
T* int4_padded_tile(std::vector<T>& v, const T* src, int64_t first_row, int64_t rows, int64_t cols) {
  T* tile = int4_grow(v, static_cast<size_t>(kAmxTileRows * cols));
  std::memset(tile, 0, static_cast<size_t>(kAmxTileRows * cols) * sizeof(T));
  std::memcpy(tile, src + first_row * cols, static_cast<size_t>(rows * cols) * sizeof(T));
  return tile;
}

// The tile shape of one dot: A tiles of kt = min(group_size, 64) bytes per row, B tiles of kt / 4 rows.
inline AmxTileConfig int4_amx_config(int64_t group_size) {
  AmxTileConfig c = amx_config(kAmxTileRows);
  const int64_t kt = group_size < kAmxTileBytes ? group_size : kAmxTileBytes;
  for (int t = 4; t < 6; ++t) c.colsb[t] = static_cast<uint16_t>(kt);
  for (int t = 6; t < 8; ++t) c.rows[t] = static_cast<uint8_t>(kt / 4);
  return c;
}

// One group of one tile of x rows: zero the accumulator tile, the group's `dots` dots (A: 16 rows lda
// bytes apart, a_step bytes further per dot; B: 64-byte rows, b_step bytes further per dot; tdpbf16ps
// when kBf16, else tdpbssd), store the tile to `sums` (16 x 16 int32 or fp32, row stride 64 bytes).
template <class Tiles, int C, int A, int B, bool kBf16>
void int4_amx_group(const uint8_t* a, int64_t lda, int64_t a_step, const int8_t* b, int64_t b_step, int64_t dots,
                    void* sums) {
  Tiles::template zero<C>();
  for (int64_t d = 0; d < dots; ++d) {
    Tiles::template load<A>(a + d * a_step, lda);
    Tiles::template load<B>(b + d * b_step, kAmxTileBytes);
    if constexpr (kBf16) {
      Tiles::template dot_bf16<C, A, B>();
    } else {
      Tiles::template dot_ss<C, A, B>();
    }
  }
  Tiles::template store<C>(sums, kAmxTileBytes);
}

// The groups of one tile of x rows, in order, software-pipelined: group g's dots (A at a + g * a_group,
// B at b + g * b_group) run on accumulator tile 0 (A 4, B 6) or 3 (A 5, B 7) by its parity and land in
// the 1 KB half g & 1 of `sums`; accumulate(g - 1) runs after them, so the vector unit takes the previous
// group while the tiles work and reads a stored tile only after a whole step (reading it back at once
// stalls). accumulate(groups - 1) ends it.
template <class Tiles, bool kBf16, class Accumulate>
void int4_amx_groups(const uint8_t* a, int64_t lda, int64_t a_group, int64_t a_step, const int8_t* b, int64_t b_group,
                     int64_t b_step, int64_t groups, int64_t dots, uint8_t* sums, Accumulate&& accumulate) {
  for (int64_t g = 0; g < groups; ++g) {
    uint8_t* half = sums + (g & 1) * 1024;
    if ((g & 1) == 0) {
      int4_amx_group<Tiles, 0, 4, 6, kBf16>(a + g * a_group, lda, a_step, b + g * b_group, b_step, dots, half);
    } else {
      int4_amx_group<Tiles, 3, 5, 7, kBf16>(a + g * a_group, lda, a_step, b + g * b_group, b_step, dots, half);
    }
    if (g > 0) accumulate(g - 1);
  }
  accumulate(groups - 1);
}

// Policy:
//   Policy::decode(words, rows, lo, hi): the chunk's `rows` words (row r at words[r]) -> B rows lo
//     and hi (64 bytes each, bytes 4r..4r+3 of row r; rows past `rows` may hold anything)
//   Policy::Acc: the fp32 accumulators of a 16 x 16 tile, set to +0.0 by Policy::zero(acc)
//   Policy::add_group(acc, sums, cols, scales, offsets, xsum, xsum_stride): for all 16 rows r and the
//     columns j < cols, acc[r][j] = acc[r][j] + float(d) * scales[j] (product rounded, then the sum) with
//     d = sums[r * 16 + j] - (offsets ? (offsets[j] - 8) * xsum[r * xsum_stride] : 0)
//   Policy::finish(acc, rows_m, cols, x_scale, bias, out, ldo): out[r][j] = acc * x_scale[r] (+ bias[j])
//     for r < rows_m, j < cols
template <class Tiles, class Policy>
void int4_w4a8_amx_blocks(const Int4W4a8Args& a, int64_t block_begin, int64_t block_end) {
  const Int4Weight& w = a.w;
  const int64_t gs = w.group_size, groups = w.groups(), chunks = gs / 8, k = w.k;
  const int64_t kt = gs < kAmxTileBytes ? gs : kAmxTileBytes, dots = gs / kt;
  Int4AmxScratch& s = int4_amx_scratch();
  int8_t* b = int4_grow(s.b, static_cast<size_t>(k / 4 * kAmxTileBytes));
  int32_t* sums = int4_grow(s.sums, 2 * 16 * 16);
  const int64_t full_tiles = a.m / kAmxTileRows, tail_rows = a.m % kAmxTileRows;
  const int64_t tiles = full_tiles + (tail_rows > 0 ? 1 : 0);
  const int64_t tail_first = full_tiles * kAmxTileRows;
  int8_t* a_tail = tail_rows > 0 ? int4_padded_tile(s.a_tail, a.xq, tail_first, tail_rows, k) : nullptr;
  int32_t* xsum_tail = tail_rows > 0 && w.asymmetric
                           ? int4_padded_tile(s.xsum_tail, a.x_group_sum, tail_first, tail_rows, groups)
                           : nullptr;
  Tiles::configure(int4_amx_config(gs));
  for (int64_t block = block_begin; block < block_end; ++block) {
    const int64_t rows = w.block_rows(block), n0 = block * kInt4BlockRows;
    for (int64_t g = 0; g < groups; ++g) {
      const uint32_t* gp = w.group(block, g);
      int8_t* bg = b + g * gs / 4 * kAmxTileBytes;
      for (int64_t c = 0; c < chunks; ++c) {
        Policy::decode(gp + c * rows, rows, bg + 2 * c * kAmxTileBytes, bg + (2 * c + 1) * kAmxTileBytes);
      }
    }
    for (int64_t t = 0; t < tiles; ++t) {
      const bool tail = t == full_tiles;
      const int8_t* at = tail ? a_tail : a.xq + t * kAmxTileRows * k;  // rows k bytes apart
      const int32_t* xsum = !w.asymmetric ? nullptr : tail ? xsum_tail : a.x_group_sum + t * kAmxTileRows * groups;
      typename Policy::Acc acc;
      Policy::zero(acc);
      auto accumulate = [&](int64_t g) {
        const uint32_t* gp = w.group(block, g);
        const float* scales = reinterpret_cast<const float*>(gp + chunks * rows);
        const uint32_t* offsets = w.asymmetric ? gp + (chunks + 1) * rows : nullptr;
        Policy::add_group(acc, sums + (g & 1) * 256, rows, scales, offsets, xsum == nullptr ? nullptr : xsum + g,
                          groups);
      };
      int4_amx_groups<Tiles, false>(reinterpret_cast<const uint8_t*>(at), k, gs, kt, b, gs / 4 * kAmxTileBytes,
                                    kt / 4 * kAmxTileBytes, groups, dots, reinterpret_cast<uint8_t*>(sums), accumulate);
      const int64_t m0 = t * kAmxTileRows, rows_m = tail ? tail_rows : kAmxTileRows;
      Policy::finish(acc, rows_m, rows, a.x_scale + m0, a.bias == nullptr ? nullptr : a.bias + n0,
                     a.out + m0 * w.n + n0, w.n);
    }
  }
  Tiles::release();
}

// w4a16 with bf16 activations on tdpbf16ps. Per row block the weight is decoded once into the
// tdpbf16ps B layout (pair row p holds, per column n, the bf16 values of q[n, 2p] and q[n, 2p + 1],
// q = u - 8 exact in bf16), then per tile of 16 rows of x and per group g in order the group's
// dots (K = 32 bf16 each) sum x * q into a zeroed fp32 tile, and the policy applies the fp32 kernel's
// group step: part = sum (- z * xsum for asymmetric packs), acc = acc + part * s. The sums follow
// tdpbf16ps' rounding (EmulatedTiles::dot_bf16: an even-k and an odd-k fp32 chain per dot, summed into the
// accumulator, DAZ / FTZ), within
// int4.h's w4a16 bound; the group steps are the fp32 kernel's.
//
// Policy additionally provides:
//   Policy::decode_bf16(words, rows, b): the chunk's words -> its four B pair rows at b (256 bytes)
//   Policy::add_group_f(acc, sums, cols, scales, offsets, xsum, xsum_stride): acc[r][j] = acc + part * s
//     with part = sums[r * 16 + j] (- (offsets[j] - 8) * xsum[r * xsum_stride] when offsets), in fp32
//   Policy::finish_f(acc, rows_m, cols, bias, out, ldo): out[r][j] = acc (+ bias[j])
template <class Tiles, class Policy>
void int4_w4a16_amx_blocks(const Int4FloatArgs& a, int64_t block_begin, int64_t block_end) {
  const Int4Weight& w = a.w;
  const int64_t gs = w.group_size, groups = w.groups(), chunks = gs / 8, k = w.k;
  constexpr int64_t kt = 32;  // bf16 values of k per dot (A: 64 bytes per row; B: 16 pair rows)
  const int64_t dots = gs / kt;
  Int4AmxScratch& s = int4_amx_scratch();
  int8_t* b = int4_grow(s.b, static_cast<size_t>(k / 2 * kAmxTileBytes));
  float* sums = int4_grow(s.fsums, 2 * 16 * 16);
  const int64_t full_tiles = a.m / kAmxTileRows, tail_rows = a.m % kAmxTileRows;
  const int64_t tiles = full_tiles + (tail_rows > 0 ? 1 : 0);
  const int64_t tail_first = full_tiles * kAmxTileRows;
  const uint16_t* x_tail = tail_rows > 0 ? int4_padded_tile(s.x_tail, a.x_bf16, tail_first, tail_rows, k) : nullptr;
  const float* xsum_tail = tail_rows > 0 && w.asymmetric
                               ? int4_padded_tile(s.fxsum_tail, a.x_group_sum, tail_first, tail_rows, groups)
                               : nullptr;
  Tiles::configure(amx_config(kAmxTileRows));
  for (int64_t block = block_begin; block < block_end; ++block) {
    const int64_t rows = w.block_rows(block), n0 = block * kInt4BlockRows;
    for (int64_t g = 0; g < groups; ++g) {
      const uint32_t* gp = w.group(block, g);
      for (int64_t c = 0; c < chunks; ++c) {
        Policy::decode_bf16(gp + c * rows, rows, b + (g * gs + 8 * c) / 2 * kAmxTileBytes);
      }
    }
    for (int64_t t = 0; t < tiles; ++t) {
      const bool tail = t == full_tiles;
      const uint16_t* at = tail ? x_tail : a.x_bf16 + t * kAmxTileRows * k;  // rows k values apart
      const float* xsum = !w.asymmetric ? nullptr : tail ? xsum_tail : a.x_group_sum + t * kAmxTileRows * groups;
      typename Policy::Acc acc;
      Policy::zero(acc);
      auto accumulate = [&](int64_t g) {
        const uint32_t* gp = w.group(block, g);
        const float* scales = reinterpret_cast<const float*>(gp + chunks * rows);
        const uint32_t* offsets = w.asymmetric ? gp + (chunks + 1) * rows : nullptr;
        Policy::add_group_f(acc, sums + (g & 1) * 256, rows, scales, offsets, xsum == nullptr ? nullptr : xsum + g,
                            groups);
      };
      // bf16 x: 2 bytes per value; a dot covers kt = 32 values of k, i.e. kt / 2 B pair rows
      int4_amx_groups<Tiles, true>(reinterpret_cast<const uint8_t*>(at), k * 2, gs * 2, kt * 2, b,
                                   gs / 2 * kAmxTileBytes, kt / 2 * kAmxTileBytes, groups, dots,
                                   reinterpret_cast<uint8_t*>(sums), accumulate);
      const int64_t m0 = t * kAmxTileRows, rows_m = tail ? tail_rows : kAmxTileRows;
      Policy::finish_f(acc, rows_m, rows, a.bias == nullptr ? nullptr : a.bias + n0, a.out + m0 * w.n + n0, w.n);
    }
  }
  Tiles::release();
}

}  // namespace
}  // namespace ck::cpu
