// Included by codebook_amx-inl.h and sparse24_bf16_amx-inl.h. bf16 GEMMs on AMX tiles whose weight is decoded per
// task (a compressed format: codebook indices, 2:4 values and positions) into dense bf16 B tiles in per-thread
// scratch, then multiplied by the AMX driver of int8_gemm_amx-inl.h on bf16 operands (amx_bf16_tasks_with); the
// output stage adds an fp32 bias and rounds to bf16. Internal linkage.
//
// The decoded panel (up to 4 blocks of 16 output columns, all of K): block b, chunk c (32 k) is the 1 KB at
// (b * chunks + c) * 1024, whose tile row r holds for column i the pair (k = 32c + 2r, 32c + 2r + 1) at byte
// 64r + 4i (low half: the even k), +0.0 past k and past the last column (amx_bf16_tasks_with needs the zeros).
// What the tile unit then computes per output, exactly: acc = +0, then per 32-k chunk in order the sum of an even-k
// and an odd-k fp32 chain added to acc (EmulatedTiles::dot_bf16; bf16 subnormals read as zero, subnormal results
// flushed); out = bf16(acc + bias[n]).
#pragma once

#include <cstdint>
#include <cstring>
#include <vector>

#include "amx_tiles.h"
#include "bf16.h"
#include "int8_gemm.h"
#include "int8_gemm_amx-inl.h"

namespace ck::cpu {
namespace {

constexpr int64_t kAmxBf16ChunkK = 32;  // bf16 k per 64-byte tile row

// The B tiles of a decoded panel, in the driver's B-tile interface (main / tail).
struct DecodedBTiles {
  const uint8_t* tiles = nullptr;
  int64_t chunks = 0, full_chunks = 0;
  const uint8_t* main(int b, int64_t c) const { return tiles + (b * chunks + c) * 1024; }
  const uint8_t* tail(int b) const { return main(b, full_chunks); }
};

// Byte offset of k (within its block's tiles) in the decoded layout.
inline int64_t amx_bf16_offset(int64_t kk) {
  return (kk / kAmxBf16ChunkK) * 1024 + ((kk % kAmxBf16ChunkK) / 2) * 64 + (kk % 2) * 2;
}

// One output row of the output stage, element by element: out[j] = bf16(acc[j] + bias[j]).
struct ScalarBf16Row {
  static void write(uint16_t* out, const int32_t* sums, const float* bias, int cols) {
    for (int j = 0; j < cols; ++j) {
      float acc;
      std::memcpy(&acc, &sums[j], 4);
      if (bias != nullptr) acc = acc + bias[j];
      out[j] = float_to_bf16(acc);
    }
  }
};

// The driver's output stage for bf16 out from fp32 sums (their bits), one Row at a time.
template <class Row>
struct Bf16Output {
  using Columns = AmxBlockColumns;
  static void prepare(const Int8GemmArgs& a, int64_t n0, int cols, Columns& c) { Columns::prepare(a, n0, cols, c); }
  static void write(const Int8GemmArgs& a, const Columns& c, int64_t m0, int mr, const int32_t* sums, int64_t ld) {
    const float* bias = a.bias_f != nullptr ? a.bias_f + c.n0 : nullptr;
    uint16_t* out = static_cast<uint16_t*>(a.out) + m0 * a.out_stride() + c.n0;
    for (int r = 0; r < mr; ++r) Row::write(out + r * a.out_stride(), sums + r * ld, bias, c.cols);
  }
};

// The operands of a decoded bf16 GEMM: out [m, n] = bf16(x [m, k] (bf16, row stride ldx) @ W.T + bias).
struct AmxBf16Operands {
  const uint16_t* x = nullptr;
  int64_t m = 0, k = 0, ldx = 0, n = 0;
  const float* bias = nullptr;  // [n] or null
  uint16_t* out = nullptr;      // [m, n] contiguous
};

// Tasks [task_begin, task_end) of plan (amx_bf16_plan); decode(n0, cols, chunks, dst) writes columns
// [n0, n0 + cols) of W (cols <= 16) for all chunks to dst (chunks KB) in the decoded layout, zeros included.
template <class Tiles, class Row, class Decode>
void amx_bf16_decoded_tasks(const AmxBf16Operands& o, const Int8GemmPlan& plan, int64_t task_begin, int64_t task_end,
                            Decode&& decode) {
  Int8GemmArgs g;  // the driver's view: bf16 bytes (two per k), fp32 bias, bf16 out
  g.x = o.x;
  g.m = o.m;
  g.ldx = 2 * o.ldx;
  g.w.n = o.n;
  g.w.k = 2 * o.k;
  g.bias_f = o.bias;
  g.out = o.out;
  g.ldo = o.n;
  const int64_t chunks = (o.k + kAmxBf16ChunkK - 1) / kAmxBf16ChunkK, full_chunks = o.k / kAmxBf16ChunkK;
  thread_local std::vector<uint8_t> panel;
  amx_bf16_tasks_with<Tiles, Bf16Output<Row>>(
      g, plan, task_begin, task_end, [&](AmxInt8Scratch&, int64_t n0, int blocks, int last_cols) {
        const size_t bytes = static_cast<size_t>(blocks * chunks) * 1024;
        if (panel.size() < bytes) panel.resize(bytes);
        for (int b = 0; b < blocks; ++b) {
          decode(n0 + 16 * b, b == blocks - 1 ? last_cols : 16, chunks, panel.data() + b * chunks * 1024);
        }
        return DecodedBTiles{panel.data(), chunks, full_chunks};
      });
}

// The same for a family's argument struct (x, m, k, ldx, n, bias, out as in AmxBf16Operands) and a decoder policy
// whose Decode::block(a, n0, cols, chunks, dst) writes the decoded layout.
template <class Tiles, class Row, class Decode, class Args>
void amx_bf16_family_tasks(const Args& a, const Int8GemmPlan& plan, int64_t task_begin, int64_t task_end) {
  AmxBf16Operands o;
  o.x = a.x;
  o.m = a.m;
  o.k = a.k;
  o.ldx = a.ldx;
  o.n = a.n;
  o.bias = a.bias;
  o.out = a.out;
  amx_bf16_decoded_tasks<Tiles, Row>(
      o, plan, task_begin, task_end,
      [&](int64_t n0, int cols, int64_t chunks, uint8_t* dst) { Decode::block(a, n0, cols, chunks, dst); });
}

}  // namespace
}  // namespace ck::cpu
