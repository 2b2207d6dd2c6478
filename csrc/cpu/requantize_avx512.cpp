// AVX-512 requantization; compiled for AVX-512 by the pragma below, chosen at run time.
#include "requantize.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq")
// GCC 12 reports its own intrinsics' _mm512_undefined_* placeholders as uninitialized.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#include "requant_avx512.h"

namespace ck::cpu {

void requantize_rows_avx512(const int32_t* acc, int64_t ld_acc, int64_t cols, int64_t row_begin,
                            int64_t row_end, const RequantParams& p, void* out) {
  const ClampLanes clamp = clamp_lanes(p);
  const RequantLanes tensor_lanes =
      requant_lanes(_mm512_set1_epi32(p.m0[0]), _mm512_set1_epi32(p.shift[0]));
  for (int64_t r = row_begin; r < row_end; ++r) {
    const int32_t* src = acc + r * ld_acc;
    for (int64_t c = 0; c < cols; c += 16) {
      const __mmask16 valid = lane_mask(cols - c);
      const RequantLanes lanes =
          p.per_channel ? requant_lanes(_mm512_maskz_loadu_epi32(valid, p.m0 + c),
                                        _mm512_maskz_loadu_epi32(valid, p.shift + c))
                        : tensor_lanes;
      const __m512i x = _mm512_maskz_loadu_epi32(valid, src + c);
      const __m512i v = clamp_add_zero_point(multiply_by_quantized_multiplier(x, lanes, p.rounding),
                                             clamp);
      store_lanes(out, r * cols + c, v, valid, p.out_type);
    }
  }
}

}  // namespace ck::cpu
#else
namespace ck::cpu {
void requantize_rows_avx512(const int32_t* acc, int64_t ld_acc, int64_t cols, int64_t row_begin,
                            int64_t row_end, const RequantParams& p, void* out) {
  requantize_rows_portable(acc, ld_acc, cols, row_begin, row_end, p, out);
}
}  // namespace ck::cpu
#endif
