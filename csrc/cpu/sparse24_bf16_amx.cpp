// The bf16 2:4 linear on the tile instructions, with an AVX-512 expansion of the 2:4 groups into dense bf16 tile rows
// and the AVX-512 output stage. Chosen at run time (tile_unit() == kHardware).
#include "sparse24.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,avx512vbmi,amx-tile,amx-int8,amx-bf16")
// GCC 12 reports its own intrinsics' _mm512_undefined_* placeholders as uninitialized.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#include <immintrin.h>

#include "amx_hardware_tiles-inl.h"
#include "bf16_avx512-inl.h"
#include "sparse24_bf16_amx-inl.h"

namespace ck::cpu {
namespace {

// The vpshufb control of one tile row of a group (positions 2 * half and 2 * half + 1) for a column whose stored
// pair (v0, v1) is the dword at bytes 0-3: word w takes v1 (bytes 2, 3) when the nibble puts v1 at position
// 2 * half + w, v0 (bytes 0, 1) when it puts v0 there, else zero (0x80).
constexpr uint32_t pair_control(int nibble, int half) {
  uint32_t dword = 0;
  for (int w = 0; w < 2; ++w) {
    const int p = 2 * half + w;
    const uint32_t lo = sparse24::position(nibble, 1) == p ? 2 : sparse24::position(nibble, 0) == p ? 0 : 0x80;
    const uint32_t hi = lo == 0x80 ? 0x80 : lo + 1;
    dword |= (lo | hi << 8) << (16 * w);
  }
  return dword;
}

template <int kHalf>
__m512i pair_control_table() {
  alignas(64) uint32_t t[16];
  for (int n = 0; n < 16; ++n) t[n] = pair_control(n, kHalf);
  return _mm512_load_si512(t);
}

// Per pair of groups h (8 k = 4 tile rows): the 16 meta bytes widened to dwords; per group and tile row, its
// nibble looks up a control dword (vpermd), offset to its column's dword within the 128-bit lane (+4 * (i % 4) on
// every byte: a 0x80 byte stays >= 0x80, still zero), and one vpshufb of the group's 64 value bytes writes the row.
struct Avx512Sparse24Decode {
  static void block(const Sparse24Bf16Args& a, int64_t n0, int cols, int64_t chunks, uint8_t* dst) {
    (void)cols;  // the packed block always holds 16 columns (zeros past N)
    const __m512i control[2] = {pair_control_table<0>(), pair_control_table<1>()};
    const __m512i lane_offsets =
        _mm512_set_epi32(0x0c0c0c0c, 0x08080808, 0x04040404, 0, 0x0c0c0c0c, 0x08080808, 0x04040404, 0, 0x0c0c0c0c,
                         0x08080808, 0x04040404, 0, 0x0c0c0c0c, 0x08080808, 0x04040404, 0);
    const __m512i nibble = _mm512_set1_epi32(0xF);
    const int64_t pairs = (a.k + 7) / 8;
    for (int64_t h = 0; h < pairs; ++h) {
      const uint16_t* pair = sparse24_bf16_pair(a, n0, h);
      const __m512i meta = _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(pair + 64)));
#pragma GCC unroll 2
      for (int s = 0; s < 2; ++s) {
        const __m512i values = _mm512_loadu_si512(pair + 32 * s);
        const __m512i nib = _mm512_and_si512(s == 0 ? meta : _mm512_srli_epi32(meta, 4), nibble);
#pragma GCC unroll 2
        for (int half = 0; half < 2; ++half) {
          const __m512i c = _mm512_add_epi8(_mm512_permutexvar_epi32(nib, control[half]), lane_offsets);
          _mm512_storeu_si512(dst + amx_bf16_offset(8 * h + 4 * s + 2 * half), _mm512_shuffle_epi8(values, c));
        }
      }
    }
    // the rows past the last pair of groups, up to the chunk's end
    for (int64_t kk = 8 * pairs; kk < chunks * kAmxBf16ChunkK; kk += 2) {
      _mm512_storeu_si512(dst + amx_bf16_offset(kk), _mm512_setzero_si512());
    }
  }
};

}  // namespace

void sparse24_bf16_tiles_run_amx(const Sparse24Bf16Args& args, const Int8GemmPlan& plan, int64_t task_begin,
                                 int64_t task_end) {
  amx_bf16_family_tasks<HardwareTiles, Avx512Bf16Row, Avx512Sparse24Decode>(args, plan, task_begin, task_end);
}

}  // namespace ck::cpu
#else  // not x86-64 GCC/Clang: never selected (detected_isa() is portable there)
namespace ck::cpu {
void sparse24_bf16_tiles_run_amx(const Sparse24Bf16Args& args, const Int8GemmPlan& plan, int64_t task_begin,
                                 int64_t task_end) {
  sparse24_bf16_tile_kernels_amx_emulated.run(args, plan, task_begin, task_end);
}
}  // namespace ck::cpu
#endif

namespace ck::cpu {
const Sparse24Bf16TileKernels sparse24_bf16_tile_kernels_amx = {&sparse24_bf16_tiles_run_amx};
}  // namespace ck::cpu
