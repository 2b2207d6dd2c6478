// int8 2:4 kernel for AVX-512 VNNI + VBMI CPUs (sparse24_int8_avx512vnni-inl.h); compiled for VBMI by the
// pragma below, chosen at run time. Identical to the avx512vnni kernel except for the expansion of
// the metadata into vpshufb controls: one vpmultishiftqb picks every 2-bit position of a column's
// meta byte into its own control byte.
#include "sparse24.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,avx512vbmi,avx2,fma")
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#include <algorithm>
#include <cstring>
#include <memory>

#include "requant_avx512vnni-inl.h"

namespace ck::cpu {
namespace {

// dword i = (b & 3, (b >> 2) & 3, 4 + ((b >> 4) & 3), 4 + ((b >> 6) & 3)) for meta byte b of column
// i. Qwords 0-3 get meta bytes 0-7 and qwords 4-7 bytes 8-15 by two broadcast loads (no shuffle
// op: the second is a masked broadcast), so qword q holds the bytes of its columns 2q and 2q + 1
// at bytes 2 (q % 4) and 2 (q % 4) + 1. vpmultishiftqb copies to byte j of dword d of the qword
// the 8 bits starting at bit 8 (2 (q % 4) + d) + 2j; the ternary-logic op keeps the two low bits
// of each byte and sets bit 2 of bytes 2 and 3. One shuffle-pipe op per 16 columns (vpmovzxbd
// would be a second), which matters at small M where the expansion is shared by few rows.
inline __m512i shuffle_control(const int8_t* meta16) {
  int64_t low = 0, high = 0;
  std::memcpy(&low, meta16, 8);
  std::memcpy(&high, meta16 + 8, 8);
  const __m512i bytes = _mm512_mask_set1_epi64(_mm512_set1_epi64(low), 0xF0, high);
  // Offsets of qword q % 4 = 0..3: 8 (2 (q % 4) + d) + 2j for bytes j + 4d.
  const __m512i offsets =
      _mm512_set_epi64(0x3E3C3A3836343230LL, 0x2E2C2A2826242220LL, 0x1E1C1A1816141210LL, 0x0E0C0A0806040200LL,
                       0x3E3C3A3836343230LL, 0x2E2C2A2826242220LL, 0x1E1C1A1816141210LL, 0x0E0C0A0806040200LL);
  const __m512i fields = _mm512_multishift_epi64_epi8(offsets, bytes);
  return _mm512_ternarylogic_epi32(fields, _mm512_set1_epi32(0x03030303), _mm512_set1_epi32(0x04040000), 0xEA);
}

#include "sparse24_int8_avx512vnni-inl.h"

}  // namespace

void sparse24_int8_run_avx512vbmi(const Sparse24Int8Args& a, const Sparse24Int8Plan& plan, int64_t task_begin,
                                  int64_t task_end) {
  int8_run_zmm(a, plan, task_begin, task_end);
}

const Sparse24Int8Kernels sparse24_int8_kernels_avx512vbmi = {&sparse24_int8_run_avx512vbmi};

}  // namespace ck::cpu
#else  // not x86-64 GCC/Clang: never selected (detected_isa() is portable there)
namespace ck::cpu {
const Sparse24Int8Kernels sparse24_int8_kernels_avx512vbmi = {&sparse24_int8_run_portable};
}  // namespace ck::cpu
#endif
