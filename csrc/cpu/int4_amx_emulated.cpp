// The w4a8 int4 AMX kernel on the scalar tile model with a scalar accumulation policy: runs on any
// CPU, so the tests check the tile blocking, the decode and the tails bit for bit everywhere.
#include <cstring>

#include "amx_tiles.h"
#include "int4.h"
#include "int4_amx-inl.h"

namespace ck::cpu {
namespace {

struct Int4ScalarPolicy {
  struct Acc {
    float v[kAmxTileRows][16];
  };
  static void zero(Acc& acc) {
    for (auto& row : acc.v)
      for (float& x : row) x = 0.0f;
  }
  static void decode(const uint32_t* words, int64_t rows, int8_t* lo, int8_t* hi) {
    for (int64_t r = 0; r < 16; ++r) {
      const uint32_t word = r < rows ? words[r] : 0u;
      for (int j = 0; j < 4; ++j) {
        lo[4 * r + j] = static_cast<int8_t>(static_cast<int32_t>((word >> (8 * j)) & 15u) - 8);
        hi[4 * r + j] = static_cast<int8_t>(static_cast<int32_t>((word >> (8 * j + 4)) & 15u) - 8);
      }
    }
  }
  static void add_group(Acc& acc, const int32_t* sums, int64_t cols, const float* scales, const uint32_t* offsets,
                        const int32_t* xsum, int64_t xsum_stride) {
    for (int r = 0; r < kAmxTileRows; ++r) {
      for (int64_t j = 0; j < cols; ++j) {
        int32_t d = sums[16 * r + j];
        if (offsets != nullptr) d -= (static_cast<int32_t>(offsets[j]) - 8) * xsum[r * xsum_stride];
        acc.v[r][j] = acc.v[r][j] + static_cast<float>(d) * scales[j];
      }
    }
  }
  static void decode_bf16(const uint32_t* words, int64_t rows, int8_t* b) {
    for (int64_t r = 0; r < 16; ++r) {
      const uint32_t word = r < rows ? words[r] : 0u;
      for (int j = 0; j < 8; ++j) {  // k = 8c + j: pair row j / 2, half j % 2 of column r's dword
        const int shift = j < 4 ? 8 * j : 8 * (j - 4) + 4;
        const float q = static_cast<float>(static_cast<int32_t>((word >> shift) & 15u) - 8);
        uint32_t bits;
        std::memcpy(&bits, &q, 4);
        const uint16_t bf16 = static_cast<uint16_t>(bits >> 16);  // exact: q is a small integer
        std::memcpy(b + (j / 2) * kAmxTileBytes + 4 * r + 2 * (j % 2), &bf16, 2);
      }
    }
  }
  static void add_group_f(Acc& acc, const float* sums, int64_t cols, const float* scales, const uint32_t* offsets,
                          const float* xsum, int64_t xsum_stride) {
    for (int r = 0; r < kAmxTileRows; ++r) {
      for (int64_t j = 0; j < cols; ++j) {
        float part = sums[16 * r + j];
        if (offsets != nullptr) {
          part = part - static_cast<float>(static_cast<int32_t>(offsets[j]) - 8) * xsum[r * xsum_stride];
        }
        acc.v[r][j] = acc.v[r][j] + part * scales[j];
      }
    }
  }
  static void finish_f(const Acc& acc, int64_t rows_m, int64_t cols, const float* bias, float* out, int64_t ldo) {
    for (int64_t r = 0; r < rows_m; ++r) {
      for (int64_t j = 0; j < cols; ++j) out[r * ldo + j] = bias != nullptr ? acc.v[r][j] + bias[j] : acc.v[r][j];
    }
  }
  static void finish(const Acc& acc, int64_t rows_m, int64_t cols, const float* x_scale, const float* bias, float* out,
                     int64_t ldo) {
    for (int64_t r = 0; r < rows_m; ++r) {
      for (int64_t j = 0; j < cols; ++j) {
        float y = acc.v[r][j] * x_scale[r];
        if (bias != nullptr) y = y + bias[j];
        out[r * ldo + j] = y;
      }
    }
  }
};

void w4a8_run_amx_emulated(const Int4W4a8Args& a, int64_t block_begin, int64_t block_end) {
  int4_w4a8_amx_blocks<EmulatedTiles, Int4ScalarPolicy>(a, block_begin, block_end);
}

void w4a16_run_amx_emulated(const Int4FloatArgs& a, int64_t block_begin, int64_t block_end) {
  int4_w4a16_amx_blocks<EmulatedTiles, Int4ScalarPolicy>(a, block_begin, block_end);
}

}  // namespace

const Int4W4a8Kernels int4_w4a8_kernels_amx_emulated = {&w4a8_run_amx_emulated};
const Int4FloatKernels int4_f32_kernels_amx_emulated = {&w4a16_run_amx_emulated};

}  // namespace ck::cpu
