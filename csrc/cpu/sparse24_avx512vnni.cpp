// AVX-512 2:4 sparse kernels; compiled for AVX-512 by the pragma below, chosen at run time.
//
// fp32, two kernels, both computing each output's chain acc = fma(v[j], x[k_j], acc) for j in order,
// then + bias (the portable path's order, so results are bit-identical):
// - tasks of >= 16 rows: vectorized over rows (f32_task_rows_zmm below). x is transposed a k block
//   of 128 at a time; each stored value is broadcast once and multiplied with 1-3 vectors of 16 rows
//   of x loaded from the k its metadata names (the address is computed in general-purpose
//   registers). Loads select x, so the FP pipes only do FMAs: ~75% of the FMA peak from L1 with 48
//   rows (the loads are the limit: two 256-bit loads per cycle on Zen 4, seven per three FMAs).
// - fewer rows: vectorized over the eight interleaved columns of a packed block
//   (sparse24_f32_avx2-inl.h, shared with the AVX2 path): the four x of a group are broadcast to both
//   128-bit lanes and one `vpermilps`, controlled by the columns' metadata bytes, picks each
//   column's x for a stored value; one FMA with the eight stored values follows. It needs no
//   transposition, but one shuffle per FMA, and on Zen 4 shuffles and FMAs share a pipe: ~55% of
//   the FMA peak at best, which is plenty where the weight stream is the limit (small M).
// Measured on one Zen 4 core (benchmarks/bench_sparse24.py): rows kernel 1.6-1.8x oneDNN's dense
// fp32 at M >= 64; the shuffle kernel alone reached 1.13-1.34x there, and 2.3-5x at M <= 8.
//
// int8 (VNNI, vectorized over 16 output columns): per pair of groups h (eight k), the eight x bytes
// of a row are broadcast to every 128-bit lane, one `vpshufb` with a per-column control (expanded
// from the packed meta bytes, see shuffle_control) gathers each column's four x bytes, and one
// `vpdpbusd` multiplies them with the column's four stored weights: one shuffle plus one dot
// product per eight k, where dense needs two dot products. int8 x is biased to uint8 by flipping
// its sign bit and corrected in the epilogue, as in int8_gemm_avx512vnni.cpp; the epilogue is the
// shared fixed-point output stage. The kernel lives in sparse24_int8_avx512vnni-inl.h (shared with the
// avx512vbmi path, which expands the controls with one vpmultishiftqb).
#include "sparse24.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,avx2,fma")
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#include <algorithm>
#include <cstring>
#include <memory>

#include "requant_avx512vnni-inl.h"

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

#include "sparse24_f32_avx2-inl.h"

// ---------------------------------------------------------------- fp32, tasks of many rows

// The rows kernel of sparse24_f32_rows-inl.h on zmm: 16 rows per vector, 8 columns x up to 3 vectors
// of accumulators (24 of the 32 registers).
using RowsVec = __m512;
constexpr int64_t kRowsLanes = 16;
constexpr int kRowsColumns = 8;
constexpr int kRowsVectors = 3;
inline __m512 rows_zero() { return _mm512_setzero_ps(); }
inline __m512 rows_load(const float* p) { return _mm512_load_ps(p); }
inline void rows_store(float* p, __m512 v) { _mm512_store_ps(p, v); }
inline __m512 rows_broadcast(const float* p) { return _mm512_set1_ps(*p); }
inline __m512 rows_fma(__m512 a, __m512 b, __m512 c) { return _mm512_fmadd_ps(a, b, c); }

// In place: r[j] (row j of a 16 x 16 block) becomes column j (the classic unpack / unpack /
// 128-bit-lane shuffle transpose, 64 shuffles).
inline void transpose16(__m512 r[16]) {
  __m512 t[16];
#pragma GCC unroll 8
  for (int i = 0; i < 16; i += 2) {
    t[i] = _mm512_unpacklo_ps(r[i], r[i + 1]);
    t[i + 1] = _mm512_unpackhi_ps(r[i], r[i + 1]);
  }
#pragma GCC unroll 4
  for (int i = 0; i < 16; i += 4) {
    r[i] = _mm512_castpd_ps(_mm512_unpacklo_pd(_mm512_castps_pd(t[i]), _mm512_castps_pd(t[i + 2])));
    r[i + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(_mm512_castps_pd(t[i]), _mm512_castps_pd(t[i + 2])));
    r[i + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(_mm512_castps_pd(t[i + 1]), _mm512_castps_pd(t[i + 3])));
    r[i + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(_mm512_castps_pd(t[i + 1]), _mm512_castps_pd(t[i + 3])));
  }
  // Each 128-bit lane now holds a 4 x 4 sub-block transposed; move the lanes into place.
#pragma GCC unroll 4
  for (int i = 0; i < 4; ++i) {
    t[i] = _mm512_shuffle_f32x4(r[i], r[4 + i], 0x88);
    t[4 + i] = _mm512_shuffle_f32x4(r[i], r[4 + i], 0xDD);
    t[8 + i] = _mm512_shuffle_f32x4(r[8 + i], r[12 + i], 0x88);
    t[12 + i] = _mm512_shuffle_f32x4(r[8 + i], r[12 + i], 0xDD);
  }
#pragma GCC unroll 4
  for (int i = 0; i < 4; ++i) {
    r[i] = _mm512_shuffle_f32x4(t[i], t[8 + i], 0x88);
    r[4 + i] = _mm512_shuffle_f32x4(t[4 + i], t[12 + i], 0x88);
    r[8 + i] = _mm512_shuffle_f32x4(t[i], t[8 + i], 0xDD);
    r[12 + i] = _mm512_shuffle_f32x4(t[4 + i], t[12 + i], 0xDD);
  }
}

inline __mmask16 first_lanes(int64_t count) { return static_cast<__mmask16>((1u << count) - 1); }

// dst[j * ldd + i] = src[i * lds + j] + add[i] for j < cols and i < dst_lanes (rows, cols <= 16); lanes
// i >= rows read src as 0 (zero padding). add: null (nothing added) or dst_lanes floats.
inline void transpose_block(const float* src, int64_t lds, int64_t rows, int64_t cols, float* dst, int64_t ldd,
                            int64_t dst_lanes, const float* add) {
  __m512 r[16];
  const __mmask16 col_mask = first_lanes(cols);
#pragma GCC unroll 16
  for (int i = 0; i < 16; ++i) r[i] = i < rows ? _mm512_maskz_loadu_ps(col_mask, src + i * lds) : _mm512_setzero_ps();
  transpose16(r);
  const __mmask16 lanes = first_lanes(dst_lanes);
  const __m512 extra = add != nullptr ? _mm512_maskz_loadu_ps(lanes, add) : _mm512_setzero_ps();
#pragma GCC unroll 16
  for (int j = 0; j < 16; ++j) {
    if (j < cols) _mm512_mask_storeu_ps(dst + j * ldd, lanes, add != nullptr ? _mm512_add_ps(r[j], extra) : r[j]);
  }
}

#include "sparse24_f32_rows-inl.h"

}  // namespace

void sparse24_f32_run_avx512vnni(const Sparse24F32Args& a, const Sparse24Plan& plan, int64_t task_begin,
                                 int64_t task_end) {
  f32_run_rows_or_ymm(a, plan, task_begin, task_end);
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

// MR: rows of x in the tile (1..8; 16 accumulators + 2 values + 2 controls + x fit the 32 zmm). NV: blocks of 16
// columns (1..2). kSigned: int8 x (sign flip).
#include "sparse24_int8_avx512vnni-inl.h"

}  // namespace

void sparse24_int8_run_avx512vnni(const Sparse24Int8Args& a, const Sparse24Int8Plan& plan, int64_t task_begin,
                                  int64_t task_end) {
  int8_run_zmm(a, plan, task_begin, task_end);
}

const Sparse24F32Kernels sparse24_f32_kernels_avx512vnni = {&sparse24_f32_run_avx512vnni};
const Sparse24Int8Kernels sparse24_int8_kernels_avx512vnni = {&sparse24_int8_run_avx512vnni};

}  // namespace ck::cpu
#else  // not x86-64 GCC/Clang: never selected (detected_isa() is portable there)
namespace ck::cpu {
const Sparse24F32Kernels sparse24_f32_kernels_avx512vnni = {&sparse24_f32_run_portable};
const Sparse24Int8Kernels sparse24_int8_kernels_avx512vnni = {&sparse24_int8_run_portable};
}  // namespace ck::cpu
#endif
