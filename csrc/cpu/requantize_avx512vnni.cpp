// AVX-512 requantization; compiled for AVX-512 by the pragma below, chosen at run time.
#include "requantize.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq")
// GCC 12 reports its own intrinsics' _mm512_undefined_* placeholders as uninitialized.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#include "requant_avx512vnni-inl.h"

namespace ck::cpu {

void requantize_rows_avx512vnni(const int32_t* acc, int64_t ld_acc, int64_t cols, int64_t row_begin, int64_t row_end,
                                const RequantParams& p, void* out) {
  const ClampLanes clamp = clamp_lanes(p);
  const RequantLanes tensor_lanes = requant_lanes(_mm512_set1_epi32(p.m0[0]), _mm512_set1_epi32(p.shift[0]));
  for (int64_t r = row_begin; r < row_end; ++r) {
    const int32_t* src = acc + r * ld_acc;
    for (int64_t c = 0; c < cols; c += 16) {
      const __mmask16 valid = lane_mask(cols - c);
      const RequantLanes lanes = p.per_channel ? requant_lanes(_mm512_maskz_loadu_epi32(valid, p.m0 + c),
                                                               _mm512_maskz_loadu_epi32(valid, p.shift + c))
                                               : tensor_lanes;
      const __m512i x = _mm512_maskz_loadu_epi32(valid, src + c);
      const __m512i v = clamp_add_zero_point(multiply_by_quantized_multiplier(x, lanes, p.rounding), clamp);
      store_lanes(out, r * cols + c, v, valid, p);
    }
  }
}

namespace {

// 16 int8 / uint8 elements widened to int32, minus the zero point, shifted left (wrapping like int32).
inline __m512i shifted_lanes(const void* x, bool is_signed, int64_t i, __mmask16 valid, __m512i zero_point,
                             int left_shift) {
  const __m128i bytes = _mm_maskz_loadu_epi8(valid, static_cast<const uint8_t*>(x) + i);
  const __m512i wide = is_signed ? _mm512_cvtepi8_epi32(bytes) : _mm512_cvtepu8_epi32(bytes);
  return _mm512_sll_epi32(_mm512_sub_epi32(wide, zero_point), _mm_cvtsi32_si128(left_shift));
}

}  // namespace

// int8_add_range in one pass over the elements, 16 at a time (the same operations as the chunked
// portable form: both rescales, the wrapping int32 sum, the output stage).
void int8_add_range_avx512vnni(const void* a, const void* b, const Int8AddParams& p, int64_t begin, int64_t end,
                               void* out) {
  const RequantLanes la = requant_lanes(_mm512_set1_epi32(p.a.m0[0]), _mm512_set1_epi32(p.a.shift[0]));
  const RequantLanes lb = requant_lanes(_mm512_set1_epi32(p.b.m0[0]), _mm512_set1_epi32(p.b.shift[0]));
  const RequantLanes lo = requant_lanes(_mm512_set1_epi32(p.out.m0[0]), _mm512_set1_epi32(p.out.shift[0]));
  const ClampLanes clamp = clamp_lanes(p.out);
  const __m512i za = _mm512_set1_epi32(p.a_zero_point), zb = _mm512_set1_epi32(p.b_zero_point);
  for (int64_t i = begin; i < end; i += 16) {
    const __mmask16 valid = lane_mask(end - i);
    const __m512i sa =
        multiply_by_quantized_multiplier(shifted_lanes(a, p.a_signed, i, valid, za, p.left_shift), la, p.a.rounding);
    const __m512i sb =
        multiply_by_quantized_multiplier(shifted_lanes(b, p.b_signed, i, valid, zb, p.left_shift), lb, p.b.rounding);
    const __m512i y = multiply_by_quantized_multiplier(_mm512_add_epi32(sa, sb), lo, p.out.rounding);
    store_lanes(out, i, clamp_add_zero_point(y, clamp), valid, p.out);
  }
}

const RequantizeKernels requantize_kernels_avx512vnni = {&requantize_rows_avx512vnni, &int8_add_range_avx512vnni};

}  // namespace ck::cpu
#else
namespace ck::cpu {
const RequantizeKernels requantize_kernels_avx512vnni = {&requantize_rows_portable, &int8_add_range_portable};
}  // namespace ck::cpu
#endif
