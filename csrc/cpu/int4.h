// Group-wise int4 weight kernels on CPU (torch-free): int4_linear with int8 dynamic activations
// (w4a8) and with fp32 / bf16 activations (w4a16).
//
// Weights: w[n, k] = s[n, g] * (q[n, k] - z[n, g]) with q, z in [-8, 7], g = k / group_size, one
// fp32 scale s (and for asymmetric packs one zero point z) per (output row, group of group_size
// consecutive k). Symmetric packs have z = 0.
//
// Packed payload (after the ck/packed_header.h header; int4_pack writes it, the kernels read it):
// rows in blocks of 16 (the last block holds the R = N mod 16 remaining rows, R = 16 otherwise);
// block b starts at word 16 * b * W, W = int4_words_per_row(K, group_size, asymmetric). Inside a
// block of R rows, group after group, each group holds (all words 32-bit little-endian):
//   group_size / 8 chunks of R words: word r of chunk c covers k = 8c .. 8c + 7 of the group for
//     row r of the block; its byte j (j = 0..3) is u[k0 + j] | u[k0 + 4 + j] << 4 (k0 = 8c),
//     u = q + 8 in [0, 15] (the low nibbles are k0..k0+3, the high nibbles k0+4..k0+7);
//   R fp32 scales s[row, g];
//   asymmetric packs only: R int32 offsets o[row, g] = z[row, g] + 8 (symmetric packs: o = 8).
// One 64-byte load gives, lane r = row r, eight nibbles of one row: `vpdpbusd` takes the low and
// the high nibbles as four unsigned bytes per lane, `vpermps` / `vpermw` index a 16-entry table with
// them after a shift.
//
// w4a8 semantics (int4_w4a8_run; bit-identical on every tier and any thread count): x[m, :] is
// quantized by quantize_rows (q_x int8 in [-127, 127], scale s_x[m]); per (m, n) and group g in order
//   d_g = sum_{k in g} u[n, k] * q_x[m, k] - o[n, g] * xsum[m, g]      (exact int32;
//         xsum[m, g] = sum_{k in g} q_x[m, k], so d_g = sum_{k in g} (q - z)[n, k] * q_x[m, k])
//   acc = +0.0f; acc = acc + float(d_g) * s[n, g]   (product rounded to fp32, then the sum)
//   y[m, n] = acc * s_x[m], then + bias[n] when there is a bias (each step rounded to fp32).
// A row with a non-finite x has s_x = NaN and q_x = 0: its outputs are NaN.
//
// w4a16 semantics (int4_f32_run; the glue runs bf16 x widened exactly to fp32 and rounds the output
// to bf16, nearest even): per group the fp32 sum of x[m, k] * (q - 8)[n, k] (the order of the sum
// and whether products are fused depend on the tier),
// asymmetric packs then subtract z[n, g] * xsum[m, g] (xsum the fp32 sum of the group's x),
// acc = acc + sum_g * s[n, g] in group order, y = acc + bias[n] in fp32. Against the exact value the
// error is at most about
// (group_size + K / group_size + 2) * 2^-24 * sum_k |x[m, k]| * |w[n, k]|.
#pragma once

#include <cstdint>

#include "dispatch.h"

namespace ck::cpu {

constexpr int64_t kInt4BlockRows = 16;

// int32 words per output row of the payload: (K / group_size) * (group_size / 8 + 1 + asymmetric).
inline int64_t int4_words_per_row(int64_t k, int64_t group_size, bool asymmetric) {
  return k / group_size * (group_size / 8 + 1 + (asymmetric ? 1 : 0));
}

// A packed int4 weight as the kernels read it.
struct Int4Weight {
  const uint32_t* payload = nullptr;
  int64_t n = 0, k = 0, group_size = 0;
  bool asymmetric = false;
  int64_t groups() const { return k / group_size; }
  int64_t words_per_row() const { return int4_words_per_row(k, group_size, asymmetric); }
  int64_t blocks() const { return (n + kInt4BlockRows - 1) / kInt4BlockRows; }
  int64_t block_rows(int64_t block) const {
    const int64_t left = n - block * kInt4BlockRows;
    return left < kInt4BlockRows ? left : kInt4BlockRows;
  }
  // Words of one group of a block of `rows` rows.
  int64_t group_words(int64_t rows) const { return rows * (group_size / 8 + 1 + (asymmetric ? 1 : 0)); }
  // Word offset of group g of a block in the payload, and its words.
  int64_t group_offset(int64_t block, int64_t g) const {
    return block * kInt4BlockRows * words_per_row() + g * group_words(block_rows(block));
  }
  const uint32_t* group(int64_t block, int64_t g) const { return payload + group_offset(block, g); }
};

// q [n, k] int8 in [-8, 7], scales [n, k / group_size], zero points [n, k / group_size] in [-8, 7]
// (null: symmetric) -> payload (n * int4_words_per_row words).
void int4_pack(const int8_t* q, const float* scales, const int8_t* zero_points, int64_t n, int64_t k,
               int64_t group_size, uint32_t* payload);
// The inverse: q [n, k], scales and (asymmetric packs) zero points [n, k / group_size].
void int4_unpack(const Int4Weight& w, int8_t* q, float* scales, int8_t* zero_points);

struct Int4W4a8Args {
  Int4Weight w;
  const int8_t* xq = nullptr;         // [m, k] quantize_rows output
  const float* x_scale = nullptr;     // [m]
  const int32_t* x_group_sum = nullptr;  // [m, groups]: sum of xq over each group
  int64_t m = 0;
  const float* bias = nullptr;  // [n] or null
  float* out = nullptr;         // [m, n]
};

struct Int4FloatArgs {
  Int4Weight w;
  const float* x = nullptr;  // [m, k]
  // The bf16 bits x was widened from (activation "bf16"), or null: with it, M >= kInt4AmxMinRows
  // runs on AMX-BF16 tiles (int4_amx-inl.h) where the CPU has them.
  const uint16_t* x_bf16 = nullptr;
  const float* x_group_sum = nullptr;  // [m, groups] fp32 group sums of x (asymmetric packs), else null
  int64_t m = 0;
  const float* bias = nullptr;  // [n] or null
  float* out = nullptr;         // [m, n]
};

// xsum[m, g] = sum of xq[m, k] over group g (exact int32) for rows [row_begin, row_end).
void int4_group_sums(const int8_t* xq, int64_t k, int64_t group_size, int64_t row_begin, int64_t row_end,
                     int32_t* sums);
// fp32 group sums of x, in k order, for rows [row_begin, row_end).
void int4_group_sums_float(const float* x, int64_t k, int64_t group_size, int64_t row_begin, int64_t row_end,
                           float* sums);

// Each runs the row blocks [block_begin, block_end) of the weight for every row of x.
struct Int4W4a8Kernels {
  void (*run)(const Int4W4a8Args& a, int64_t block_begin, int64_t block_end);
};
struct Int4FloatKernels {
  void (*run)(const Int4FloatArgs& a, int64_t block_begin, int64_t block_end);
};

void int4_w4a8_run(const Int4W4a8Args& a, int64_t block_begin, int64_t block_end);
void int4_f32_run(const Int4FloatArgs& a, int64_t block_begin, int64_t block_end);

// The AMX tiers (int4_amx-inl.h) run x in tiles of 16 rows: they serve M >= kInt4AmxMinRows only (and
// w4a16 only for bf16 x), smaller M runs the best vector tier (int4_w4a8_run, int4_f32_run).
constexpr int64_t kInt4AmxMinRows = 16;
extern const Int4W4a8Kernels int4_w4a8_kernels_portable, int4_w4a8_kernels_avx2, int4_w4a8_kernels_avx512vnni,
    int4_w4a8_kernels_amx, int4_w4a8_kernels_amx_emulated;
extern const TierTable<Int4W4a8Kernels> int4_w4a8_tiers;
extern const Int4FloatKernels int4_f32_kernels_portable, int4_f32_kernels_avx512vnni, int4_f32_kernels_amx,
    int4_f32_kernels_amx_emulated;
extern const TierTable<Int4FloatKernels> int4_f32_tiers;

}  // namespace ck::cpu
