// Included by codebook_amx.cpp (amx tier) and codebook_amx_emulated.cpp (amx_emulated tier: no target flags). The
// bf16 codebook_linear on AMX tiles (codebook.h states its semantics): the decoded-weight bf16 GEMM of
// amx_bf16-inl.h with the codebook lookup as its decoder; everything here has internal linkage.
#pragma once

#include <cstdint>
#include <cstring>

#include "amx_bf16-inl.h"
#include "codebook.h"

namespace ck::cpu {
namespace {

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
        std::memcpy(dst + amx_bf16_offset(kk) + 4 * i, &v, 2);
      }
    }
  }
};

}  // namespace
}  // namespace ck::cpu
