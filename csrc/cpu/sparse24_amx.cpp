// The AMX int8 2:4 kernel on the tile instructions, with the AVX-512 expansion of the 2:4 blocks
// into dense tiles and the AVX-512 output stage. Chosen at run time (tile_unit() == kHardware).
#include "sparse24.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,amx-tile,amx-int8,amx-bf16")
// GCC 12 reports its own intrinsics' _mm512_undefined_* placeholders as uninitialized.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#include "amx_hardware_tiles-inl.h"
#include "int8_gemm_amx-inl.h"
#include "int8_output_avx512vnni-inl.h"
#include "sparse24_int8_amx-inl.h"

namespace ck::cpu {
namespace {

// The position pattern of a meta nibble (i0 | i1 << 2) as one dword of vpshufb controls: byte j
// picks stored value `second` when j == i1, `first` when j == i0 (i1 wins when they are equal, as
// in the portable expansion), else 0x80 (zero).
constexpr uint32_t nibble_pattern(int nibble, int first, int second) {
  uint32_t dword = 0;
  for (int j = 0; j < 4; ++j) {
    const uint32_t byte = j == (nibble >> 2) ? second : j == (nibble & 3) ? first : 0x80;
    dword |= byte << (8 * j);
  }
  return dword;
}

template <int kFirst>
__m512i pattern_table() {
  alignas(64) uint32_t t[16];
  for (int n = 0; n < 16; ++n) t[n] = nibble_pattern(n, kFirst, kFirst + 1);
  return _mm512_load_si512(t);
}

// Per 80-byte pair: the 16 meta bytes widened to dwords, each nibble looked up in a 16-dword
// pattern table (vpermd), offset to its column's dword within the 128-bit lane (+4 * (i % 4) on
// every byte: a 0x80 byte stays >= 0x80, still zero), then one vpshufb of the 64 value bytes per
// group: 128 dense bytes from 6 vector ops after the loads.
struct Avx512Expand {
  static void pairs(const int8_t* block, int64_t pairs, int64_t groups, uint8_t* tiles) {
    const __m512i low_table = pattern_table<0>(), high_table = pattern_table<2>();
    const __m512i lane_offset =
        _mm512_set_epi32(0x0C0C0C0C, 0x08080808, 0x04040404, 0, 0x0C0C0C0C, 0x08080808, 0x04040404, 0, 0x0C0C0C0C,
                         0x08080808, 0x04040404, 0, 0x0C0C0C0C, 0x08080808, 0x04040404, 0);
    for (int64_t h = 0; h < pairs; ++h) {
      const int8_t* pair = block + h * 80;
      const __m512i values = _mm512_loadu_si512(pair);
      const __m512i meta = _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(pair + 64)));
      // vpermd reads only bits 3:0 of each index: the nibbles need no mask.
      const __m512i low = _mm512_add_epi8(_mm512_permutexvar_epi32(meta, low_table), lane_offset);
      const __m512i high =
          _mm512_add_epi8(_mm512_permutexvar_epi32(_mm512_srli_epi32(meta, 4), high_table), lane_offset);
      _mm512_storeu_si512(tiles + (2 * h) * 64, _mm512_shuffle_epi8(values, low));
      _mm512_storeu_si512(tiles + (2 * h + 1) * 64, _mm512_shuffle_epi8(values, high));
    }
    std::memset(tiles + 2 * pairs * 64, 0, static_cast<size_t>(groups - 2 * pairs) * 64);
  }
};

}  // namespace

void sparse24_int8_run_amx(const Sparse24Int8Args& a, const Sparse24Int8Plan& plan, int64_t task_begin,
                           int64_t task_end) {
  sparse24_int8_amx_tasks<HardwareTiles, Avx512Output, Avx512Expand>(a, plan, task_begin, task_end);
}

}  // namespace ck::cpu
#else  // not x86-64 GCC/Clang: never selected (detected_isa() is portable there)
namespace ck::cpu {
void sparse24_int8_run_amx(const Sparse24Int8Args& a, const Sparse24Int8Plan& plan, int64_t task_begin,
                           int64_t task_end) {
  sparse24_int8_run_portable(a, plan, task_begin, task_end);
}
}  // namespace ck::cpu
#endif

namespace ck::cpu {
const Sparse24Int8Kernels sparse24_int8_kernels_amx = {&sparse24_int8_run_amx};
}  // namespace ck::cpu
