// AVX-512 VNNI int4 kernels; compiled for AVX-512 + VNNI by the pragma below, chosen at run time.
// Layout and semantics: int4.h.
//
// Lane r of every vector is output row r of a block of 16 (a short last block masks its loads and
// stores). w4a8: one 64-byte load holds eight nibbles of each of the 16 rows; `and 0x0F` gives the
// unsigned weights of k0..k0+3 and `(>> 4) and 0x0F` those of k0+4..k0+7, four bytes per lane, and
// `vpdpbusd` multiplies them with the broadcast four int8 x of the same k, summing into the group's
// int32 accumulator (exact: the same integers as the portable kernel). At the end of a group the
// offset correction o * xsum is subtracted, the int32 sum converted to fp32 and multiplied by the
// group's scales, then added to the fp32 accumulator: the portable kernel's operations, lane-wise.
// fp32 w4a16: `vpermps` looks the nibble at a shift up in a 16-entry table of q - 8.
#include "int4.h"

#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,avx2,fma")
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#include <immintrin.h>

namespace ck::cpu {
namespace {

// Rows of x per pass over a block's weights: 8 while 8 are left, then 4, then the rest. One pass of 8 rows decodes
// the weights once for twice the vpdpbusd work (which bounds this kernel: one per cycle): M = 8, K = N = 4096 on
// Sapphire Rapids, 2 threads, 0.39 ms against 0.49 ms as two passes of 4 (group 32), 0.29 against 0.38 (group 128).
constexpr int kTileRows = 4;
constexpr int64_t kPrefetchBytes = 4096;  // software prefetch distance in the weight stream

__mmask16 lane_mask(int64_t rows) {
  return rows >= 16 ? static_cast<__mmask16>(0xFFFF) : static_cast<__mmask16>((1u << rows) - 1);
}

// Four int8 x broadcast to every lane, straight from memory (a load-port broadcast, no shuffle uop).
__m512i broadcast_x4(const int8_t* p) { return _mm512_broadcastd_epi32(_mm_loadu_si32(p)); }

template <int MR, bool kAsym>
void w4a8_tile(const Int4W4a8Args& a, int64_t block, int64_t m0) {
  const Int4Weight& w = a.w;
  const int64_t rows = w.block_rows(block), chunks = w.group_size / 8, groups = w.groups();
  const __mmask16 mask = lane_mask(rows);
  const __m512i low_nibbles = _mm512_set1_epi8(0x0F);
  __m512 acc[MR];
  for (int i = 0; i < MR; ++i) acc[i] = _mm512_setzero_ps();
  for (int64_t g = 0; g < groups; ++g) {
    const uint32_t* gp = w.group(block, g);
    const int8_t* xg = a.xq + m0 * w.k + g * w.group_size;
    // Independent int32 sums per row keep vpdpbusd chains in flight: with one or two rows, four per
    // row (low / high nibbles of even / odd chunks); with more rows, the rows are enough and one sum
    // each saves the reduction. A symmetric pack's offset correction -8 * xsum starts the first sum.
    // Every way gives the same integer d.
    constexpr int kChains = MR <= 2 ? 4 : 1;
    __m512i dot[MR][kChains];
    for (int i = 0; i < MR; ++i) {
      for (int q = 0; q < kChains; ++q) dot[i][q] = _mm512_setzero_si512();
      if (!kAsym) dot[i][0] = _mm512_set1_epi32(-8 * a.x_group_sum[(m0 + i) * groups + g]);
    }
    for (int64_t c = 0; c < chunks; c += 2) {
#pragma GCC unroll 2
      for (int64_t h = 0; h < 2; ++h) {
        const __m512i v = _mm512_maskz_loadu_epi32(mask, gp + (c + h) * rows);
        // the weights stream through once per tile: ask for the line kPrefetchBytes ahead (a hint;
        // past the end of the pack it is dropped)
        _mm_prefetch(reinterpret_cast<const char*>(gp + (c + h) * rows) + kPrefetchBytes, _MM_HINT_T0);
        const __m512i lo = _mm512_and_si512(v, low_nibbles);
        const __m512i hi = _mm512_and_si512(_mm512_srli_epi16(v, 4), low_nibbles);
        const int q_lo = kChains == 4 ? static_cast<int>(2 * h) : 0, q_hi = kChains == 4 ? q_lo + 1 : 0;
        for (int i = 0; i < MR; ++i) {
          const int8_t* x = xg + i * w.k + 8 * (c + h);
          dot[i][q_lo] = _mm512_dpbusd_epi32(dot[i][q_lo], lo, broadcast_x4(x));
          dot[i][q_hi] = _mm512_dpbusd_epi32(dot[i][q_hi], hi, broadcast_x4(x + 4));
        }
      }
    }
    const __m512 scale = _mm512_castsi512_ps(_mm512_maskz_loadu_epi32(mask, gp + chunks * rows));
    __m512i offset = _mm512_setzero_si512();
    if (kAsym) offset = _mm512_maskz_loadu_epi32(mask, gp + (chunks + 1) * rows);
    for (int i = 0; i < MR; ++i) {
      __m512i d = dot[i][0];
      if (kChains == 4) d = _mm512_add_epi32(_mm512_add_epi32(d, dot[i][1]), _mm512_add_epi32(dot[i][2], dot[i][3]));
      if (kAsym) {
        const int32_t xsum = a.x_group_sum[(m0 + i) * groups + g];
        d = _mm512_sub_epi32(d, _mm512_mullo_epi32(offset, _mm512_set1_epi32(xsum)));
      }
      acc[i] = _mm512_add_ps(acc[i], _mm512_mul_ps(_mm512_cvtepi32_ps(d), scale));
    }
  }
  const int64_t n0 = block * kInt4BlockRows;
  const __m512 bias = a.bias != nullptr ? _mm512_maskz_loadu_ps(mask, a.bias + n0) : _mm512_setzero_ps();
  for (int i = 0; i < MR; ++i) {
    __m512 y = _mm512_mul_ps(acc[i], _mm512_set1_ps(a.x_scale[m0 + i]));
    if (a.bias != nullptr) y = _mm512_add_ps(y, bias);
    _mm512_mask_storeu_ps(a.out + (m0 + i) * w.n + n0, mask, y);
  }
}

template <bool kAsym>
void w4a8_blocks(const Int4W4a8Args& a, int64_t block_begin, int64_t block_end) {
  for (int64_t block = block_begin; block < block_end; ++block) {
    int64_t m0 = 0;
    for (; m0 + 2 * kTileRows <= a.m; m0 += 2 * kTileRows) w4a8_tile<2 * kTileRows, kAsym>(a, block, m0);
    for (; m0 + kTileRows <= a.m; m0 += kTileRows) w4a8_tile<kTileRows, kAsym>(a, block, m0);
    switch (a.m - m0) {
      case 3:
        w4a8_tile<3, kAsym>(a, block, m0);
        break;
      case 2:
        w4a8_tile<2, kAsym>(a, block, m0);
        break;
      case 1:
        w4a8_tile<1, kAsym>(a, block, m0);
        break;
      default:
        break;
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

// Bit position of the nibble of k0 + j in a chunk word (j = 0..7).
constexpr int kNibbleShift[8] = {0, 8, 16, 24, 4, 12, 20, 28};

template <int MR>
void f32_tile(const Int4FloatArgs& a, int64_t block, int64_t m0) {
  const Int4Weight& w = a.w;
  const int64_t rows = w.block_rows(block), chunks = w.group_size / 8, groups = w.groups();
  const __mmask16 mask = lane_mask(rows);
  const __m512 table = _mm512_setr_ps(-8, -7, -6, -5, -4, -3, -2, -1, 0, 1, 2, 3, 4, 5, 6, 7);
  const float* x = a.x;
  __m512 acc[MR];
  for (int i = 0; i < MR; ++i) acc[i] = _mm512_setzero_ps();
  for (int64_t g = 0; g < groups; ++g) {
    const uint32_t* gp = w.group(block, g);
    const float* xg = x + m0 * w.k + g * w.group_size;
    __m512 part[MR][4];  // four fp32 chains per row (k mod 4) in flight
    for (int i = 0; i < MR; ++i) part[i][0] = part[i][1] = part[i][2] = part[i][3] = _mm512_setzero_ps();
    for (int64_t c = 0; c < chunks; ++c) {
      const __m512i v = _mm512_maskz_loadu_epi32(mask, gp + c * rows);
      _mm_prefetch(reinterpret_cast<const char*>(gp + c * rows) + kPrefetchBytes, _MM_HINT_T0);
#pragma GCC unroll 8
      for (int j = 0; j < 8; ++j) {
        const __m512 wj = _mm512_permutexvar_ps(_mm512_srli_epi32(v, kNibbleShift[j]), table);
        for (int i = 0; i < MR; ++i) {
          part[i][j & 3] = _mm512_fmadd_ps(wj, _mm512_set1_ps(xg[i * w.k + 8 * c + j]), part[i][j & 3]);
        }
      }
    }
    const __m512 scale = _mm512_castsi512_ps(_mm512_maskz_loadu_epi32(mask, gp + chunks * rows));
    __m512 zero_point = _mm512_setzero_ps();
    if (w.asymmetric) {
      const __m512i offset = _mm512_maskz_loadu_epi32(mask, gp + (chunks + 1) * rows);
      zero_point = _mm512_cvtepi32_ps(_mm512_sub_epi32(offset, _mm512_set1_epi32(8)));
    }
    for (int i = 0; i < MR; ++i) {
      __m512 s = _mm512_add_ps(_mm512_add_ps(part[i][0], part[i][1]), _mm512_add_ps(part[i][2], part[i][3]));
      if (w.asymmetric) {
        s = _mm512_sub_ps(s, _mm512_mul_ps(zero_point, _mm512_set1_ps(a.x_group_sum[(m0 + i) * groups + g])));
      }
      acc[i] = _mm512_add_ps(acc[i], _mm512_mul_ps(s, scale));
    }
  }
  const int64_t n0 = block * kInt4BlockRows;
  float* out = a.out;
  const __m512 bias = a.bias != nullptr ? _mm512_maskz_loadu_ps(mask, a.bias + n0) : _mm512_setzero_ps();
  for (int i = 0; i < MR; ++i) {
    const __m512 y = a.bias != nullptr ? _mm512_add_ps(acc[i], bias) : acc[i];
    _mm512_mask_storeu_ps(out + (m0 + i) * w.n + n0, mask, y);
  }
}

void f32_run(const Int4FloatArgs& a, int64_t block_begin, int64_t block_end) {
  for (int64_t block = block_begin; block < block_end; ++block) {
    int64_t m0 = 0;
    for (; m0 + kTileRows <= a.m; m0 += kTileRows) f32_tile<kTileRows>(a, block, m0);
    switch (a.m - m0) {
      case 3:
        f32_tile<3>(a, block, m0);
        break;
      case 2:
        f32_tile<2>(a, block, m0);
        break;
      case 1:
        f32_tile<1>(a, block, m0);
        break;
      default:
        break;
    }
  }
}

}  // namespace

const Int4W4a8Kernels int4_w4a8_kernels_avx512vnni = {&w4a8_run};
const Int4FloatKernels int4_f32_kernels_avx512vnni = {&f32_run};

}  // namespace ck::cpu
