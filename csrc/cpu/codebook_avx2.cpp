// AVX2 + FMA codebook_linear (CPUs without AVX-512). Bit-identical to the portable kernel: every output
// keeps its own serial chain acc = fma(x[m, k], W[n, k], acc) over k in order from 0, then + bias[n]
// when there is a bias; the 8 lanes of a vector are 8 output columns, so vectorizing changes no rounding.
// Per group of 8 columns the weights are decoded once into a k-major buffer (the lookup happens once
// per weight, not once per row of x); four rows of x run together so four FMA chains are in flight.
#include <algorithm>
#include <cstring>
#include <vector>

#include "codebook.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#pragma GCC target("avx2,fma")
#include <immintrin.h>

namespace ck::cpu {

namespace bp = ck::bitpack;

namespace {

// out[m, n0 .. n0 + cols) = acc (+ bias): bias is added only when there is one (acc + 0 would turn -0 into +0).
inline void store_row(__m256 acc, const float* bias8, float* out, int64_t cols) {
  if (bias8 != nullptr) acc = _mm256_add_ps(acc, _mm256_loadu_ps(bias8));
  if (cols == 8) {
    _mm256_storeu_ps(out, acc);
  } else {
    alignas(32) float tmp[8];
    _mm256_store_ps(tmp, acc);
    std::memcpy(out, tmp, cols * sizeof(float));
  }
}

}  // namespace

void codebook_linear_run_avx2(const CodebookLinearArgs& a, const CodebookPlan& plan, int64_t task_begin,
                              int64_t task_end) {
  const int64_t entries = int64_t{1} << a.bits;
  thread_local std::vector<float> wt;  // 8 decoded weight rows, k-major: wt[kk * 8 + column]
  if (static_cast<int64_t>(wt.size()) < a.k * 8) wt.resize(static_cast<size_t>(a.k * 8));
  float* w = wt.data();
  for (int64_t t = task_begin; t < task_end; ++t) {
    const auto [m_begin, m_end, n_first, n_last] = plan.task(a, t);
    for (int64_t n0 = n_first; n0 < n_last; n0 += 8) {
      const int64_t cols = std::min<int64_t>(8, n_last - n0);
      for (int64_t j = 0; j < 8; ++j) {
        if (j < cols) {
          const float* cb = a.codebook + ((n0 + j) / a.group_rows) * entries;
          for (int64_t kk = 0; kk < a.k; ++kk)
            w[kk * 8 + j] = cb[bp::get_index(a.packed, a.n, a.kw, a.bits, n0 + j, kk)];
        } else {
          for (int64_t kk = 0; kk < a.k; ++kk) w[kk * 8 + j] = 0.0f;
        }
      }
      alignas(32) float bias8[8] = {0};
      if (a.bias != nullptr) std::memcpy(bias8, a.bias + n0, cols * sizeof(float));
      const float* bias = a.bias != nullptr ? bias8 : nullptr;
      int64_t m = m_begin;
      for (; m + 4 <= m_end; m += 4) {
        const float* x0 = a.x + m * a.ldx;
        const float* x1 = x0 + a.ldx;
        const float* x2 = x1 + a.ldx;
        const float* x3 = x2 + a.ldx;
        __m256 c0 = _mm256_setzero_ps(), c1 = _mm256_setzero_ps(), c2 = _mm256_setzero_ps(), c3 = _mm256_setzero_ps();
        for (int64_t kk = 0; kk < a.k; ++kk) {
          const __m256 wk = _mm256_loadu_ps(w + kk * 8);
          c0 = _mm256_fmadd_ps(_mm256_set1_ps(x0[kk]), wk, c0);
          c1 = _mm256_fmadd_ps(_mm256_set1_ps(x1[kk]), wk, c1);
          c2 = _mm256_fmadd_ps(_mm256_set1_ps(x2[kk]), wk, c2);
          c3 = _mm256_fmadd_ps(_mm256_set1_ps(x3[kk]), wk, c3);
        }
        store_row(c0, bias, a.out + m * a.ldo + n0, cols);
        store_row(c1, bias, a.out + (m + 1) * a.ldo + n0, cols);
        store_row(c2, bias, a.out + (m + 2) * a.ldo + n0, cols);
        store_row(c3, bias, a.out + (m + 3) * a.ldo + n0, cols);
      }
      for (; m < m_end; ++m) {
        const float* xr = a.x + m * a.ldx;
        __m256 c = _mm256_setzero_ps();
        for (int64_t kk = 0; kk < a.k; ++kk)
          c = _mm256_fmadd_ps(_mm256_set1_ps(xr[kk]), _mm256_loadu_ps(w + kk * 8), c);
        store_row(c, bias, a.out + m * a.ldo + n0, cols);
      }
    }
  }
}

const CodebookKernels codebook_kernels_avx2 = {&codebook_linear_run_avx2};

}  // namespace ck::cpu
#else
namespace ck::cpu {
const CodebookKernels codebook_kernels_avx2 = {&codebook_linear_run_portable};
}  // namespace ck::cpu
#endif
