// AVX2 requantization (CPUs without AVX-512); compiled for AVX2 by the pragma below, chosen at run
// time. 16 columns per step (two 8-lane vectors, one 16-byte store for 8-bit outputs); the last
// cols % 16 columns run the same vector code on masked loads (absent lanes read as 0, with m0 = 0
// and shift = 0 per channel) and store only the columns that exist.
#include "requantize.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#pragma GCC target("avx2,fma")
#include "requant_avx2-inl.h"

namespace ck::cpu {

void requantize_rows_avx2(const int32_t* acc, int64_t ld_acc, int64_t cols, int64_t row_begin, int64_t row_end,
                          const RequantParams& p, void* out) {
  const ClampLanes8 clamp = clamp_lanes8(p);
  const RequantLanes8 tensor_lanes = requant_lanes8(_mm256_set1_epi32(p.m0[0]), _mm256_set1_epi32(p.shift[0]));
  for (int64_t r = row_begin; r < row_end; ++r) {
    const int32_t* src = acc + r * ld_acc;
    for (int64_t c = 0; c < cols; c += 16) {
      const int64_t count = cols - c < 16 ? cols - c : 16;
      __m256i x[2];
      RequantLanes8 lanes[2] = {tensor_lanes, tensor_lanes};
      for (int v = 0; v < 2; ++v) {
        const __m256i valid = lane_mask8(count - 8 * v);
        const bool full = count >= 8 * (v + 1);
        x[v] = full ? _mm256_loadu_si256(reinterpret_cast<const __m256i*>(src + c + 8 * v))
                    : _mm256_maskload_epi32(src + c + 8 * v, valid);
        if (p.per_channel) {
          lanes[v] = full ? requant_lanes8(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p.m0 + c + 8 * v)),
                                           _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p.shift + c + 8 * v)))
                          : requant_lanes8(_mm256_maskload_epi32(p.m0 + c + 8 * v, valid),
                                           _mm256_maskload_epi32(p.shift + c + 8 * v, valid));
        }
        x[v] = clamp_add_zero_point8(multiply_by_quantized_multiplier8(x[v], lanes[v], p.rounding), clamp);
      }
      store_requantized16(out, r * cols + c, x[0], x[1], count, p);
    }
  }
}

const RequantizeKernels requantize_kernels_avx2 = {&requantize_rows_avx2, &int8_add_range_portable};

}  // namespace ck::cpu
#else
namespace ck::cpu {
const RequantizeKernels requantize_kernels_avx2 = {&requantize_rows_portable, &int8_add_range_portable};
}  // namespace ck::cpu
#endif
