// The fused output stage of the int8 GEMM on AVX-512, shared by the VNNI and the AMX kernels.
// Include only from a translation unit compiled for AVX-512 (after its `#pragma GCC target`);
// everything here has internal linkage. Equal to write_output(corrected acc) bit for bit.
#pragma once

#include "int8_gemm.h"
#include "requant_avx512.h"

namespace ck::cpu {
namespace {

// Writes out[m0 + r, n0 + j] for r < mr, j < cols (cols <= 16 * NV) from the raw dot products
// sums[r * ld + j] = sum_k w[n0 + j, k] * x'[m0 + r, k], where x' = x + x_bias (x_bias = 128 when
// the kernel flipped the sign bit of int8 x to feed an unsigned operand, else 0). Adds the column
// term bias[n] - (x_zero_point + x_bias) * row_sum[n] (modulo 2^32), then the output stage of a.kind.
template <int NV>
inline void int8_output_block(const Int8GemmArgs& a, int64_t m0, int mr, int64_t n0, int cols,
                              const int32_t* sums, int64_t ld, int32_t x_bias) {
  const __m512i zp_total = _mm512_set1_epi32(-(a.x_zero_point + x_bias));
  __m512i column_term[NV];
  __mmask16 valid[NV];
#pragma GCC unroll 4
  for (int v = 0; v < NV; ++v) {
    const int64_t n = n0 + 16 * v;
    const int left = cols - 16 * v;
    valid[v] = left >= 16 ? static_cast<__mmask16>(0xFFFF) : lane_mask(left > 0 ? left : 0);
    column_term[v] = _mm512_mullo_epi32(_mm512_maskz_loadu_epi32(valid[v], a.w.row_sum + n), zp_total);
    if (a.bias_i32 != nullptr) {
      column_term[v] = _mm512_add_epi32(column_term[v], _mm512_maskz_loadu_epi32(valid[v], a.bias_i32 + n));
    }
  }
  auto acc = [&](int r, int v) {
    return _mm512_add_epi32(_mm512_loadu_si512(sums + r * ld + 16 * v), column_term[v]);
  };

  const int64_t ldo = a.out_stride();
  if (a.kind == EpilogueKind::kInt32) {
    for (int r = 0; r < mr; ++r)
      for (int v = 0; v < NV; ++v)
        _mm512_mask_storeu_epi32(static_cast<int32_t*>(a.out) + (m0 + r) * ldo + n0 + 16 * v, valid[v], acc(r, v));
  } else if (a.kind == EpilogueKind::kRequantize) {
    const RequantParams& p = a.requant;
    const ClampLanes clamp = clamp_lanes(p);
    RequantLanes lanes[NV];
    for (int v = 0; v < NV; ++v) {
      const int64_t n = n0 + 16 * v;
      lanes[v] = p.per_channel ? requant_lanes(_mm512_maskz_loadu_epi32(valid[v], p.m0 + n),
                                               _mm512_maskz_loadu_epi32(valid[v], p.shift + n))
                               : requant_lanes(_mm512_set1_epi32(p.m0[0]), _mm512_set1_epi32(p.shift[0]));
    }
    for (int r = 0; r < mr; ++r) {
      for (int v = 0; v < NV; ++v) {
        const __m512i y = multiply_by_quantized_multiplier(acc(r, v), lanes[v], p.rounding);
        store_lanes(a.out, (m0 + r) * ldo + n0 + 16 * v, clamp_add_zero_point(y, clamp), valid[v], p.out_type);
      }
    }
  } else {
    __m512 w_scale[NV], bias[NV];
    for (int v = 0; v < NV; ++v) {
      const int64_t n = n0 + 16 * v;
      w_scale[v] = a.w_scale_per_channel ? _mm512_maskz_loadu_ps(valid[v], a.w_scale + n)
                                         : _mm512_set1_ps(a.w_scale[0]);
      bias[v] = a.bias_f != nullptr ? _mm512_maskz_loadu_ps(valid[v], a.bias_f + n) : _mm512_setzero_ps();
    }
    for (int r = 0; r < mr; ++r) {
      const __m512 xs = _mm512_set1_ps(a.x_scale[a.x_scale_per_row ? m0 + r : 0]);
      for (int v = 0; v < NV; ++v) {
        // Same operation order as the portable path and the reference: ((acc * xs) * ws) + b.
        __m512 y = _mm512_cvtepi32_ps(acc(r, v));
        y = _mm512_mul_ps(_mm512_mul_ps(y, xs), w_scale[v]);
        if (a.bias_f != nullptr) y = _mm512_add_ps(y, bias[v]);
        _mm512_mask_storeu_ps(static_cast<float*>(a.out) + (m0 + r) * ldo + n0 + 16 * v, valid[v], y);
      }
    }
  }
}

// The output stage of a block of at most 32 columns (the AMX kernels' blocks).
struct Avx512Output {
  static void write(const Int8GemmArgs& a, int64_t m0, int mr, int64_t n0, int cols, const int32_t* sums,
                    int64_t ld) {
    if (cols > 16) {
      int8_output_block<2>(a, m0, mr, n0, cols, sums, ld, 0);
    } else {
      int8_output_block<1>(a, m0, mr, n0, cols, sums, ld, 0);
    }
  }
};

}  // namespace
}  // namespace ck::cpu
