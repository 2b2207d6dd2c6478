// The w4a8 int4 kernel on the AMX tile instructions (int4_amx-inl.h) with an AVX-512 accumulation
// policy. Chosen at run time for M >= kInt4AmxMinRows on a CPU whose AMX the OS enabled (int4.cpp).
#include "int4.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,amx-tile,amx-int8,amx-bf16")
// GCC 12 reports its own intrinsics' _mm512_undefined_* placeholders as uninitialized.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#include <immintrin.h>

#include "amx_hardware_tiles-inl.h"
#include "avx512_lane_mask-inl.h"
#include "int4_amx-inl.h"

namespace ck::cpu {
namespace {

// The accumulation policy of int4_amx-inl.h, 16 columns per zmm: one accumulator register per row.
struct Int4Avx512Policy {
  struct Acc {
    __m512 v[kAmxTileRows];
  };
  static void zero(Acc& acc) {
#pragma GCC unroll 16
    for (int r = 0; r < kAmxTileRows; ++r) acc.v[r] = _mm512_setzero_ps();
  }
  static void decode(const uint32_t* words, int64_t rows, int8_t* lo, int8_t* hi) {
    const __m512i v = _mm512_maskz_loadu_epi32(lane_mask(rows), words);
    const __m512i nibble = _mm512_set1_epi8(0x0F), eight = _mm512_set1_epi8(8);
    _mm512_storeu_si512(lo, _mm512_sub_epi8(_mm512_and_si512(v, nibble), eight));
    _mm512_storeu_si512(hi, _mm512_sub_epi8(_mm512_and_si512(_mm512_srli_epi16(v, 4), nibble), eight));
  }
  static void add_group(Acc& acc, const int32_t* sums, int64_t cols, const float* scales, const uint32_t* offsets,
                        const int32_t* xsum, int64_t xsum_stride) {
    const __mmask16 valid = lane_mask(cols);
    const __m512 scale = _mm512_maskz_loadu_ps(valid, scales);
    if (offsets == nullptr) {
#pragma GCC unroll 16
      for (int r = 0; r < kAmxTileRows; ++r) {
        const __m512 d = _mm512_cvtepi32_ps(_mm512_loadu_si512(sums + 16 * r));
        acc.v[r] = _mm512_add_ps(acc.v[r], _mm512_mul_ps(d, scale));
      }
      return;
    }
    const __m512i zero_point = _mm512_sub_epi32(_mm512_maskz_loadu_epi32(valid, offsets), _mm512_set1_epi32(8));
#pragma GCC unroll 16
    for (int r = 0; r < kAmxTileRows; ++r) {
      const __m512i d = _mm512_sub_epi32(_mm512_loadu_si512(sums + 16 * r),
                                         _mm512_mullo_epi32(zero_point, _mm512_set1_epi32(xsum[r * xsum_stride])));
      acc.v[r] = _mm512_add_ps(acc.v[r], _mm512_mul_ps(_mm512_cvtepi32_ps(d), scale));
    }
  }
  // The chunk's 16 words -> B pair rows 0..3 (k = 8c + 2i, 8c + 2i + 1) of bf16(u - 8): two vpshufb
  // look-ups give the low and high bytes of each value, the unpacks make them 16-bit values (dwords
  // alternating between the pair rows of one nibble half), vpermt2d sorts the dwords by row.
  static void decode_bf16(const uint32_t* words, int64_t rows, int8_t* b) {
    // bf16 bits of u - 8 for u = 0..15 (-8.0 = 0xC100 ... 7.0 = 0x40E0), low and high bytes
    const __m512i low_bytes = _mm512_broadcast_i32x4(_mm_setr_epi8(
        0x00, -0x20, -0x40, -0x60, -0x80, 0x40, 0x00, -0x80, 0x00, -0x80, 0x00, 0x40, -0x80, -0x60, -0x40, -0x20));
    const __m512i high_bytes = _mm512_broadcast_i32x4(_mm_setr_epi8(
        -0x3F, -0x40, -0x40, -0x40, -0x40, -0x40, -0x40, -0x41, 0x00, 0x3F, 0x40, 0x40, 0x40, 0x40, 0x40, 0x40));
    // dword r of a pair row: lane r / 4, element r % 4 (0, 1 from the low unpack, 2, 3 from the high one)
    const __m512i first = _mm512_setr_epi32(0, 2, 16, 18, 4, 6, 20, 22, 8, 10, 24, 26, 12, 14, 28, 30);
    const __m512i second = _mm512_add_epi32(first, _mm512_set1_epi32(1));
    const __m512i v = _mm512_maskz_loadu_epi32(lane_mask(rows), words);
    const __m512i nibble = _mm512_set1_epi8(0x0F);
    const __m512i halves[2] = {_mm512_and_si512(v, nibble), _mm512_and_si512(_mm512_srli_epi16(v, 4), nibble)};
    for (int h = 0; h < 2; ++h) {
      const __m512i lo = _mm512_shuffle_epi8(low_bytes, halves[h]), hi = _mm512_shuffle_epi8(high_bytes, halves[h]);
      const __m512i rows01 = _mm512_unpacklo_epi8(lo, hi), rows23 = _mm512_unpackhi_epi8(lo, hi);
      _mm512_storeu_si512(b + (2 * h) * kAmxTileBytes, _mm512_permutex2var_epi32(rows01, first, rows23));
      _mm512_storeu_si512(b + (2 * h + 1) * kAmxTileBytes, _mm512_permutex2var_epi32(rows01, second, rows23));
    }
  }
  static void add_group_f(Acc& acc, const float* sums, int64_t cols, const float* scales, const uint32_t* offsets,
                          const float* xsum, int64_t xsum_stride) {
    const __mmask16 valid = lane_mask(cols);
    const __m512 scale = _mm512_maskz_loadu_ps(valid, scales);
    if (offsets == nullptr) {
#pragma GCC unroll 16
      for (int r = 0; r < kAmxTileRows; ++r) {
        acc.v[r] = _mm512_add_ps(acc.v[r], _mm512_mul_ps(_mm512_loadu_ps(sums + 16 * r), scale));
      }
      return;
    }
    const __m512 zero_point =
        _mm512_cvtepi32_ps(_mm512_sub_epi32(_mm512_maskz_loadu_epi32(valid, offsets), _mm512_set1_epi32(8)));
#pragma GCC unroll 16
    for (int r = 0; r < kAmxTileRows; ++r) {
      const __m512 part = _mm512_sub_ps(_mm512_loadu_ps(sums + 16 * r),
                                        _mm512_mul_ps(zero_point, _mm512_set1_ps(xsum[r * xsum_stride])));
      acc.v[r] = _mm512_add_ps(acc.v[r], _mm512_mul_ps(part, scale));
    }
  }
  static void finish_f(const Acc& acc, int64_t rows_m, int64_t cols, const float* bias, float* out, int64_t ldo) {
    const __mmask16 valid = lane_mask(cols);
    const __m512 b = bias != nullptr ? _mm512_maskz_loadu_ps(valid, bias) : _mm512_setzero_ps();
    for (int64_t r = 0; r < rows_m; ++r) {
      _mm512_mask_storeu_ps(out + r * ldo, valid, bias != nullptr ? _mm512_add_ps(acc.v[r], b) : acc.v[r]);
    }
  }
  static void finish(const Acc& acc, int64_t rows_m, int64_t cols, const float* x_scale, const float* bias, float* out,
                     int64_t ldo) {
    const __mmask16 valid = lane_mask(cols);
    const __m512 b = bias != nullptr ? _mm512_maskz_loadu_ps(valid, bias) : _mm512_setzero_ps();
    for (int64_t r = 0; r < rows_m; ++r) {
      __m512 y = _mm512_mul_ps(acc.v[r], _mm512_set1_ps(x_scale[r]));
      if (bias != nullptr) y = _mm512_add_ps(y, b);
      _mm512_mask_storeu_ps(out + r * ldo, valid, y);
    }
  }
};

void w4a8_run_amx(const Int4W4a8Args& a, int64_t block_begin, int64_t block_end) {
  int4_w4a8_amx_blocks<HardwareTiles, Int4Avx512Policy>(a, block_begin, block_end);
}

void w4a16_run_amx(const Int4FloatArgs& a, int64_t block_begin, int64_t block_end) {
  int4_w4a16_amx_blocks<HardwareTiles, Int4Avx512Policy>(a, block_begin, block_end);
}

}  // namespace

const Int4W4a8Kernels int4_w4a8_kernels_amx = {&w4a8_run_amx};
const Int4FloatKernels int4_f32_kernels_amx = {&w4a16_run_amx};

}  // namespace ck::cpu
#else  // not x86-64 GCC/Clang: never selected (detected_isa() is portable there)
namespace ck::cpu {
const Int4W4a8Kernels int4_w4a8_kernels_amx = int4_w4a8_kernels_portable;
const Int4FloatKernels int4_f32_kernels_amx = int4_f32_kernels_portable;
}  // namespace ck::cpu
#endif
