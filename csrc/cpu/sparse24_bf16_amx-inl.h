// Included by sparse24_bf16_amx.cpp (amx tier) and sparse24_bf16_amx_emulated.cpp (amx_emulated tier: no target
// flags). The bf16 2:4 linear on AMX tiles (sparse24.h, "bf16 on tiles"): the decoded-weight bf16 GEMM of
// amx_bf16-inl.h with the 2:4 expansion as its decoder; everything here has internal linkage.
#pragma once

#include <cstdint>
#include <cstring>

#include "amx_bf16-inl.h"
#include "ck/sparse24.h"
#include "sparse24.h"

namespace ck::cpu {
namespace {

// The packed pair of groups h of block n0 / 16 (sparse24.h's bf16 layout): 72 uint16.
inline const uint16_t* sparse24_bf16_pair(const Sparse24Bf16Args& a, int64_t n0, int64_t h) {
  return a.packed + ((n0 / 16) * ((a.k + 7) / 8) + h) * 72;
}

// One element at a time: the dense bf16 columns [n0, n0 + cols) of the 2:4 weight, all chunks, into dst.
struct ScalarSparse24Decode {
  static void block(const Sparse24Bf16Args& a, int64_t n0, int cols, int64_t chunks, uint8_t* dst) {
    std::memset(dst, 0, static_cast<size_t>(chunks) * 1024);
    for (int64_t h = 0; h < (a.k + 7) / 8; ++h) {
      const uint16_t* pair = sparse24_bf16_pair(a, n0, h);
      const uint8_t* meta = reinterpret_cast<const uint8_t*>(pair + 64);
      for (int s = 0; s < 2 && 8 * h + 4 * s < a.k; ++s) {
        for (int i = 0; i < cols; ++i) {
          const int nib = (meta[i] >> (4 * s)) & 0xF;
          uint16_t dense[4] = {0, 0, 0, 0};
          dense[sparse24::position(nib, 0)] = pair[32 * s + 2 * i];
          dense[sparse24::position(nib, 1)] = pair[32 * s + 2 * i + 1];
          for (int p = 0; p < 4; ++p) std::memcpy(dst + amx_bf16_offset(8 * h + 4 * s + p) + 4 * i, &dense[p], 2);
        }
      }
    }
  }
};

}  // namespace
}  // namespace ck::cpu
