// Included by sparse24_amx.cpp (amx tier) and sparse24_amx_emulated.cpp (amx_emulated tier: no target flags) only.
// The AMX int8 2:4 kernel, written once over the tile interface and compiled twice like the AMX
// int8 GEMM (sparse24_amx.cpp: tile instructions, AVX-512 expansion and output stage;
// sparse24_amx_emulated.cpp: the scalar models). Include only from those two, after
// int8_gemm_amx-inl.h.
//
// The plan's tasks (64-column panel, chunk of rows) run on the AMX int8 GEMM's driver with B tiles
// expanded from the 2:4 blocks (Sparse24BTiles). The weight read from memory stays the 2:4
// packed stream (62.5% of dense int8); the expansion costs a few vector ops per 128 dense bytes and
// is shared by every row of the chunk.
#pragma once

#include <vector>

#include "int8_gemm_amx-inl.h"
#include "sparse24.h"

namespace ck::cpu {
namespace {

// The B tiles of a task's panel, from the 2:4 stream. Chunks of at most 32 rows (small M): each K
// chunk of a block is expanded into a 1 KB tile in L1 just before its tile loads, one chunk ahead
// (the expansion of chunk c + 1 is vector work that overlaps the tile unit's chunk c; its stores
// have left the store buffer when the tile load reads them), once per block and chunk. Larger
// chunks, where many row tiles share each B tile: the panel is expanded once into L2 (16 columns x
// K rounded up to 64 per block) and read like a packed weight; consecutive tasks of one panel reuse
// it.
template <class Expand>
struct Sparse24BTiles {
  bool in_l1 = false;
  const int8_t* block[4] = {};
  int64_t pairs = 0, chunks = 0, block_bytes = 0;
  uint8_t (*slots)[2][1024] = nullptr;  // in_l1: per block, chunk c in slot c % 2
  uint8_t* dense = nullptr;             // else: block b's chunk c at dense + b * block_bytes + c * 1024

  void expand(int b, int64_t c) {
    const int64_t h0 = 8 * c, count = pairs - h0 < 8 ? pairs - h0 : 8;
    Expand::pairs(block[b] + h0 * 80, count, 16, slots[b][c & 1]);
  }
  const uint8_t* main(int b, int64_t c) {
    if (!in_l1) return dense + b * block_bytes + c * 1024;
    if (c == 0) expand(b, 0);
    if (c + 1 < chunks) expand(b, c + 1);
    return slots[b][c & 1];
  }
  const uint8_t* tail(int b) { return main(b, chunks - 1); }
};

// Expand::pairs(first_pair, count, groups, tiles): sparse24_int8_block_to_tiles on `count` pairs.
// The plan's tasks run on the AMX int8 driver with the 2:4 B tiles; the output stage is the dense
// one on the 2:4 weight's row sums.
template <class Tiles, class Output, class Expand>
void sparse24_int8_amx_tasks(const Sparse24Int8Args& a, const Sparse24Int8Plan& plan, int64_t task_begin,
                             int64_t task_end) {
  const int64_t k = a.w.k, pairs = a.w.pairs, chunks = (k + 63) / 64;
  thread_local std::vector<uint8_t> dense;
  alignas(64) static thread_local uint8_t slots[4][2][1024];
  Sparse24BTiles<Expand> bt;
  bt.in_l1 = plan.chunk_rows <= 2 * kAmxTileRows;
  bt.pairs = pairs;
  bt.chunks = chunks;
  bt.block_bytes = chunks * 1024;
  bt.slots = slots;
  int64_t expanded_n0 = -1;  // the panel now in `dense`
  auto b_tiles_for = [&](AmxInt8Scratch&, int64_t n0, int blocks, int) -> Sparse24BTiles<Expand>& {
    const int8_t* first_block = a.w.data + (n0 / 16) * pairs * 80;
    for (int b = 0; b < blocks; ++b) bt.block[b] = first_block + b * pairs * 80;
    if (!bt.in_l1 && n0 != expanded_n0) {
      if (dense.size() < static_cast<size_t>(blocks * bt.block_bytes)) dense.resize(blocks * bt.block_bytes);
      for (int b = 0; b < blocks; ++b)
        Expand::pairs(bt.block[b], pairs, chunks * 16, dense.data() + b * bt.block_bytes);
      bt.dense = dense.data();
      expanded_n0 = n0;
    }
    return bt;
  };
  Int8GemmArgs g;
  g.x = a.x;
  g.x_signed = a.x_signed;
  g.m = a.m;
  g.ldx = a.ldx;
  g.x_zero_point = a.x_zero_point;
  g.w.data = nullptr;  // the B tiles come from bt
  g.w.row_sum = a.w.row_sum;
  g.w.n = a.w.n;
  g.w.k = k;
  g.w.k_pad = 0;
  g.bias_i32 = a.bias_i32;
  g.kind = EpilogueKind::kRequantize;
  g.requant = a.requant;
  g.out = a.out;
  Int8GemmPlan gemm;
  gemm.panels = plan.panels;
  gemm.row_chunks = plan.row_chunks;
  gemm.chunk_rows = plan.chunk_rows;
  gemm.amx = true;
  gemm.chunk_major = plan.chunk_major;
  amx_int8_tasks_with<Tiles, Output>(g, gemm, task_begin, task_end, b_tiles_for);
}

}  // namespace
}  // namespace ck::cpu
