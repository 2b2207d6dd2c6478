// bf16 <-> fp32 conversions of the CPU kernels (torch-free), one definition for every family: widening is exact
// (the bf16 bits are the high half of the fp32 bits); narrowing rounds to nearest even (a finite value past the
// largest bf16 becomes +-Inf) and turns every NaN into the quiet NaN 0x7FC0, as c10::BFloat16's
// round_to_nearest_even. The vector forms are in bf16_avx512-inl.h.
#pragma once

#include <cstdint>
#include <cstring>

namespace ck::cpu {

inline float bf16_to_float(uint16_t h) {
  const uint32_t u = static_cast<uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}

inline uint16_t float_to_bf16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  if ((u & 0x7FFFFFFFu) > 0x7F800000u) return 0x7FC0;
  return static_cast<uint16_t>((u + 0x7FFFu + ((u >> 16) & 1u)) >> 16);
}

}  // namespace ck::cpu
