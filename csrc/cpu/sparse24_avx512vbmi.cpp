// int8 2:4 kernel for AVX-512 VNNI + VBMI CPUs (sparse24_int8_zmm.h); compiled for VBMI by the
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

#include "requant_avx512.h"

namespace ck::cpu {
namespace {

// dword i = (b & 3, (b >> 2) & 3, 4 + ((b >> 4) & 3), 4 + ((b >> 6) & 3)) for meta byte b of column
// i. vpmovzxbd puts b_i in the low byte of dword i (columns 2q and 2q + 1 at bits 0 and 32 of
// qword q); vpmultishiftqb copies to byte j of the qword the 8 bits starting at bit ctl_j
// (0, 2, 4, 6 for the first column, 32, 34, 36, 38 for the second); the ternary-logic op keeps the
// two low bits of each byte and sets bit 2 of bytes 2 and 3.
inline __m512i shuffle_control(const int8_t* meta16) {
  const __m512i b = _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(meta16)));
  const __m512i offsets = _mm512_set1_epi64(0x2624222006040200LL);
  const __m512i fields = _mm512_multishift_epi64_epi8(offsets, b);
  return _mm512_ternarylogic_epi32(fields, _mm512_set1_epi32(0x03030303), _mm512_set1_epi32(0x04040000), 0xEA);
}

#include "sparse24_int8_zmm.h"

}  // namespace

void sparse24_int8_run_avx512vbmi(const Sparse24Int8Args& a, const Sparse24Int8Plan& plan, int64_t task_begin,
                                  int64_t task_end) {
  int8_run_zmm(a, plan, task_begin, task_end);
}

}  // namespace ck::cpu

#else  // not x86-64 GCC/Clang: never selected (detected_isa() is portable there)

namespace ck::cpu {
void sparse24_int8_run_avx512vbmi(const Sparse24Int8Args& a, const Sparse24Int8Plan& plan, int64_t b, int64_t e) {
  sparse24_int8_run_portable(a, plan, b, e);
}
}  // namespace ck::cpu

#endif
