// Included by int8_gemm_avx2.cpp, requantize_avx2.cpp and sparse24_avx2.cpp only (avx2 tier: target avx2,fma).
// AVX2 versions of the ck/fixedpoint.h output stage, 8 int32 lanes at a time (the port of
// requant_avx512vnni-inl.h to a CPU without AVX-512: no mask registers, no 64-bit arithmetic shifts,
// 64-bit min/max or int32 -> int8 narrowing stores, so those are built from compares and blends).
// Include only from a translation unit compiled for AVX2 (after its `#pragma GCC target`);
// everything here has internal linkage so no AVX2 code can leak into a portable caller.
// Each function equals its scalar counterpart in ck/fixedpoint.h bit for bit (tests force both
// paths and compare); m0 >= 0 is a precondition, which removes the one saturating case of
// SaturatingRoundingDoublingHighMul (a == b == INT32_MIN).
#pragma once

#include <immintrin.h>

#include <cstdint>
#include <cstring>

#include "requantize.h"

namespace ck::cpu {
namespace {

// Per-lane multiplier state, built once per 8 channels (or broadcast for per-tensor).
struct RequantLanes8 {
  __m256i m0;
  __m256i m0_odd;       // m0 of the odd lanes in the low halves of the 64-bit words
  __m256i left;         // double rounding: max(shift, 0)
  __m256i right_mask;   // double rounding: 2^right - 1, right = max(-shift, 0)
  __m256i right_half;   // double rounding: (2^right - 1) >> 1
  __m256i right;
  __m256i total_even;   // single rounding: 31 - shift (in [1, 62]) of the even lanes, as 64-bit words
  __m256i total_odd;    // ... of the odd lanes
  __m256i nudge_even;   // single rounding: 2^(total - 1), 64-bit words
  __m256i nudge_odd;
  bool any_left;        // some lane shifts left (shift > 0); false skips the saturating shift
};

// Odd int32 lanes into the low halves of the 64-bit words (for _mm256_mul_epi32).
inline __m256i odd_lanes8(__m256i v) { return _mm256_srli_epi64(v, 32); }

inline RequantLanes8 requant_lanes8(__m256i m0, __m256i shift) {
  const __m256i zero = _mm256_setzero_si256(), one = _mm256_set1_epi32(1);
  const __m256i one64 = _mm256_set1_epi64x(1), low32 = _mm256_set1_epi64x(0xffffffffLL);
  RequantLanes8 l;
  l.m0 = m0;
  l.m0_odd = odd_lanes8(m0);
  l.left = _mm256_max_epi32(shift, zero);
  l.right = _mm256_max_epi32(_mm256_sub_epi32(zero, shift), zero);
  l.right_mask = _mm256_sub_epi32(_mm256_sllv_epi32(one, l.right), one);
  l.right_half = _mm256_srli_epi32(l.right_mask, 1);
  const __m256i total = _mm256_sub_epi32(_mm256_set1_epi32(31), shift);
  l.total_even = _mm256_and_si256(total, low32);
  l.total_odd = odd_lanes8(total);
  l.nudge_even = _mm256_sllv_epi64(one64, _mm256_sub_epi64(l.total_even, one64));
  l.nudge_odd = _mm256_sllv_epi64(one64, _mm256_sub_epi64(l.total_odd, one64));
  l.any_left = !_mm256_testz_si256(l.left, l.left);
  return l;
}

// SaturatingLeftShift(x, left), left in [0, 30]: overflow iff shifting back does not restore x;
// an overflowing lane becomes INT32_MAX (x >= 0) or INT32_MIN (x < 0) = INT32_MAX ^ (x >> 31).
inline __m256i saturating_left_shift8(__m256i x, __m256i left) {
  const __m256i shifted = _mm256_sllv_epi32(x, left);
  const __m256i exact = _mm256_cmpeq_epi32(_mm256_srav_epi32(shifted, left), x);
  const __m256i saturated = _mm256_xor_si256(_mm256_srai_epi32(x, 31), _mm256_set1_epi32(INT32_MAX));
  return _mm256_blendv_epi8(saturated, shifted, exact);
}

// SaturatingRoundingDoublingHighMul(a, b) for b >= 0: (a * b + 2^30) >> 31 in 64 bits. The exact
// result fits in int32 (|a * b| < 2^62), so bits 31..62 of the 64-bit sum are the answer: a logical
// shift gives them as well as an arithmetic one (AVX2 has no 64-bit arithmetic shift).
inline __m256i rounding_doubling_high_mul8(__m256i a, const RequantLanes8& l) {
  const __m256i nudge = _mm256_set1_epi64x(int64_t{1} << 30);
  const __m256i even = _mm256_add_epi64(_mm256_mul_epi32(a, l.m0), nudge);
  const __m256i odd = _mm256_add_epi64(_mm256_mul_epi32(odd_lanes8(a), l.m0_odd), nudge);
  // even lanes: bits 31..62 into the low half; odd lanes: into the high half (shift left by 1).
  return _mm256_blend_epi32(_mm256_srli_epi64(even, 31), _mm256_slli_epi64(odd, 1), 0xAA);
}

// RoundingDivideByPOT(x, e), e in [0, 31]: ties away from zero.
inline __m256i rounding_divide_by_pot8(__m256i x, const RequantLanes8& l) {
  const __m256i remainder = _mm256_and_si256(x, l.right_mask);
  // threshold = (mask >> 1) + (x < 0); srai(x, 31) is -1 for negative x.
  const __m256i threshold = _mm256_sub_epi32(l.right_half, _mm256_srai_epi32(x, 31));
  const __m256i q = _mm256_srav_epi32(x, l.right);
  // cmpgt is -1 where the remainder exceeds the threshold: subtracting it adds 1.
  return _mm256_sub_epi32(q, _mm256_cmpgt_epi32(remainder, threshold));
}

// v >> n (arithmetic) on 64-bit words, n in [0, 63], from the logical shift: flip the bits of
// negative words before and after.
inline __m256i srav_epi64_emulated(__m256i v, __m256i n) {
  const __m256i sign = _mm256_cmpgt_epi64(_mm256_setzero_si256(), v);
  return _mm256_xor_si256(_mm256_srlv_epi64(_mm256_xor_si256(v, sign), n), sign);
}

// clamp(v, INT32_MIN, INT32_MAX) on 64-bit words.
inline __m256i saturate_epi64_to_int32(__m256i v) {
  const __m256i lo = _mm256_set1_epi64x(INT32_MIN), hi = _mm256_set1_epi64x(INT32_MAX);
  v = _mm256_blendv_epi8(v, hi, _mm256_cmpgt_epi64(v, hi));
  return _mm256_blendv_epi8(v, lo, _mm256_cmpgt_epi64(lo, v));
}

// MultiplyByQuantizedMultiplierSingle: (x * m0 + 2^(total - 1)) >> total, saturated to int32.
// |x * m0| < 2^62 and the nudge is at most 2^61, so the 64-bit sum never overflows.
inline __m256i multiply_single8(__m256i x, const RequantLanes8& l) {
  __m256i even = _mm256_add_epi64(_mm256_mul_epi32(x, l.m0), l.nudge_even);
  __m256i odd = _mm256_add_epi64(_mm256_mul_epi32(odd_lanes8(x), l.m0_odd), l.nudge_odd);
  even = saturate_epi64_to_int32(srav_epi64_emulated(even, l.total_even));
  odd = saturate_epi64_to_int32(srav_epi64_emulated(odd, l.total_odd));
  return _mm256_blend_epi32(even, _mm256_slli_epi64(odd, 32), 0xAA);
}

inline __m256i multiply_by_quantized_multiplier8(__m256i x, const RequantLanes8& l, Rounding rounding) {
  if (rounding == Rounding::kSingle) return multiply_single8(x, l);
  if (l.any_left) x = saturating_left_shift8(x, l.left);
  return rounding_divide_by_pot8(rounding_doubling_high_mul8(x, l), l);
}

// Bounds that make clamp(v + zp, qmin, qmax) == clamp(v, lo, hi) + zp without int32 overflow.
struct ClampLanes8 {
  __m256i lo, hi, zero_point;
};

inline ClampLanes8 clamp_lanes8(const RequantParams& p) {
  int64_t lo = int64_t{p.qmin} - p.zero_point, hi = int64_t{p.qmax} - p.zero_point;
  lo = lo < INT32_MIN ? INT32_MIN : lo;
  hi = hi > INT32_MAX ? INT32_MAX : hi;
  return {_mm256_set1_epi32(static_cast<int32_t>(lo)), _mm256_set1_epi32(static_cast<int32_t>(hi)),
          _mm256_set1_epi32(p.zero_point)};
}

inline __m256i clamp_add_zero_point8(__m256i v, const ClampLanes8& c) {
  return _mm256_add_epi32(_mm256_min_epi32(_mm256_max_epi32(v, c.lo), c.hi), c.zero_point);
}

// All-ones in the first `count` (0..8) int32 lanes: the mask of maskload / maskstore.
inline __m256i lane_mask8(int64_t count) {
  const __m256i index = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  const int32_t c = count >= 8 ? 8 : (count < 0 ? 0 : static_cast<int32_t>(count));
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(c), index);
}

// 16 int32 lanes (lo = columns 0..7, hi = 8..15), already within the range of an 8-bit out_type,
// narrowed to 16 bytes in column order. packs_epi32 and packs/packus_epi16 never saturate here.
inline __m128i narrow_to_bytes(__m256i lo, __m256i hi, OutType out_type) {
  const __m128i a = _mm_packs_epi32(_mm256_castsi256_si128(lo), _mm256_extracti128_si256(lo, 1));
  const __m128i b = _mm_packs_epi32(_mm256_castsi256_si128(hi), _mm256_extracti128_si256(hi, 1));
  return out_type == OutType::kUInt8 ? _mm_packus_epi16(a, b) : _mm_packs_epi16(a, b);
}

// Stores `count` (1..16) values of two 8-lane vectors (columns 0..7, 8..15) as out_type at
// out + index (elements). 8-bit types go through one 16-byte narrowing; a partial store copies
// only `count` bytes, so nothing past the row is written.
inline void store_lanes16(void* out, int64_t index, __m256i lo, __m256i hi, int64_t count, OutType out_type) {
  if (out_type == OutType::kInt32) {
    int32_t* o = static_cast<int32_t*>(out) + index;
    if (count >= 16) {
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(o), lo);
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(o + 8), hi);
    } else {
      _mm256_maskstore_epi32(o, lane_mask8(count), lo);
      if (count > 8) _mm256_maskstore_epi32(o + 8, lane_mask8(count - 8), hi);
    }
    return;
  }
  uint8_t* o = static_cast<uint8_t*>(out) + index;
  const __m128i bytes = narrow_to_bytes(lo, hi, out_type);
  if (count >= 16) {
    _mm_storeu_si128(reinterpret_cast<__m128i*>(o), bytes);
  } else {
    alignas(16) uint8_t tmp[16];
    _mm_store_si128(reinterpret_cast<__m128i*>(tmp), bytes);
    std::memcpy(o, tmp, static_cast<size_t>(count));
  }
}

// store_lanes16 for a requantized result q (clamped, zero point added): as p.out_type, or for
// kFloat32 dequantized, float(q - zero_point) * dequant_scale (store_requantized lane by lane).
inline void store_requantized16(void* out, int64_t index, __m256i lo, __m256i hi, int64_t count,
                                const RequantParams& p) {
  if (p.out_type != OutType::kFloat32) {
    store_lanes16(out, index, lo, hi, count, p.out_type);
    return;
  }
  const __m256i zp = _mm256_set1_epi32(p.zero_point);
  const __m256 scale = _mm256_set1_ps(p.dequant_scale);
  const __m256 f_lo = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_sub_epi32(lo, zp)), scale);
  const __m256 f_hi = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_sub_epi32(hi, zp)), scale);
  float* o = static_cast<float*>(out) + index;
  if (count >= 16) {
    _mm256_storeu_ps(o, f_lo);
    _mm256_storeu_ps(o + 8, f_hi);
  } else {
    _mm256_maskstore_ps(o, lane_mask8(count), f_lo);
    if (count > 8) _mm256_maskstore_ps(o + 8, lane_mask8(count - 8), f_hi);
  }
}

}  // namespace
}  // namespace ck::cpu
