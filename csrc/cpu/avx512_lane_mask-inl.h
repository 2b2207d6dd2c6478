// Included by requant_avx512vnni-inl.h, codebook_avx512vnni.cpp, fake_quant_avx512vnni.cpp and int4_amx.cpp only
// (AVX-512 tiers, after their `#pragma GCC target`); everything here has internal linkage. The mask of the first
// `count` of 16 lanes (all 16 for count >= 16): the masked loads and stores of a tail.
#pragma once

#include <immintrin.h>

#include <cstdint>

namespace ck::cpu {
namespace {

inline __mmask16 lane_mask(int64_t count) {
  return count >= 16 ? static_cast<__mmask16>(0xFFFF) : static_cast<__mmask16>((1u << count) - 1u);
}

}  // namespace
}  // namespace ck::cpu
