// The AMX int8 2:4 kernel, written once over the tile interface and compiled twice like the AMX
// int8 GEMM (sparse24_amx.cpp: tile instructions, AVX-512 expansion and output stage;
// sparse24_amx_emulated.cpp: the scalar models). Include only from those two, after
// int8_gemm_amx.h.
//
// A task (64-column panel, chunk of rows) expands its panel's 2:4 blocks into dense int8 tiles in a
// per-thread buffer (16 columns x K per block, K rounded up to 64: 4 x 16 x K bytes, in L2), then
// runs the AMX int8 GEMM's task body on that buffer. The weight read from memory stays the 2:4
// packed stream (62.5% of dense int8); the expansion costs a few vector ops per 128 dense bytes and
// is shared by every row of the chunk.
#pragma once

#include <vector>

#include "int8_gemm_amx.h"
#include "sparse24.h"

namespace ck::cpu {
namespace {

// The B tiles of a task with one pair of row tiles (rows <= 32, small M): each K chunk of a block
// is expanded from the 2:4 stream into a 1 KB tile in L1 just before its tile loads, one chunk
// ahead (the expansion of chunk c + 1 is vector work that overlaps the tile unit's chunk c; its
// stores have left the store buffer when the tile load reads them). Each chunk is expanded once.
template <class Expand>
struct ExpandingBTiles {
  const int8_t* block[4] = {};
  int64_t pairs = 0, chunks = 0;
  uint8_t (*slots)[2][1024] = nullptr;  // per block: chunk c in slot c % 2

  void expand(int b, int64_t c) {
    const int64_t h0 = 8 * c, count = pairs - h0 < 8 ? pairs - h0 : 8;
    Expand::pairs(block[b] + h0 * 80, count, 16, slots[b][c & 1]);
  }
  const uint8_t* main(int b, int64_t c) {
    if (c == 0) expand(b, 0);
    if (c + 1 < chunks) expand(b, c + 1);
    return slots[b][c & 1];
  }
  const uint8_t* tail(int b) { return main(b, chunks - 1); }
};

// Expand::pairs(first_pair, count, groups, tiles): sparse24_int8_block_to_tiles on `count` pairs.
template <class Tiles, class Output, class Expand>
void sparse24_int8_amx_tasks(const Sparse24Int8Args& a, const Sparse24Int8Plan& plan, int64_t task_begin,
                             int64_t task_end) {
  const int64_t k = a.w.k, pairs = a.w.pairs, chunks = (k + 63) / 64, groups = chunks * 16;
  const int64_t block_bytes = groups * 64;
  const int64_t out_elem = a.requant.out_type == OutType::kInt32 ? 4 : 1;
  thread_local std::vector<uint8_t> dense;
  alignas(64) static thread_local uint8_t slots[4][2][1024];
  for (int64_t t = task_begin; t < task_end; ++t) {
    int64_t m_begin = 0, m_end = 0, n_begin = 0, n_end = 0;
    plan.task_bounds(a.m, a.w.n, t, &m_begin, &m_end, &n_begin, &n_end);
    if (m_begin >= m_end) continue;
    const int64_t blocks = (n_end - n_begin + 15) / 16;
    const int8_t* first_block = a.w.data + (n_begin / 16) * pairs * 80;
    Int8GemmArgs g;
    g.x = static_cast<const uint8_t*>(a.x) + m_begin * a.ldx;
    g.x_signed = a.x_signed;
    g.m = m_end - m_begin;
    g.ldx = a.ldx;
    g.x_zero_point = a.x_zero_point;
    g.w.data = nullptr;
    g.w.row_sum = a.w.row_sum + n_begin;
    g.w.n = n_end - n_begin;
    g.w.k = k;
    g.w.k_pad = groups * 4;
    g.w.padded_blocks = true;
    g.bias_i32 = a.bias_i32 != nullptr ? a.bias_i32 + n_begin : nullptr;
    g.kind = EpilogueKind::kRequantize;
    g.requant = a.requant;
    if (a.requant.per_channel) {
      g.requant.m0 += n_begin;
      g.requant.shift += n_begin;
    }
    g.out = static_cast<uint8_t*>(a.out) + (m_begin * a.w.n + n_begin) * out_elem;
    g.ldo = a.w.n;
    Int8GemmPlan one;
    one.panels = 1;
    one.row_chunks = 1;
    one.chunk_rows = g.m;
    one.amx = true;
    if (g.m <= 2 * kAmxTileRows) {
      ExpandingBTiles<Expand> bt;
      for (int64_t b = 0; b < blocks; ++b) bt.block[b] = first_block + b * pairs * 80;
      bt.pairs = pairs;
      bt.chunks = chunks;
      bt.slots = slots;
      amx_int8_tasks_with<Tiles, Output>(g, one, 0, 1, [&](AmxInt8Scratch&, int64_t, int, int) -> ExpandingBTiles<Expand>& {
        return bt;
      });
    } else {
      // Many row tiles share each B tile: expand the panel once into L2 and read it like a packed
      // weight.
      if (dense.size() < static_cast<size_t>(blocks * block_bytes)) dense.resize(blocks * block_bytes);
      for (int64_t b = 0; b < blocks; ++b) {
        Expand::pairs(first_block + b * pairs * 80, pairs, groups, dense.data() + b * block_bytes);
      }
      g.w.data = reinterpret_cast<const int8_t*>(dense.data());
      amx_int8_tasks<Tiles, Output>(g, one, 0, 1);
    }
  }
}

}  // namespace
}  // namespace ck::cpu
