// Included by int8_gemm_avx512vnni.cpp (avx512vnni tier) and int8_gemm_amx.cpp, sparse24_amx.cpp (amx tier): targets
// with avx512f/bw/vl/dq. The fused output stage of the int8 GEMM on AVX-512, shared by the VNNI and the AMX kernels.
// Include only from a translation unit compiled for AVX-512 (after its `#pragma GCC target`);
// everything here has internal linkage. Equal to write_output(corrected acc) bit for bit.
#pragma once

#include "int8_gemm.h"
#include "requant_avx512vnni-inl.h"

namespace ck::cpu {
namespace {

// The per-column state of the output stage for columns [n0, n0 + cols) (cols <= 16 * NV), computed
// once per block of columns and used for every row: the column term bias[n] - (x_zero_point +
// x_bias) * row_sum[n] (modulo 2^32; x_bias = 128 when the kernel flipped the sign bit of int8 x to
// feed an unsigned operand, else 0), the requantization lanes, the float scales.
template <int NV>
struct Int8OutputColumns {
  int64_t n0 = 0;
  __mmask16 valid[NV];
  __m512i column_term[NV];
  RequantLanes lanes[NV];
  ClampLanes clamp;
  __m512 w_scale[NV], bias[NV];
};

template <int NV>
inline void int8_output_prepare(const Int8GemmArgs& a, int64_t n0, int cols, int32_t x_bias, Int8OutputColumns<NV>& c) {
  c.n0 = n0;
  const __m512i zp_total = _mm512_set1_epi32(-(a.x_zero_point + x_bias));
#pragma GCC unroll 4
  for (int v = 0; v < NV; ++v) {
    const int64_t n = n0 + 16 * v;
    const int left = cols - 16 * v;
    c.valid[v] = lane_mask(left > 0 ? left : 0);
    c.column_term[v] = _mm512_mullo_epi32(_mm512_maskz_loadu_epi32(c.valid[v], a.w.row_sum + n), zp_total);
    if (a.bias_i32 != nullptr) {
      c.column_term[v] = _mm512_add_epi32(c.column_term[v], _mm512_maskz_loadu_epi32(c.valid[v], a.bias_i32 + n));
    }
    if (a.kind == EpilogueKind::kRequantize) {
      const RequantParams& p = a.requant;
      c.lanes[v] = p.per_channel ? requant_lanes(_mm512_maskz_loadu_epi32(c.valid[v], p.m0 + n),
                                                 _mm512_maskz_loadu_epi32(c.valid[v], p.shift + n))
                                 : requant_lanes(_mm512_set1_epi32(p.m0[0]), _mm512_set1_epi32(p.shift[0]));
    } else if (a.kind == EpilogueKind::kFloat) {
      c.w_scale[v] =
          a.w_scale_per_channel ? _mm512_maskz_loadu_ps(c.valid[v], a.w_scale + n) : _mm512_set1_ps(a.w_scale[0]);
      c.bias[v] = a.bias_f != nullptr ? _mm512_maskz_loadu_ps(c.valid[v], a.bias_f + n) : _mm512_setzero_ps();
    }
  }
  if (a.kind == EpilogueKind::kRequantize) c.clamp = clamp_lanes(a.requant);
}

// Writes out[m0 + r, c.n0 + j] for r < mr and the columns of c from the raw dot products
// sums[r * ld + j] = sum_k w[n0 + j, k] * x'[m0 + r, k] (x' = x + x_bias): the column term, then
// the output stage of a.kind.
template <int NV>
inline void int8_output_rows(const Int8GemmArgs& a, const Int8OutputColumns<NV>& c, int64_t m0, int mr,
                             const int32_t* sums, int64_t ld) {
  auto acc = [&](int r, int v) {
    return _mm512_add_epi32(_mm512_loadu_si512(sums + r * ld + 16 * v), c.column_term[v]);
  };
  const int64_t ldo = a.out_stride(), n0 = c.n0;
  if (a.kind == EpilogueKind::kInt32) {
    for (int r = 0; r < mr; ++r)
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v)
        _mm512_mask_storeu_epi32(static_cast<int32_t*>(a.out) + (m0 + r) * ldo + n0 + 16 * v, c.valid[v], acc(r, v));
  } else if (a.kind == EpilogueKind::kRequantize) {
    const RequantParams& p = a.requant;
    for (int r = 0; r < mr; ++r) {
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) {
        const __m512i y = multiply_by_quantized_multiplier(acc(r, v), c.lanes[v], p.rounding);
        store_lanes(a.out, (m0 + r) * ldo + n0 + 16 * v, clamp_add_zero_point(y, c.clamp), c.valid[v], p);
      }
    }
  } else {
    for (int r = 0; r < mr; ++r) {
      const __m512 xs = _mm512_set1_ps(a.x_scale[a.x_scale_per_row ? m0 + r : 0]);
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) {
        // Same operation order as the portable path and the reference: ((acc * xs) * ws) + b.
        __m512 y = _mm512_cvtepi32_ps(acc(r, v));
        y = _mm512_mul_ps(_mm512_mul_ps(y, xs), c.w_scale[v]);
        if (a.bias_f != nullptr) y = _mm512_add_ps(y, c.bias[v]);
        _mm512_mask_storeu_ps(static_cast<float*>(a.out) + (m0 + r) * ldo + n0 + 16 * v, c.valid[v], y);
      }
    }
  }
}

// One block: prepare its columns, write its rows.
template <int NV>
inline void int8_output_block(const Int8GemmArgs& a, int64_t m0, int mr, int64_t n0, int cols, const int32_t* sums,
                              int64_t ld, int32_t x_bias) {
  Int8OutputColumns<NV> c;
  int8_output_prepare<NV>(a, n0, cols, x_bias, c);
  int8_output_rows<NV>(a, c, m0, mr, sums, ld);
}

// The output stage of the AMX kernels' blocks (at most 32 columns): Columns prepared once per
// block, then rows written a few at a time.
struct Avx512Output {
  using Columns = Int8OutputColumns<2>;
  static void prepare(const Int8GemmArgs& a, int64_t n0, int cols, Columns& c) {
    int8_output_prepare<2>(a, n0, cols, 0, c);
  }
  static void write(const Int8GemmArgs& a, const Columns& c, int64_t m0, int mr, const int32_t* sums, int64_t ld) {
    int8_output_rows<2>(a, c, m0, mr, sums, ld);
  }
};

}  // namespace
}  // namespace ck::cpu
