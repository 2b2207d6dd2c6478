// Included by fake_quant_avx512vnni.cpp, sparse24_avx512bf16.cpp, codebook_amx.cpp and sparse24_bf16_amx.cpp (tiers
// with AVX-512F/BW). The float_to_bf16 of bf16.h on 16 lanes; internal linkage.
#pragma once

#include <immintrin.h>

#include <cstdint>

namespace ck::cpu {
namespace {

// The bf16 bits of each lane of y in the low half of its dword (high half zero): nearest even, NaN -> 0x7FC0.
inline __m512i bf16_round_lanes(__m512 y) {
  const __m512i u = _mm512_castps_si512(y);
  const __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1));
  const __m512i r = _mm512_srli_epi32(_mm512_add_epi32(_mm512_add_epi32(u, _mm512_set1_epi32(0x7FFF)), lsb), 16);
  return _mm512_mask_mov_epi32(r, _mm512_cmp_ps_mask(y, y, _CMP_UNORD_Q), _mm512_set1_epi32(0x7FC0));
}

// bf16_round_lanes(y) stored as 16 bf16 to out, the lanes of `lanes` only.
inline void store_bf16_lanes(uint16_t* out, __m512 y, __mmask16 lanes) {
  _mm256_mask_storeu_epi16(out, lanes, _mm512_cvtepi32_epi16(bf16_round_lanes(y)));
}

// One output row of the AMX bf16 output stage (amx_bf16-inl.h's Bf16Output): out[j] = bf16(acc[j] + bias[j]), acc
// the fp32 bits of sums, 16 columns per vector.
struct Avx512Bf16Row {
  static void write(uint16_t* out, const int32_t* sums, const float* bias, int cols) {
    for (int j = 0; j < cols; j += 16) {
      const int count = cols - j < 16 ? cols - j : 16;
      const __mmask16 valid = static_cast<__mmask16>(count == 16 ? 0xffff : (1u << count) - 1u);
      __m512 acc = _mm512_castsi512_ps(_mm512_maskz_loadu_epi32(valid, sums + j));
      if (bias != nullptr) acc = _mm512_add_ps(acc, _mm512_maskz_loadu_ps(valid, bias + j));
      store_bf16_lanes(out + j, acc, valid);
    }
  }
};

}  // namespace
}  // namespace ck::cpu
