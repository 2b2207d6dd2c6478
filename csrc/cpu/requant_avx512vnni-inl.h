// Included by requantize_avx512vnni.cpp, sparse24_avx512vnni.cpp, sparse24_avx512vbmi.cpp and
// int8_output_avx512vnni-inl.h only (targets with avx512f/bw/vl/dq). AVX-512 versions of the ck/fixedpoint.h output
// stage, 16 int32 lanes at a time. Include only from a translation unit compiled for AVX-512 (after its `#pragma GCC
// target`); everything here has internal linkage so no AVX-512 code can leak into a portable caller. Each function
// equals its scalar counterpart in ck/fixedpoint.h bit for bit (tests force both paths and compare); m0 >= 0 is a
// precondition, which removes the one saturating case of SaturatingRoundingDoublingHighMul (a == b == INT32_MIN).
#pragma once

#include <immintrin.h>

#include <cstdint>

#include "avx512_lane_mask-inl.h"
#include "requantize.h"

namespace ck::cpu {
namespace {

// Per-lane multiplier state, loaded once per 16 channels (or broadcast for per-tensor); everything
// that depends only on the channel is computed here, once, not per accumulator vector.
struct RequantLanes {
  __m512i m0;
  __m512i m0_odd;       // the odd lanes of m0 in the low halves of the 64-bit lanes
  __m512i left;         // double rounding: max(shift, 0)
  __m512i right;        // double rounding: max(-shift, 0)
  __m512i right_mask;   // (1 << right) - 1: the bits RoundingDivideByPOT rounds away
  __m512i right_half;   // right_mask >> 1: its round-half threshold for x >= 0
  bool any_left;        // some lane shifts left (else SaturatingLeftShift is the identity)
  __m512i total_shift;  // single rounding: 31 - shift, in [1, 62]
};

inline RequantLanes requant_lanes(__m512i m0, __m512i shift) {
  const __m512i zero = _mm512_setzero_si512(), one = _mm512_set1_epi32(1);
  RequantLanes l;
  l.m0 = m0;
  l.m0_odd = _mm512_srli_epi64(m0, 32);
  l.left = _mm512_max_epi32(shift, zero);
  l.right = _mm512_max_epi32(_mm512_sub_epi32(zero, shift), zero);
  l.right_mask = _mm512_sub_epi32(_mm512_sllv_epi32(one, l.right), one);
  l.right_half = _mm512_srli_epi32(l.right_mask, 1);
  l.any_left = _mm512_test_epi32_mask(l.left, l.left) != 0;
  l.total_shift = _mm512_sub_epi32(_mm512_set1_epi32(31), shift);
  return l;
}

// Odd int32 lanes into the low halves of the 64-bit lanes (for _mm512_mul_epi32).
inline __m512i odd_lanes(__m512i v) { return _mm512_srli_epi64(v, 32); }

// Reassembles 32-bit results held in the low halves of the even- and odd-lane 64-bit words.
inline __m512i interleave_low_halves(__m512i even, __m512i odd) {
  return _mm512_mask_blend_epi32(0xAAAA, even, _mm512_slli_epi64(odd, 32));
}

// SaturatingLeftShift(x, left), left in [0, 30]: overflow iff shifting back does not restore x.
inline __m512i saturating_left_shift(__m512i x, __m512i left) {
  const __m512i shifted = _mm512_sllv_epi32(x, left);
  const __mmask16 overflow = _mm512_cmpneq_epi32_mask(_mm512_srav_epi32(shifted, left), x);
  const __mmask16 negative = _mm512_cmplt_epi32_mask(x, _mm512_setzero_si512());
  __m512i r = _mm512_mask_mov_epi32(shifted, overflow, _mm512_set1_epi32(INT32_MAX));
  return _mm512_mask_mov_epi32(r, overflow & negative, _mm512_set1_epi32(INT32_MIN));
}

// SaturatingRoundingDoublingHighMul(a, m0) for m0 >= 0: (a * m0 + 2^30) >> 31 in 64 bits, whose
// low 32 bits are bits 31..62 of the sum: the even lanes shift it right by 31; the odd lanes shift
// it left by 1, which puts those bits in the high half where the blend takes them.
inline __m512i rounding_doubling_high_mul(__m512i a, const RequantLanes& l) {
  const __m512i nudge = _mm512_set1_epi64(int64_t{1} << 30);
  const __m512i even = _mm512_srli_epi64(_mm512_add_epi64(_mm512_mul_epi32(a, l.m0), nudge), 31);
  const __m512i odd = _mm512_slli_epi64(_mm512_add_epi64(_mm512_mul_epi32(odd_lanes(a), l.m0_odd), nudge), 1);
  return _mm512_mask_blend_epi32(0xAAAA, even, odd);
}

// RoundingDivideByPOT(x, right), right in [0, 31]: ties away from zero. The threshold is
// right_half + (x < 0); srai(x, 31) is -1 for negative x.
inline __m512i rounding_divide_by_pot(__m512i x, const RequantLanes& l) {
  const __m512i remainder = _mm512_and_si512(x, l.right_mask);
  const __m512i threshold = _mm512_sub_epi32(l.right_half, _mm512_srai_epi32(x, 31));
  const __m512i q = _mm512_srav_epi32(x, l.right);
  return _mm512_mask_add_epi32(q, _mm512_cmpgt_epi32_mask(remainder, threshold), q, _mm512_set1_epi32(1));
}

// MultiplyByQuantizedMultiplierSingle: (x * m0 + 2^(total - 1)) >> total, saturated to int32.
inline __m512i multiply_single(__m512i x, const RequantLanes& l) {
  const __m512i one = _mm512_set1_epi64(1);
  const __m512i low32 = _mm512_set1_epi64(0xffffffffLL);
  const __m512i lo = _mm512_set1_epi64(INT32_MIN);
  const __m512i hi = _mm512_set1_epi64(INT32_MAX);
  const __m512i shift_even = _mm512_and_si512(l.total_shift, low32);
  const __m512i shift_odd = odd_lanes(l.total_shift);
  __m512i even = _mm512_mul_epi32(x, l.m0);
  __m512i odd = _mm512_mul_epi32(odd_lanes(x), odd_lanes(l.m0));
  even = _mm512_add_epi64(even, _mm512_sllv_epi64(one, _mm512_sub_epi64(shift_even, one)));
  odd = _mm512_add_epi64(odd, _mm512_sllv_epi64(one, _mm512_sub_epi64(shift_odd, one)));
  even = _mm512_min_epi64(_mm512_max_epi64(_mm512_srav_epi64(even, shift_even), lo), hi);
  odd = _mm512_min_epi64(_mm512_max_epi64(_mm512_srav_epi64(odd, shift_odd), lo), hi);
  return interleave_low_halves(even, odd);
}

inline __m512i multiply_by_quantized_multiplier(__m512i x, const RequantLanes& l, Rounding rounding) {
  if (rounding == Rounding::kSingle) return multiply_single(x, l);
  if (l.any_left) x = saturating_left_shift(x, l.left);
  return rounding_divide_by_pot(rounding_doubling_high_mul(x, l), l);
}

// Bounds that make clamp(v + zp, qmin, qmax) == clamp(v, lo, hi) + zp without int32 overflow.
struct ClampLanes {
  __m512i lo, hi, zero_point;
};

inline ClampLanes clamp_lanes(const RequantParams& p) {
  int64_t lo = int64_t{p.qmin} - p.zero_point, hi = int64_t{p.qmax} - p.zero_point;
  lo = lo < INT32_MIN ? INT32_MIN : lo;
  hi = hi > INT32_MAX ? INT32_MAX : hi;
  return {_mm512_set1_epi32(static_cast<int32_t>(lo)), _mm512_set1_epi32(static_cast<int32_t>(hi)),
          _mm512_set1_epi32(p.zero_point)};
}

inline __m512i clamp_add_zero_point(__m512i v, const ClampLanes& c) {
  return _mm512_add_epi32(_mm512_min_epi32(_mm512_max_epi32(v, c.lo), c.hi), c.zero_point);
}

// Stores 16 (masked) int32 lanes q, already clamped with the zero point added, as p.out_type
// (store_requantized lane by lane).
inline void store_lanes(void* out, int64_t index, __m512i q, __mmask16 valid, const RequantParams& p) {
  switch (p.out_type) {
    case OutType::kInt8:
      _mm_mask_storeu_epi8(static_cast<int8_t*>(out) + index, valid, _mm512_cvtepi32_epi8(q));
      break;
    case OutType::kUInt8:
      _mm_mask_storeu_epi8(static_cast<uint8_t*>(out) + index, valid, _mm512_cvtepi32_epi8(q));
      break;
    case OutType::kInt32:
      _mm512_mask_storeu_epi32(static_cast<int32_t*>(out) + index, valid, q);
      break;
    case OutType::kFloat32: {
      const __m512 centered = _mm512_cvtepi32_ps(_mm512_sub_epi32(q, _mm512_set1_epi32(p.zero_point)));
      _mm512_mask_storeu_ps(static_cast<float*>(out) + index, valid,
                            _mm512_mul_ps(centered, _mm512_set1_ps(p.dequant_scale)));
      break;
    }
  }
}

}  // namespace
}  // namespace ck::cpu
