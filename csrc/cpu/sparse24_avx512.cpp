// AVX-512 2:4 sparse kernels; compiled for AVX-512 by the pragma below, chosen at run time.
//
// fp32 (vectorized over the eight interleaved columns of a packed block): the four x of a group
// are broadcast to both 128-bit lanes of a ymm and one `vpermilps`, controlled by the columns'
// metadata bytes, picks each column's x for a stored value; one FMA with the eight stored values
// follows. Each output's chain is acc = fma(v[j], x[k_j], acc) for j in order, then + bias: the
// order of the portable path, so results are bit-identical. A task owns 48 rows and 256 columns
// and walks k in blocks of 512, with 4 rows x 2 blocks of accumulators in registers (partial sums
// wait in out between k blocks); a single row runs 4 blocks side by side instead.
// Where the cycles go: every useful FMA needs one shuffle (its x differs per column). A rows-
// vectorized design (x transposed, one broadcast weight times a 16-row x vector whose address
// comes from the metadata) needs one 64-byte x load per FMA instead. Both measured at the same
// ~105 GFLOP/s dense-equivalent on one Zen 4 core (about half its FMA peak: the shuffles, or the
// loads, take the other half), i.e. 1.1-1.25x oneDNN's dense fp32 at M >= 256; at small M, where
// dense is bound by the weight stream, 2:4 reads half the bytes and gains 1.3-5x. This design
// was kept because it needs no transposed copy of x (no workspace) and no extra packed bytes.
// The kernels themselves live in sparse24_f32_ymm.h (shared with the AVX2 path).
//
// int8 (VNNI, vectorized over 16 output columns): per pair of groups h (eight k), the eight x bytes
// of a row are broadcast to every 128-bit lane, one `vpshufb` with a per-column control (expanded
// from the packed meta bytes, see shuffle_control) gathers each column's four x bytes, and one
// `vpdpbusd` multiplies them with the column's four stored weights: one shuffle plus one dot
// product per eight k, where dense needs two dot products. int8 x is biased to uint8 by flipping
// its sign bit and corrected in the epilogue, as in int8_gemm_avx512vnni.cpp; the epilogue is the
// shared fixed-point output stage. The kernel lives in sparse24_int8_zmm.h (shared with the
// avx512vbmi path, which expands the controls with one vpmultishiftqb).
#include "sparse24.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,avx2,fma")
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#include <algorithm>
#include <cstring>
#include <memory>

#include "requant_avx512.h"

namespace ck::cpu {
namespace {

constexpr int kF32Rows = 4;    // 4 x 2 ymm accumulators + 8 controls + 2 x: 32 registers leave room
constexpr int kF32Blocks = 2;

inline __m256 load_columns(const float* p, int count) {
  return _mm256_maskz_loadu_ps(static_cast<__mmask8>((1u << count) - 1), p);
}
inline void store_columns(float* p, int count, __m256 v) {
  _mm256_mask_storeu_ps(p, static_cast<__mmask8>((1u << count) - 1), v);
}

#include "sparse24_f32_ymm.h"

}  // namespace

void sparse24_f32_run_avx512(const Sparse24F32Args& a, const Sparse24Plan& plan, int64_t task_begin,
                             int64_t task_end) {
  f32_run_ymm(a, plan, task_begin, task_end);
}

// ---------------------------------------------------------------- int8

namespace {

// The vpshufb control of 16 columns from their 16 meta bytes b: dword i = bytes
// (b & 3, (b >> 2) & 3, 4 + ((b >> 4) & 3), 4 + ((b >> 6) & 3)). OR-ing b shifted by 0, 6, 12 and 18
// places bits 2j..2j+1 of b at the bottom of byte j (no carries, unlike a multiply); one
// ternary-logic op keeps those two bits of every byte and sets bit 2 of bytes 2 and 3.
inline __m512i shuffle_control(const int8_t* meta16) {
  const __m512i b = _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(meta16)));
  const __m512i spread = _mm512_ternarylogic_epi32(b, _mm512_slli_epi32(b, 6), _mm512_slli_epi32(b, 12), 0xFE);
  const __m512i all = _mm512_or_si512(spread, _mm512_slli_epi32(b, 18));
  // (all & 0x03030303) | 0x04040000: A = all, B = mask, C = bits to set; imm = (A & B) | C = 0xEA.
  return _mm512_ternarylogic_epi32(all, _mm512_set1_epi32(0x03030303), _mm512_set1_epi32(0x04040000), 0xEA);
}

// MR: rows of x in the tile (1..8; 16 accumulators + 2 values + 2 controls + x fit the 32 zmm). NV: blocks of 16 columns (1..2). kSigned: int8 x (sign flip).
#include "sparse24_int8_zmm.h"

}  // namespace

void sparse24_int8_run_avx512vnni(const Sparse24Int8Args& a, const Sparse24Int8Plan& plan, int64_t task_begin,
                                  int64_t task_end) {
  int8_run_zmm(a, plan, task_begin, task_end);
}

}  // namespace ck::cpu

#else  // not x86-64 GCC/Clang: never selected (detected_isa() is portable there)

namespace ck::cpu {
void sparse24_f32_run_avx512(const Sparse24F32Args& a, const Sparse24Plan& plan, int64_t b, int64_t e) {
  sparse24_f32_run_portable(a, plan, b, e);
}
void sparse24_int8_run_avx512vnni(const Sparse24Int8Args& a, const Sparse24Int8Plan& plan, int64_t b, int64_t e) {
  sparse24_int8_run_portable(a, plan, b, e);
}
}  // namespace ck::cpu

#endif
