// AVX-512 BF16 int4 w4a16 kernel for bf16 activations (Cooper Lake, Sapphire Rapids+, Zen 4+);
// compiled for them by the pragma below, chosen at run time. Layout and semantics: int4.h.
//
// Lane r is output row r of a block of 16. A chunk word holds the nibbles of k0..k0+7 of its row
// (byte j: k0 + j low, k0 + 4 + j high). Shifted right by 0, 4, 8 and 12 bits, its two 16-bit halves
// carry in their low four bits the nibbles of (k0, k0+2), (k0+4, k0+6), (k0+1, k0+3), (k0+5, k0+7);
// `vpermw` looks those up in a 32-entry table of bf16(q - 8) (entries i and i + 16 equal: it reads
// five index bits), giving the bf16 weight pairs `vdpbf16ps` multiplies with the x pairs of the same
// k, fp32 accumulation. x is first reordered per row into that pair order (k0, k2, k4, k6, k1, k3,
// k5, k7 per chunk) so that each pair is one broadcast 32-bit load.
#include "int4.h"

#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq,avx512vbmi,avx512bf16,avx2,fma")
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#include <immintrin.h>

#include <cstring>
#include <vector>

namespace ck::cpu {
namespace {

constexpr int kTileRows = 4;

__mmask16 lane_mask(int64_t rows) {
  return rows >= 16 ? static_cast<__mmask16>(0xFFFF) : static_cast<__mmask16>((1u << rows) - 1);
}

uint32_t load_pair(const uint16_t* p) {
  uint32_t v;
  std::memcpy(&v, p, 4);
  return v;
}

// bf16 bits of q - 8 for q = i mod 16.
__m512i bf16_table() {
  alignas(64) uint16_t t[32];
  for (int i = 0; i < 32; ++i) {
    const float f = static_cast<float>((i & 15) - 8);
    uint32_t u;
    std::memcpy(&u, &f, 4);
    t[i] = static_cast<uint16_t>(u >> 16);  // small integers are exact in bf16
  }
  return _mm512_load_si512(t);
}

// Position in a reordered chunk of the x of k0 + j.
constexpr int kPairSlot[8] = {0, 4, 1, 5, 2, 6, 3, 7};

template <int MR>
void bf16_tile(const Int4FloatArgs& a, const uint16_t* xr, int64_t block, int64_t m0, __m512i table) {
  const Int4Weight& w = a.w;
  const int64_t rows = w.block_rows(block), chunks = w.group_size / 8, groups = w.groups();
  const __mmask16 mask = lane_mask(rows);
  __m512 acc[MR];
  for (int i = 0; i < MR; ++i) acc[i] = _mm512_setzero_ps();
  for (int64_t g = 0; g < groups; ++g) {
    const uint32_t* gp = w.group(block, g);
    const uint16_t* xg = xr + m0 * w.k + g * w.group_size;
    __m512 part[MR][2];
    for (int i = 0; i < MR; ++i) part[i][0] = part[i][1] = _mm512_setzero_ps();
    for (int64_t c = 0; c < chunks; ++c) {
      const __m512i v = _mm512_maskz_loadu_epi32(mask, gp + c * rows);
      const __m512bh w02 = (__m512bh)_mm512_permutexvar_epi16(v, table);
      const __m512bh w46 = (__m512bh)_mm512_permutexvar_epi16(_mm512_srli_epi32(v, 4), table);
      const __m512bh w13 = (__m512bh)_mm512_permutexvar_epi16(_mm512_srli_epi32(v, 8), table);
      const __m512bh w57 = (__m512bh)_mm512_permutexvar_epi16(_mm512_srli_epi32(v, 12), table);
      for (int i = 0; i < MR; ++i) {
        const uint16_t* x = xg + i * w.k + 8 * c;
        part[i][0] = _mm512_dpbf16_ps(part[i][0], w02, (__m512bh)_mm512_set1_epi32(load_pair(x)));
        part[i][1] = _mm512_dpbf16_ps(part[i][1], w46, (__m512bh)_mm512_set1_epi32(load_pair(x + 2)));
        part[i][0] = _mm512_dpbf16_ps(part[i][0], w13, (__m512bh)_mm512_set1_epi32(load_pair(x + 4)));
        part[i][1] = _mm512_dpbf16_ps(part[i][1], w57, (__m512bh)_mm512_set1_epi32(load_pair(x + 6)));
      }
    }
    const __m512 scale = _mm512_castsi512_ps(_mm512_maskz_loadu_epi32(mask, gp + chunks * rows));
    __m512 zero_point = _mm512_setzero_ps();
    if (w.asymmetric) {
      const __m512i offset = _mm512_maskz_loadu_epi32(mask, gp + (chunks + 1) * rows);
      zero_point = _mm512_cvtepi32_ps(_mm512_sub_epi32(offset, _mm512_set1_epi32(8)));
    }
    for (int i = 0; i < MR; ++i) {
      __m512 s = _mm512_add_ps(part[i][0], part[i][1]);
      if (w.asymmetric) {
        s = _mm512_sub_ps(s, _mm512_mul_ps(zero_point, _mm512_set1_ps(a.x_group_sum[(m0 + i) * groups + g])));
      }
      acc[i] = _mm512_add_ps(acc[i], _mm512_mul_ps(s, scale));
    }
  }
  const int64_t n0 = block * kInt4BlockRows;
  uint16_t* out = static_cast<uint16_t*>(a.out);
  const __m512 bias = a.bias != nullptr ? _mm512_maskz_loadu_ps(mask, a.bias + n0) : _mm512_setzero_ps();
  for (int i = 0; i < MR; ++i) {
    const __m512 y = a.bias != nullptr ? _mm512_add_ps(acc[i], bias) : acc[i];
    // vcvtneps2bf16: round to nearest even, NaN kept quiet
    _mm256_mask_storeu_epi16(out + (m0 + i) * w.n + n0, mask, (__m256i)_mm512_cvtneps_pbh(y));
  }
}

void bf16_run(const Int4FloatArgs& a, int64_t block_begin, int64_t block_end) {
  // x in pair order, once per call (a few KB per row; each call covers many blocks)
  thread_local std::vector<uint16_t> reordered;
  const int64_t k = a.w.k;
  if (static_cast<int64_t>(reordered.size()) < a.m * k) reordered.resize(static_cast<size_t>(a.m * k));
  const uint16_t* x = static_cast<const uint16_t*>(a.x);
  for (int64_t m = 0; m < a.m; ++m) {
    for (int64_t k0 = 0; k0 < k; k0 += 8) {
      for (int j = 0; j < 8; ++j) reordered[m * k + k0 + kPairSlot[j]] = x[m * k + k0 + j];
    }
  }
  const __m512i table = bf16_table();
  for (int64_t block = block_begin; block < block_end; ++block) {
    int64_t m0 = 0;
    for (; m0 + kTileRows <= a.m; m0 += kTileRows) bf16_tile<kTileRows>(a, reordered.data(), block, m0, table);
    switch (a.m - m0) {
      case 3:
        bf16_tile<3>(a, reordered.data(), block, m0, table);
        break;
      case 2:
        bf16_tile<2>(a, reordered.data(), block, m0, table);
        break;
      case 1:
        bf16_tile<1>(a, reordered.data(), block, m0, table);
        break;
      default:
        break;
    }
  }
}

}  // namespace

const Int4FloatKernels int4_bf16_kernels_avx512bf16 = {&bf16_run};

}  // namespace ck::cpu
