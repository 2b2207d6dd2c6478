// Codebook (k-means weight sharing) linear kernels on CPU (torch-free).
//
// y[m, n] = sum_k x[m, k] * codebook[n / group_rows, idx[n, k]] + bias[n], with idx bit-packed in
// the layout of ck/bitpack.h (b = 1..8 bits) and one codebook of 2^b fp32 entries per group of
// group_rows consecutive output rows. The lookup is fused into the kernel: weights are never
// materialized in memory beyond a small decoded tile.
//
// Exact float semantics (identical on every ISA path and for any thread count): for each (m, n)
//   acc = +0.0f; for k = 0 .. K-1 in order: acc = fmaf(x[m, k], w[n, k], acc);  y = acc + bias[n]
// (one rounding per fused multiply-add, then one rounded add; no bias add when bias is null).
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>

#include "bf16.h"
#include "ck/bitpack.h"
#include "dispatch.h"
#include "int8_gemm.h"

namespace ck::cpu {

constexpr int64_t kCodebookPanelCols = 64;  // 4 blocks of 16 output rows share each x broadcast

struct CodebookLinearArgs {
  const float* x = nullptr;  // [m, k] fp32, row stride ldx
  int64_t m = 0, k = 0, ldx = 0;
  const uint32_t* packed = nullptr;  // ck/bitpack.h layout of idx [n, kw]
  int64_t n = 0, kw = 0;
  int bits = 0;
  const float* codebook = nullptr;  // [groups, 2^bits]
  int64_t group_rows = 0;           // output rows per codebook (n / groups)
  const float* bias = nullptr;      // [n] or null
  float* out = nullptr;             // out[m, col] with row stride ldo, col = n index
  int64_t ldo = 0;
  // Output rows [n_begin, n_end) are computed; n_begin must be a multiple of 16 (a block
  // boundary). conv2d with groups runs one such range per conv group.
  int64_t n_begin = 0, n_end = 0;
};

// Work split: tasks are (panel of 64 output rows, chunk of x rows), panel-major, so a thread's
// consecutive tasks reuse one panel of indices; every output element belongs to exactly one task.
struct CodebookPlan {
  int64_t panels = 0, row_chunks = 0, chunk_rows = 0;
  bool decode_tiles = false;  // large-M path: decode a tile of weights once, reuse it across rows
  int64_t tasks() const { return panels * row_chunks; }

  // The task split, written once for every tier's kernels: task t is row chunk t % row_chunks of
  // panel t / row_chunks, x rows [m_begin, m_end) times output rows [n_first, n_last).
  struct Task {
    int64_t m_begin, m_end, n_first, n_last;
  };
  Task task(const CodebookLinearArgs& a, int64_t t) const {
    const int64_t panel = t / row_chunks, chunk = t % row_chunks;
    const int64_t m_begin = chunk * chunk_rows, n_first = a.n_begin + panel * kCodebookPanelCols;
    return {m_begin, std::min(a.m, m_begin + chunk_rows), n_first, std::min(a.n_end, n_first + kCodebookPanelCols)};
  }
};
CodebookPlan codebook_plan(const CodebookLinearArgs& args, int64_t threads);

// Runs tasks [task_begin, task_end) on the kernel of the active tier.
void codebook_linear_run(const CodebookLinearArgs& args, const CodebookPlan& plan, int64_t task_begin,
                         int64_t task_end);
void codebook_linear_run_portable(const CodebookLinearArgs& args, const CodebookPlan& plan, int64_t task_begin,
                                  int64_t task_end);

// The codebook kernels of one tier (dispatch.h).
struct CodebookKernels {
  void (*linear_run)(const CodebookLinearArgs& args, const CodebookPlan& plan, int64_t task_begin, int64_t task_end);
};
extern const CodebookKernels codebook_kernels_portable, codebook_kernels_avx2, codebook_kernels_avx512vnni;
extern const TierTable<CodebookKernels> codebook_tiers;

// im2col for codebook_conv2d: rows [row_begin, row_end) of cols [batch * ho * wo, c * kh * kw],
// row (b, oy, ox), column (ch, i, j) = x[b, ch, oy * sh - ph + i * dh, ox * sw - pw + j * dw], or 0
// where that falls in the padding. x is contiguous NCHW.
struct Im2colShape {
  int64_t batch, channels, h, w, kh, kw, sh, sw, ph, pw, dh, dw, ho, wo;
};
void codebook_im2col(const float* x, const Im2colShape& s, int64_t row_begin, int64_t row_end, float* cols);

// idx [n, k] (row stride ld, values < 2^bits) -> packed words [n * words_per_row(k, bits)].
void codebook_pack(const uint8_t* idx, int64_t n, int64_t k, int64_t ld, int bits, uint32_t* out);
// Inverse of codebook_pack: packed [n, kw] -> idx [n, k] contiguous.
void codebook_unpack(const uint32_t* packed, int64_t n, int64_t k, int bits, uint8_t* idx);
// w[r, kk] = codebook[r / group_rows][index(r, kk)] for rows [row_begin, row_end) of a packed [n, k]
// matrix of `bits`-bit indices (codebook: [n / group_rows, 2^bits] fp32, row-major): the dense weight
// the codebook kernels stand for, each value a copy of a codebook entry.
void codebook_decode_rows(const uint32_t* packed, int64_t n, int64_t k, int bits, const float* codebook,
                          int64_t group_rows, int64_t row_begin, int64_t row_end, float* w);

// ---- bf16 activations on the tile unit (the amx and amx_emulated tiers) ----
//
// codebook_linear with bf16 x: y[m, n] = bf16(sum_k x[m, k] * c[n, k] + bias[n]) where c is the
// codebook entry of (n, k) rounded to bf16 (nearest even) by the caller, bf16 subnormals in x and c
// read as zero, the sum accumulated in fp32 and rounded once to bf16 (nearest even, NaN -> 0x7FC0).
// On the tile tiers the weight of each 64-column panel is decoded once per task into bf16 B tiles in
// per-thread scratch and multiplied with tdpbf16ps (the AMX int8 driver's blocking and tails); the
// accumulation is then the instruction's (EmulatedTiles::dot_bf16: per 32 k, an even-k and an odd-k fp32 chain
// summed into the accumulator), then acc + bias[n] in fp32. Without a tile tier the glue widens x to fp32
// (subnormals flushed) and runs the fp32 kernel above on the rounded codebook: the same products, a
// plain fmaf chain. Both are within (K + 2) * 2^-24 * sum_k |x c| (+ K * 2^-126 for flushed partial
// sums) of the exact sum before the final rounding to bf16.
struct CodebookBf16Args {
  const uint16_t* x = nullptr;  // [m, k] bf16 bits, row stride ldx (elements)
  int64_t m = 0, k = 0, ldx = 0;
  const uint32_t* packed = nullptr;  // ck/bitpack.h layout of idx [n, kw]
  int64_t n = 0, kw = 0;
  int bits = 0;
  const uint16_t* codebook = nullptr;  // [n / group_rows, 2^bits] bf16 bits (rounded, subnormals flushed)
  int64_t group_rows = 0;
  const float* bias = nullptr;  // [n] or null
  uint16_t* out = nullptr;      // [m, n] bf16 bits, contiguous
};
// Whether bf16 x of m rows runs on the tile kernel now (else the glue takes the fp32 path): a tile tier is
// enabled and m >= codebook_bf16_tile_min_rows(bits, group_rows). The decode into bf16 tiles is a fixed cost per
// call that the fused fp32 kernel, which reads only the indices, does not pay; its fp32 work grows with m.
// Measured on Sapphire Rapids (2 threads, K = N = 1024 and 4096, tiles / fp32 path time): shared codebooks of up
// to 5 bits 1.09-1.26 at M = 8, 0.70-0.83 at M = 12 -> from 12 rows; 6 bits (a per-pair decode; the fp32 kernel
// still looks up in registers) 1.81-1.85 at 8, 1.17 at 12, 0.95-1.00 at 16 -> from 16; 7-8 bits and per-lane
// codebooks, where the fp32 kernel is slow too (8 bits: 1.77 against 2.59 ms at M = 8), from 8.
int64_t codebook_bf16_tile_min_rows(int bits, int64_t group_rows);
bool codebook_bf16_uses_tiles(int64_t m, int bits, int64_t group_rows);
void codebook_bf16_run(const CodebookBf16Args& args, const Int8GemmPlan& plan, int64_t task_begin, int64_t task_end);

struct CodebookBf16Kernels {
  void (*run)(const CodebookBf16Args& args, const Int8GemmPlan& plan, int64_t task_begin, int64_t task_end);
};
// Only the tile tiers have this kernel (amx: the instructions, amx_emulated: their scalar model, also the
// table's portable entry so that the walk always ends; codebook_bf16_uses_tiles() gates its use).
extern const CodebookBf16Kernels codebook_bf16_kernels_amx, codebook_bf16_kernels_amx_emulated;
extern const TierTable<CodebookBf16Kernels> codebook_bf16_tiers;

}  // namespace ck::cpu
