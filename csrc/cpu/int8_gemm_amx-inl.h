// Included by int8_gemm_amx.cpp, sparse24_amx.cpp (amx tier), int8_gemm_amx_emulated.cpp, sparse24_amx_emulated.cpp
// (amx_emulated tier: no target flags), sparse24_int8_amx-inl.h, amx_bf16-inl.h and int8_output_scalar-inl.h. The AMX
// GEMM driver, written
// once against the tile interface of amx_tiles.h and compiled twice: on the tile instructions with an AVX-512 output
// stage and on the scalar tile model with a scalar output stage. Int8 operands (tdpbusd / tdpbssd) or bf16 pairs
// (tdpbf16ps, amx_bf16_tasks_with: the bf16 kernels on decoded weights).
//
// Operands straight from memory, no repacking on the hot path:
//   B (weights): a full 16-row block of the VNNI packed layout (int8_gemm.h) is already the B tile
//     layout of tdpbusd: for each group of four k, 16 columns x 4 bytes = one 64-byte tile row. A K
//     chunk of 64 k is 16 consecutive groups = 1 KB, loaded with stride 64.
//   A (activations): rows of x loaded with stride ldx, 64 k per tile row; uint8 x runs tdpbusd,
//     int8 x tdpbssd, so no sign flip and no correction beyond the zero point.
// Tails become padded copies in per-thread scratch, prepared once per task: the K chunk past
// the last whole 64 k (for A and B), the last row tile of a chunk when it has fewer than 16 rows, and
// the panel's last column block when it has fewer than 16 columns (its packed stride is rows * 4).
// Zero K padding in A makes any B byte beyond k contribute exactly 0 (see scratch_of). An operand of
// fewer than 16 rows in all is read in place instead: its A and C tiles are configured to its rows.
//
// Blocking: C is 2 x 2 tiles (32 rows x 32 columns) in tmm0-3, A in tmm4-5, B in tmm6-7; a task
// (64-column panel, chunk of rows) walks row pairs outside and column pairs inside, each over all of
// K. Accumulators are stored to a 32 x 32 int32 buffer (two, alternating) and go through the fused
// output stage a few rows per K step of the next block, so the vector work overlaps the tile unit.
// Measured on Sapphire Rapids and not kept: K passes of 8 or 16 chunks with the accumulators stored
// between passes (so a column pair's B chunks stay in L1 across row tiles; 0.85-0.95x of one pass),
// and x packed once per chunk into compact 1 KB tiles (0.75-0.85x at K = N = 1024); the kernel is
// bound by tile loads from L2 (4 KB per 4 tdpbusd).
#pragma once

#include <algorithm>
#include <cstring>
#include <vector>

#include "amx_tiles.h"
#include "int8_gemm.h"

namespace ck::cpu {
namespace {

// What one tile dot computes: uint8 x int8 (tdpbusd) or int8 x int8 (tdpbssd) into int32, or bf16
// pairs into fp32 (tdpbf16ps: the bf16 GEMMs on decoded weights, whose K is counted in bytes here, 32
// bf16 k per 64-byte chunk).
enum class AmxDot { kUnsignedA, kSignedA, kBf16 };

template <class Tiles, AmxDot kDot, int C, int A, int B>
inline void amx_dot() {
  if constexpr (kDot == AmxDot::kSignedA) {
    Tiles::template dot_ss<C, A, B>();
  } else if constexpr (kDot == AmxDot::kBf16) {
    Tiles::template dot_bf16<C, A, B>();
  } else {
    Tiles::template dot_us<C, A, B>();
  }
}

// A tile operand: the 64-byte column chunks c < full_chunks at main + c * 64 (row stride
// stride), the one tail chunk (when k % 64 != 0) at tail (row stride tail_stride).
struct TileSource {
  const uint8_t* main = nullptr;
  const uint8_t* tail = nullptr;
  int64_t stride = 0, tail_stride = 0;
};

// One block of RT x CT tiles over all of K, stored to sums (row stride ld_sums int32). between(c)
// runs after the tile instructions of step c are issued: the vector work placed there (the output
// stage of the previous block) overlaps the tile unit instead of waiting behind it.
// B tiles come from `bt` (see PackedBTiles): bt.main(b, c) for the K chunks c < full_chunks of the
// task's column block b, bt.tail(b) for the K tail chunk; this block's columns are blocks b0 and
// b0 + 1 (CT = 2).
// a_offsets: null (A chunk c at byte c * 64 of its rows) or the byte offset of each chunk (the
// direct conv's taps).
template <class Tiles, AmxDot kDot, int RT, int CT, class BTiles, class Between>
void amx_int8_block(const TileSource (&a_src)[2], const int64_t* a_offsets, BTiles& bt, int b0, int64_t full_chunks,
                    bool has_tail, int32_t* sums, int64_t ld_sums, Between&& between) {
  Tiles::template zero<0>();
  if (CT > 1) Tiles::template zero<1>();
  if (RT > 1) Tiles::template zero<2>();
  if (RT > 1 && CT > 1) Tiles::template zero<3>();
  auto step = [&](const uint8_t* a0, const uint8_t* a1, int64_t a_stride, const uint8_t* b0, const uint8_t* b1) {
    Tiles::template load<4>(a0, a_stride);
    Tiles::template load<6>(b0, kAmxTileBytes);
    amx_dot<Tiles, kDot, 0, 4, 6>();
    if (CT > 1) {
      Tiles::template load<7>(b1, kAmxTileBytes);
      amx_dot<Tiles, kDot, 1, 4, 7>();
    }
    if (RT > 1) {
      Tiles::template load<5>(a1, a_stride);
      amx_dot<Tiles, kDot, 2, 5, 6>();
      if (CT > 1) amx_dot<Tiles, kDot, 3, 5, 7>();
    }
  };
  // Both row tiles of a pair share strides (they come from the same source kind).
  const int b1 = CT > 1 ? b0 + 1 : b0;
  for (int64_t c = 0; c < full_chunks; ++c) {
    const uint8_t* t0 = bt.main(b0, c);
    const uint8_t* t1 = CT > 1 ? bt.main(b1, c) : t0;
    const int64_t off = a_offsets != nullptr ? a_offsets[c] : c * kAmxTileBytes;
    step(a_src[0].main + off, a_src[1].main + off, a_src[0].stride, t0, t1);
    between(c);
  }
  if (has_tail) {
    const uint8_t* t0 = bt.tail(b0);
    const uint8_t* t1 = CT > 1 ? bt.tail(b1) : t0;
    step(a_src[0].tail, a_src[1].tail, a_src[0].tail_stride, t0, t1);
    between(full_chunks);
  }
  const int64_t bytes = ld_sums * 4;
  Tiles::template store<0>(sums, bytes);
  if (CT > 1) Tiles::template store<1>(sums + 16, bytes);
  if (RT > 1) Tiles::template store<2>(sums + 16 * ld_sums, bytes);
  if (RT > 1 && CT > 1) Tiles::template store<3>(sums + 16 * ld_sums + 16, bytes);
}

// Rows of the A and C tiles for an operand of m rows: m itself below 16, so that a small operand is
// read in place instead of copied into a padded tile.
inline int amx_tile_rows(int64_t m) { return m < kAmxTileRows ? static_cast<int>(m) : kAmxTileRows; }

// Per-thread scratch; grows to the largest task seen and is reused (no allocation once warm).
struct AmxInt8Scratch {
  std::vector<uint8_t> a_rows;  // the chunk's last row tile when partial: 16 rows x chunks * 64
  std::vector<uint8_t> a_ktail;  // the K tail chunk of the chunk's whole row tiles: rows x 64
  std::vector<uint8_t> b_block;  // the panel's partial column block: chunks x 1 KB
  std::vector<uint8_t> b_ktail;  // the K tail chunk of each whole block of the panel: 4 x 1 KB
};

// Scratch of at least `bytes`. Its contents are whatever earlier tasks left: only the bytes a
// result depends on are written per task. That is A's K padding of valid rows (zero, so that any B
// byte past k contributes exactly 0); B's padding past k multiplies those zeros, and A rows past m
// or B columns past n only reach accumulators the output stage never writes.
inline uint8_t* scratch_of(std::vector<uint8_t>& v, size_t bytes) {
  if (v.size() < bytes) v.resize(bytes);
  return v.data();
}

// The B tiles of a task read from the packed int8 weight: a whole block's chunk c is its 1 KB at
// byte c * 1024 (the VNNI packed layout is the tile layout); the K tail chunk and a partial last
// block (packed stride cols * 4) come from padded copies in per-thread scratch.
struct PackedBTiles {
  const uint8_t* block[4] = {};  // chunk c of block b at block[b] + c * 1024
  const uint8_t* tail_chunk[4] = {};
  const uint8_t* main(int b, int64_t c) const { return block[b] + c * 1024; }
  const uint8_t* tail(int b) const { return tail_chunk[b]; }
};

inline PackedBTiles packed_b_tiles(const Int8GemmArgs& a, AmxInt8Scratch& scratch, int64_t n0, int blocks,
                                   int last_cols) {
  const int64_t k = a.w.k, k_pad = a.w.k_pad, full_chunks = k / 64, tail_k0 = full_chunks * 64;
  const bool has_tail = k % 64 != 0;
  const int64_t chunks = full_chunks + (has_tail ? 1 : 0);
  const uint8_t* w = reinterpret_cast<const uint8_t*>(a.w.data);
  PackedBTiles bt;
  uint8_t* b_ktail = has_tail ? scratch_of(scratch.b_ktail, 4 * 1024) : nullptr;
  for (int b = 0; b < blocks; ++b) {
    const uint8_t* block = w + (n0 + 16 * b) * k_pad;
    if (b == blocks - 1 && last_cols < 16) {
      // Regroup the partial block (packed stride last_cols * 4) into 16-column tile rows.
      uint8_t* dst = scratch_of(scratch.b_block, static_cast<size_t>(chunks) * 1024);
      for (int64_t g = 0; g < k_pad / 4; ++g) std::memcpy(dst + g * 64, block + g * last_cols * 4, last_cols * 4);
      bt.block[b] = dst;
      bt.tail_chunk[b] = dst + full_chunks * 1024;
    } else {
      bt.block[b] = block;
      if (has_tail) {
        std::memcpy(b_ktail + b * 1024, block + full_chunks * 1024, (k_pad - tail_k0) * 16);
        bt.tail_chunk[b] = b_ktail + b * 1024;
      }
    }
  }
  return bt;
}

// How the AMX int8 driver reads A and writes rows beyond a plain GEMM (the direct conv, see
// VirtualConvRows): A chunk c of a row at byte a_offsets[c] of it, and rows written to the output
// rows the grid maps them to (rows it drops are not written).
struct AmxInt8Options {
  const int64_t* a_offsets = nullptr;
  const VirtualConvRows* rows = nullptr;
};

// The per-column state of an output stage that needs none beyond the block's columns (the scalar output
// stages): their first column and count.
struct AmxBlockColumns {
  int64_t n0 = 0;
  int cols = 0;
  static void prepare(const Int8GemmArgs&, int64_t n0, int cols, AmxBlockColumns& c) {
    c.n0 = n0;
    c.cols = cols;
  }
};

// Output: Output::prepare(a, n0, cols, columns) computes the per-column state of a block's columns
// once; Output::write(a, columns, m0, mr, sums, ld_sums) writes rows [m0, m0 + mr) from raw dot
// products (the column terms are the output stage's job).
// b_tiles_for(scratch, n0, blocks, last_cols) returns the B-tile policy of a task's panel (by
// value or reference; PackedBTiles for the packed int8 weight).
template <class Tiles, class Output, AmxDot kDot, class BTilesFor>
void amx_int8_tasks_typed(const Int8GemmArgs& a, const Int8GemmPlan& plan, int64_t task_begin, int64_t task_end,
                          BTilesFor&& b_tiles_for, const AmxInt8Options& options) {
  const int64_t k = a.w.k;
  const int64_t full_chunks = k / 64;
  const bool has_tail = k % 64 != 0;
  const int64_t chunks = full_chunks + (has_tail ? 1 : 0);
  const int64_t tail_k0 = full_chunks * 64;
  const int tile_rows = amx_tile_rows(a.m);
  thread_local AmxInt8Scratch scratch;
  // Two sums buffers: block j's tiles are stored to one while the output stage of block j - 1 is
  // written from the other, a few rows per K step of block j.
  alignas(64) int32_t sums[2][32 * 32];
  struct Pending {
    const int32_t* sums = nullptr;
    int64_t m0 = 0;
    int mr = 0, done = 0, rows_per_step = 0;
    typename Output::Columns columns;
    VirtualConvRows::Cursor cursor;  // the grid position of row m0 + done (options.rows only)
  } pending;
  auto write_rows = [&](int upto) {
    if (pending.sums == nullptr || pending.done >= upto) return;
    const int end = upto < pending.mr ? upto : pending.mr;
    if (options.rows == nullptr) {
      Output::write(a, pending.columns, pending.m0 + pending.done, end - pending.done, pending.sums + pending.done * 32,
                    32);
    } else {
      // Runs of rows that map to consecutive output rows, each written as one block.
      for (int r = pending.done; r < end;) {
        int64_t first = -1;
        const int run = static_cast<int>(options.rows->run(pending.cursor, end - r, &first));
        if (first >= 0) Output::write(a, pending.columns, first, run, pending.sums + r * 32, 32);
        r += run;
      }
    }
    pending.done = end;
  };
  auto between = [&](int64_t c) { write_rows(static_cast<int>((c + 1) * pending.rows_per_step)); };
  int parity = 0;
  const uint8_t* x = static_cast<const uint8_t*>(a.x);

  for (int64_t t = task_begin; t < task_end; ++t) {
    const int64_t panel = plan.panel_of(t), chunk = plan.chunk_of(t);
    const int64_t m_begin = chunk * plan.chunk_rows;
    const int64_t m_end = std::min(a.m, m_begin + plan.chunk_rows);
    if (m_begin >= m_end) continue;
    const int64_t n0 = panel * kInt8PanelCols;
    const int64_t cols = std::min(kInt8PanelCols, a.w.n - n0);
    const int blocks = static_cast<int>((cols + 15) / 16);
    const int last_cols = static_cast<int>(cols - 16 * (blocks - 1));
    const int64_t rows = m_end - m_begin, whole_row_tiles = rows / tile_rows;
    const int row_tail = static_cast<int>(rows % tile_rows);

    auto&& bt = b_tiles_for(scratch, n0, blocks, last_cols);

    // A sources: whole row tiles read x directly (their K tail from a_ktail); the partial one
    // reads a padded copy of all of its K.
    uint8_t* a_ktail = nullptr;
    if (has_tail && whole_row_tiles > 0) {
      a_ktail = scratch_of(scratch.a_ktail, static_cast<size_t>(whole_row_tiles) * 16 * 64);
      for (int64_t r = 0; r < whole_row_tiles * tile_rows; ++r) {
        uint8_t* dst = a_ktail + (r / tile_rows) * 16 * 64 + (r % tile_rows) * 64;
        std::memcpy(dst, x + (m_begin + r) * a.ldx + tail_k0, k - tail_k0);
        std::memset(dst + (k - tail_k0), 0, 64 - (k - tail_k0));
      }
    }
    TileSource a_partial;
    if (row_tail > 0) {
      const int64_t ld = chunks * 64;
      uint8_t* dst = scratch_of(scratch.a_rows, static_cast<size_t>(16 * ld));
      const int64_t r0 = m_begin + whole_row_tiles * tile_rows;
      for (int r = 0; r < row_tail; ++r) {
        std::memcpy(dst + r * ld, x + (r0 + r) * a.ldx, k);
        std::memset(dst + r * ld + k, 0, ld - k);
      }
      a_partial.main = dst;
      a_partial.tail = dst + full_chunks * 64;
      a_partial.stride = a_partial.tail_stride = ld;
    }
    auto a_tile = [&](int64_t i) {
      if (i == whole_row_tiles) return a_partial;
      TileSource s;
      s.main = x + (m_begin + tile_rows * i) * a.ldx;
      s.tail = a_ktail != nullptr ? a_ktail + i * 16 * 64 : nullptr;
      s.stride = a.ldx;
      s.tail_stride = 64;
      return s;
    };

    // Row tiles in pairs of whole tiles (one A stride per pair); the last odd whole tile and the
    // partial one run alone.
    const int64_t row_tiles = whole_row_tiles + (row_tail > 0 ? 1 : 0);
    for (int64_t i = 0; i < row_tiles;) {
      const int rt = i + 1 < whole_row_tiles ? 2 : 1;
      const TileSource as[2] = {a_tile(i), a_tile(rt == 2 ? i + 1 : i)};
      const int64_t m0 = m_begin + tile_rows * i;
      const int mr = static_cast<int>(std::min<int64_t>(16 * rt, m_end - m0));
      for (int b = 0; b < blocks; b += 2) {
        const int ct = b + 1 < blocks ? 2 : 1;
        int32_t* out = sums[parity];
        if (rt == 2 && ct == 2)
          amx_int8_block<Tiles, kDot, 2, 2>(as, options.a_offsets, bt, b, full_chunks, has_tail, out, 32, between);
        else if (rt == 2)
          amx_int8_block<Tiles, kDot, 2, 1>(as, options.a_offsets, bt, b, full_chunks, has_tail, out, 32, between);
        else if (ct == 2)
          amx_int8_block<Tiles, kDot, 1, 2>(as, options.a_offsets, bt, b, full_chunks, has_tail, out, 32, between);
        else
          amx_int8_block<Tiles, kDot, 1, 1>(as, options.a_offsets, bt, b, full_chunks, has_tail, out, 32, between);
        write_rows(32);  // whatever of the previous block the K steps did not cover
        pending.sums = out;
        pending.m0 = m0;
        pending.mr = mr;
        if (options.rows != nullptr) pending.cursor = options.rows->cursor(m0);
        Output::prepare(a, n0 + 16 * b, static_cast<int>(std::min<int64_t>(16 * ct, cols - 16 * b)), pending.columns);
        pending.done = 0;
        pending.rows_per_step = static_cast<int>((mr + chunks - 1) / chunks);
        parity ^= 1;
      }
      i += rt;
    }
  }
  write_rows(32);
}

// Tasks [task_begin, task_end) of plan; the tile configuration is loaded on entry (another library
// may have left its own on this thread) and released on exit.
template <class Tiles, class Output, class BTilesFor>
void amx_int8_tasks_with(const Int8GemmArgs& a, const Int8GemmPlan& plan, int64_t task_begin, int64_t task_end,
                         BTilesFor&& b_tiles_for, const AmxInt8Options& options = {}) {
  Tiles::configure(amx_config(amx_tile_rows(a.m)));
  if (a.x_signed) {
    amx_int8_tasks_typed<Tiles, Output, AmxDot::kSignedA>(a, plan, task_begin, task_end, b_tiles_for, options);
  } else {
    amx_int8_tasks_typed<Tiles, Output, AmxDot::kUnsignedA>(a, plan, task_begin, task_end, b_tiles_for, options);
  }
  Tiles::release();
}

// The same driver on bf16 operands (tdpbf16ps): x holds bf16 rows, with a.ldx and a.w.k counted in
// bytes (two per k, so a 64-byte chunk is 32 k); b_tiles_for yields B tiles of bf16 pairs (per tile row,
// 16 columns x two consecutive k) whose padding past k and past the last column is +0.0 (A's zero K
// padding alone does not cancel it: 0 x Inf is NaN); Output reads the sums as fp32 bit patterns.
template <class Tiles, class Output, class BTilesFor>
void amx_bf16_tasks_with(const Int8GemmArgs& a, const Int8GemmPlan& plan, int64_t task_begin, int64_t task_end,
                         BTilesFor&& b_tiles_for) {
  Tiles::configure(amx_config(amx_tile_rows(a.m)));
  amx_int8_tasks_typed<Tiles, Output, AmxDot::kBf16>(a, plan, task_begin, task_end, b_tiles_for, AmxInt8Options{});
  Tiles::release();
}

// The packed int8 weight's B tiles (PackedBTiles).
template <class Tiles, class Output>
void amx_int8_tasks(const Int8GemmArgs& a, const Int8GemmPlan& plan, int64_t task_begin, int64_t task_end,
                    const AmxInt8Options& options = {}) {
  amx_int8_tasks_with<Tiles, Output>(
      a, plan, task_begin, task_end,
      [&](AmxInt8Scratch& scratch, int64_t n0, int blocks, int last_cols) {
        return packed_b_tiles(a, scratch, n0, blocks, last_cols);
      },
      options);
}

}  // namespace
}  // namespace ck::cpu
