// AVX2 + FMA 2:4 fp32 kernel (sparse24_f32_ymm.h on 16 ymm registers); compiled for AVX2 by the
// pragma below, chosen at run time on CPUs without AVX-512. int8 2:4 has no AVX2 kernel (AVX2 has
// no vpdpbusd: an exact vpmaddwd version would do as many multiplies as dense int8_linear's AVX2
// path), so it runs the portable path there.
#include "sparse24.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#pragma GCC target("avx2,fma")
#include <immintrin.h>

#include <algorithm>

namespace ck::cpu {
namespace {

constexpr int kF32Rows = 2;    // 2 x 2 accumulators + 8 controls + 2 x: the 16 ymm registers
constexpr int kF32Blocks = 2;

inline __m256i first_lanes(int count) {
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(count), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}
inline __m256 load_columns(const float* p, int count) { return _mm256_maskload_ps(p, first_lanes(count)); }
inline void store_columns(float* p, int count, __m256 v) { _mm256_maskstore_ps(p, first_lanes(count), v); }

#include "sparse24_f32_ymm.h"

}  // namespace

void sparse24_f32_run_avx2(const Sparse24F32Args& a, const Sparse24Plan& plan, int64_t task_begin, int64_t task_end) {
  f32_run_ymm(a, plan, task_begin, task_end);
}

}  // namespace ck::cpu

#else  // not x86-64 GCC/Clang: never selected (detected_isa() is portable there)

namespace ck::cpu {
void sparse24_f32_run_avx2(const Sparse24F32Args& a, const Sparse24Plan& plan, int64_t b, int64_t e) {
  sparse24_f32_run_portable(a, plan, b, e);
}
}  // namespace ck::cpu

#endif
