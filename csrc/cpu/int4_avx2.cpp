// AVX2 int4 w4a8 kernel (CPUs without AVX-512); compiled for AVX2 by the pragma below, chosen at run
// time. Layout and semantics: int4.h.
//
// A block of 16 rows is two halves of 8 lanes (lane r = row 8h + r). Per chunk the 32 bytes of a
// half hold eight nibbles of each of its rows; `vpmaddubsw` multiplies the unsigned nibbles (as
// bytes) with the broadcast int8 x and adds pairs into int16 (at most 2 * 15 * 127 = 3810 in
// magnitude: no saturation), `vpmaddwd` with ones adds those pairs into int32: the same exact
// group sums as vpdpbusd. The group epilogue is the portable kernel's, lane-wise.
#include "int4.h"

#pragma GCC target("avx2,fma")
#include <immintrin.h>

namespace ck::cpu {
namespace {

constexpr int kTileRows = 4;

// Four int8 x broadcast to every lane, straight from memory.
__m256i broadcast_x4(const int8_t* p) { return _mm256_broadcastd_epi32(_mm_loadu_si32(p)); }

// Lanes [0, rows) all ones.
__m256i lane_mask(int64_t rows) {
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int32_t>(rows)), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

__m256i dot4(__m256i u8_weights, __m256i x4) {
  const __m256i pairs = _mm256_maddubs_epi16(u8_weights, x4);
  return _mm256_madd_epi16(pairs, _mm256_set1_epi16(1));
}

template <int MR, bool kAsym>
void w4a8_half(const Int4W4a8Args& a, int64_t block, int64_t half, int64_t m0) {
  const Int4Weight& w = a.w;
  const int64_t rows = w.block_rows(block), chunks = w.group_size / 8, groups = w.groups();
  const int64_t lanes = rows - 8 * half < 8 ? rows - 8 * half : 8;
  const __m256i mask = lane_mask(lanes);
  const __m256i low_nibbles = _mm256_set1_epi8(0x0F);
  __m256 acc[MR];
  for (int i = 0; i < MR; ++i) acc[i] = _mm256_setzero_ps();
  for (int64_t g = 0; g < groups; ++g) {
    const int* gp = reinterpret_cast<const int*>(w.group(block, g)) + 8 * half;
    const int8_t* xg = a.xq + m0 * w.k + g * w.group_size;
    __m256i dot[MR];
    for (int i = 0; i < MR; ++i) dot[i] = _mm256_setzero_si256();
    for (int64_t c = 0; c < chunks; ++c) {
      const __m256i v = _mm256_maskload_epi32(gp + c * rows, mask);
      const __m256i lo = _mm256_and_si256(v, low_nibbles);
      const __m256i hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), low_nibbles);
      for (int i = 0; i < MR; ++i) {
        const int8_t* x = xg + i * w.k + 8 * c;
        dot[i] = _mm256_add_epi32(dot[i], _mm256_add_epi32(dot4(lo, broadcast_x4(x)), dot4(hi, broadcast_x4(x + 4))));
      }
    }
    const __m256 scale = _mm256_castsi256_ps(_mm256_maskload_epi32(gp + chunks * rows, mask));
    __m256i offset = _mm256_set1_epi32(8);
    if (kAsym) offset = _mm256_maskload_epi32(gp + (chunks + 1) * rows, mask);
    for (int i = 0; i < MR; ++i) {
      const int32_t xsum = a.x_group_sum[(m0 + i) * groups + g];
      const __m256i correction =
          kAsym ? _mm256_mullo_epi32(offset, _mm256_set1_epi32(xsum)) : _mm256_set1_epi32(8 * xsum);
      const __m256i d = _mm256_sub_epi32(dot[i], correction);
      acc[i] = _mm256_add_ps(acc[i], _mm256_mul_ps(_mm256_cvtepi32_ps(d), scale));
    }
  }
  const int64_t n0 = block * kInt4BlockRows + 8 * half;
  const __m256 bias = a.bias != nullptr
                          ? _mm256_castsi256_ps(_mm256_maskload_epi32(reinterpret_cast<const int*>(a.bias + n0), mask))
                          : _mm256_setzero_ps();
  for (int i = 0; i < MR; ++i) {
    __m256 y = _mm256_mul_ps(acc[i], _mm256_set1_ps(a.x_scale[m0 + i]));
    if (a.bias != nullptr) y = _mm256_add_ps(y, bias);
    _mm256_maskstore_ps(a.out + (m0 + i) * w.n + n0, mask, y);
  }
}

template <bool kAsym>
void w4a8_blocks(const Int4W4a8Args& a, int64_t block_begin, int64_t block_end) {
  for (int64_t block = block_begin; block < block_end; ++block) {
    for (int64_t half = 0; half * 8 < a.w.block_rows(block); ++half) {
      int64_t m0 = 0;
      for (; m0 + kTileRows <= a.m; m0 += kTileRows) w4a8_half<kTileRows, kAsym>(a, block, half, m0);
      switch (a.m - m0) {
        case 3:
          w4a8_half<3, kAsym>(a, block, half, m0);
          break;
        case 2:
          w4a8_half<2, kAsym>(a, block, half, m0);
          break;
        case 1:
          w4a8_half<1, kAsym>(a, block, half, m0);
          break;
        default:
          break;
      }
    }
  }
}

void w4a8_run(const Int4W4a8Args& a, int64_t block_begin, int64_t block_end) {
  if (a.w.asymmetric) {
    w4a8_blocks<true>(a, block_begin, block_end);
  } else {
    w4a8_blocks<false>(a, block_begin, block_end);
  }
}

}  // namespace

const Int4W4a8Kernels int4_w4a8_kernels_avx2 = {&w4a8_run};

}  // namespace ck::cpu
