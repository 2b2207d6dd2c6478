// Included by codebook_amx.cpp (amx tier) and codebook_amx_emulated.cpp (amx_emulated tier: no target flags). The
// bf16 codebook_linear on AMX tiles (codebook.h states its semantics): a template over the tile policy
// (amx_tiles.h), the output stage and the panel decoder; everything here has internal linkage.
//
// Per task the decoder writes the task's panel (up to 4 blocks of 16 output columns, all of K) as bf16 B tiles
// into per-thread scratch: block b, chunk c (32 k) is the 1 KB at (b * chunks + c) * 1024, whose tile row r holds
// for column i the pair (k = 32c + 2r, 32c + 2r + 1) at byte 64r + 4i (low half: the even k), +0.0 past k and
// past the last column. Then the AMX int8 GEMM driver runs on bf16 operands (amx_bf16_tasks_with): x rows are
// the A tiles in place, tdpbf16ps accumulates in fp32, and the output stage adds the bias and rounds to bf16.
#pragma once

#include <cstdint>
#include <cstring>
#include <vector>

#include "amx_tiles.h"
#include "codebook.h"
#include "int8_gemm_amx-inl.h"

namespace ck::cpu {
namespace {

constexpr int64_t kCodebookBf16ChunkK = 32;  // bf16 k per 64-byte tile row

// The B tiles of a decoded panel, in the driver's B-tile interface (main / tail).
struct DecodedBTiles {
  const uint8_t* tiles = nullptr;
  int64_t chunks = 0, full_chunks = 0;
  const uint8_t* main(int b, int64_t c) const { return tiles + (b * chunks + c) * 1024; }
  const uint8_t* tail(int b) const { return main(b, full_chunks); }
};

// Byte offset of k (within its block's tiles) in the decoded layout.
inline int64_t codebook_bf16_offset(int64_t kk) {
  return (kk / kCodebookBf16ChunkK) * 1024 + ((kk % kCodebookBf16ChunkK) / 2) * 64 + (kk % 2) * 2;
}

// One element at a time: columns [n0, n0 + cols) of the weight, all chunks, into dst (chunks KB).
struct ScalarCodebookDecode {
  static void block(const CodebookBf16Args& a, int64_t n0, int cols, int64_t chunks, uint8_t* dst) {
    std::memset(dst, 0, static_cast<size_t>(chunks) * 1024);
    const int64_t entries = int64_t{1} << a.bits;
    for (int i = 0; i < cols; ++i) {
      const int64_t n = n0 + i;
      const uint16_t* table = a.codebook + (n / a.group_rows) * entries;
      for (int64_t kk = 0; kk < a.k; ++kk) {
        const uint16_t v = table[bitpack::get_index(a.packed, a.n, a.kw, a.bits, n, kk)];
        std::memcpy(dst + codebook_bf16_offset(kk) + 4 * i, &v, 2);
      }
    }
  }
};

// The output stage one element at a time: out = bf16(acc + bias[n]) (acc: the fp32 bits of the sums).
struct ScalarBf16Output {
  struct Columns {
    int64_t n0 = 0;
    int cols = 0;
  };
  static void prepare(const Int8GemmArgs&, int64_t n0, int cols, Columns& c) {
    c.n0 = n0;
    c.cols = cols;
  }
  static void write(const Int8GemmArgs& a, const Columns& c, int64_t m0, int mr, const int32_t* sums, int64_t ld) {
    const float* bias = a.bias_f;
    uint16_t* out = static_cast<uint16_t*>(a.out);
    for (int r = 0; r < mr; ++r) {
      for (int j = 0; j < c.cols; ++j) {
        float acc;
        std::memcpy(&acc, &sums[r * ld + j], 4);
        if (bias != nullptr) acc = acc + bias[c.n0 + j];
        out[(m0 + r) * a.out_stride() + c.n0 + j] = float_to_bf16(acc);
      }
    }
  }
};

inline std::vector<uint8_t>& codebook_bf16_scratch() {
  thread_local std::vector<uint8_t> panel;
  return panel;
}

template <class Tiles, class Output, class Decode>
void codebook_bf16_tasks(const CodebookBf16Args& a, const Int8GemmPlan& plan, int64_t task_begin, int64_t task_end) {
  Int8GemmArgs g;  // the driver's view: bf16 bytes (two per k), fp32 bias, bf16 out
  g.x = a.x;
  g.m = a.m;
  g.ldx = 2 * a.ldx;
  g.w.n = a.n;
  g.w.k = 2 * a.k;
  g.bias_f = a.bias;
  g.out = a.out;
  g.ldo = a.n;
  const int64_t chunks = (a.k + kCodebookBf16ChunkK - 1) / kCodebookBf16ChunkK;
  const int64_t full_chunks = a.k / kCodebookBf16ChunkK;
  amx_bf16_tasks_with<Tiles, Output>(
      g, plan, task_begin, task_end, [&](AmxInt8Scratch&, int64_t n0, int blocks, int last_cols) {
        std::vector<uint8_t>& v = codebook_bf16_scratch();
        const size_t bytes = static_cast<size_t>(blocks * chunks) * 1024;
        if (v.size() < bytes) v.resize(bytes);
        for (int b = 0; b < blocks; ++b) {
          Decode::block(a, n0 + 16 * b, b == blocks - 1 ? last_cols : 16, chunks, v.data() + b * chunks * 1024);
        }
        return DecodedBTiles{v.data(), chunks, full_chunks};
      });
}

}  // namespace
}  // namespace ck::cpu
