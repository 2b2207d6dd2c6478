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

// ---------------------------------------------------------------- fp32, tasks of many rows
//
// Vectorized over rows: x of the task is transposed, a k block at a time, into xt [kc][16 RV]
// (rows padded with zeros to 16 RV, RV = 1..3 vectors of 16 rows), and for every stored value
// (column c, slot j) one broadcast of the value times the RV row vectors of xt at the k the
// metadata names: RV FMAs per broadcast, and the x operands are plain loads whose address is
// computed from the meta byte in general-purpose registers. Loads, not shuffles, select x here;
// a Zen 4 core sustains two 256-bit loads per cycle, so with RV = 3 (seven 256-bit loads per
// three zmm FMAs) the kernel runs at ~75% of the FMA peak from L1, where the shuffle design of
// sparse24_f32_ymm.h stays near 55% (one shuffle per FMA, and shuffles and FMAs share a pipe). The accumulators [8 columns][16 RV rows] of a block live in accT
// [panel columns][16 RV] between k blocks and are transposed into out (+ bias) at the end.
// Each output's chain is still acc = fma(v[j], x[k_j], acc) for j in order, then + bias.

constexpr int64_t kRowsDepth = 128;  // k per block: xt (128 x 48 floats = 24 KiB) stays in L1
constexpr int64_t kRowsMin = 16;     // fewer rows per task run the shuffle kernels (no transposition)
constexpr int64_t kRowsMaxVectors = kS24TileRows / 16;
static_assert(kS24TileRows % 16 == 0 && kRowsMaxVectors <= 3, "accumulators: 8 columns x 3 row vectors");

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

// One block of 8 columns over a k block: acc [8][16 RV] (loaded unless first) += values x xt.
// v / mb: the block's values and meta bytes from the k block's first pair; `pairs` full pairs of
// groups, then one more group when half_pair (the low nibble of the next meta byte).
template <int RV>
void f32_rows_kernel(const float* xt, const float* v, const uint8_t* mb, int64_t pairs, bool half_pair, float* acc_io,
                     bool first) {
  constexpr int64_t ld = 16 * RV;                  // floats per k of xt
  constexpr int64_t row_bytes = ld * 4;
  __m512 acc[8][RV];
#pragma GCC unroll 8
  for (int c = 0; c < 8; ++c)
#pragma GCC unroll 3
    for (int r = 0; r < RV; ++r) acc[c][r] = first ? _mm512_setzero_ps() : _mm512_load_ps(acc_io + c * ld + 16 * r);
  const char* xg = reinterpret_cast<const char*>(xt);  // x of the pair's first group
  auto step = [&](uint64_t meta8, const float* vh, int slots) {
#pragma GCC unroll 8
    for (int c = 0; c < 8; ++c) {
#pragma GCC unroll 4
      for (int j = 0; j < 4; ++j) {
        if (j >= slots) break;
        // Slot j of column c: position (meta >> (8c + 2j)) & 3 in group j / 2 of the pair.
        const uint64_t position = (meta8 >> (8 * c + 2 * j)) & 3;
        const float* xp = reinterpret_cast<const float*>(xg + position * row_bytes + (j / 2) * 4 * row_bytes);
        const __m512 w = _mm512_set1_ps(vh[j * 8 + c]);
#pragma GCC unroll 3
        for (int r = 0; r < RV; ++r) acc[c][r] = _mm512_fmadd_ps(w, _mm512_load_ps(xp + 16 * r), acc[c][r]);
      }
    }
  };
  for (int64_t h = 0; h < pairs; ++h) {
    uint64_t meta8;
    std::memcpy(&meta8, mb + 8 * h, 8);
    step(meta8, v + 32 * h, 4);
    xg += 8 * row_bytes;
  }
  if (half_pair) {
    uint64_t meta8;
    std::memcpy(&meta8, mb + 8 * pairs, 8);
    step(meta8, v + 32 * pairs, 2);
  }
#pragma GCC unroll 8
  for (int c = 0; c < 8; ++c)
#pragma GCC unroll 3
    for (int r = 0; r < RV; ++r) _mm512_store_ps(acc_io + c * ld + 16 * r, acc[c][r]);
}

// Thread-local, 64-byte aligned: xt [kRowsDepth][48] then accT [kS24PanelCols][48].
float* rows_workspace() {
  constexpr int64_t floats = (kRowsDepth + kS24PanelCols) * kS24TileRows + 16;
  thread_local std::unique_ptr<float[]> buffer(new float[floats]);
  const auto address = reinterpret_cast<uintptr_t>(buffer.get());
  return reinterpret_cast<float*>((address + 63) & ~static_cast<uintptr_t>(63));
}

template <int RV>
void f32_task_rows_zmm(const Sparse24F32Args& a, int64_t m_begin, int64_t m_end, int64_t n_begin, int64_t n_end) {
  constexpr int64_t ld = 16 * RV;
  const int64_t k = a.k, rows = m_end - m_begin, cols = n_end - n_begin, blocks = (cols + 7) / 8;
  const int64_t half = k / 2, block = sparse24_f32_block_floats(k);
  float* xt = rows_workspace();
  float* acc = xt + kRowsDepth * kS24TileRows;
  for (int64_t kb = 0; kb < k; kb += kRowsDepth) {
    const int64_t kc = std::min(kRowsDepth, k - kb);
    for (int64_t r = 0; r < rows; r += 16) {
      for (int64_t k0 = 0; k0 < kc; k0 += 16) {
        transpose_block(a.x + (m_begin + r) * a.ldx + kb + k0, a.ldx, std::min<int64_t>(16, rows - r),
                        std::min<int64_t>(16, kc - k0), xt + k0 * ld + r, ld, 16, nullptr);
      }
    }
    for (int64_t b = 0; b < blocks; ++b) {
      const float* v = a.packed + (n_begin / 8 + b) * block;
      const uint8_t* mb = reinterpret_cast<const uint8_t*>(v + 8 * half);
      f32_rows_kernel<RV>(xt, v + (kb / 2) * 8, mb + (kb / 8) * 8, kc / 8, kc % 8 != 0, acc + b * 8 * ld, kb == 0);
    }
  }
  for (int64_t r = 0; r < rows; r += 16) {
    for (int64_t c = 0; c < cols; c += 16) {
      transpose_block(acc + c * ld + r, ld, std::min<int64_t>(16, cols - c), std::min<int64_t>(16, rows - r),
                      a.out + (m_begin + r) * a.n + n_begin + c, a.n, std::min<int64_t>(16, cols - c),
                      a.bias != nullptr ? a.bias + n_begin + c : nullptr);
    }
  }
}

}  // namespace

void sparse24_f32_run_avx512(const Sparse24F32Args& a, const Sparse24Plan& plan, int64_t task_begin,
                             int64_t task_end) {
  static_assert(kRowsDepth % 8 == 0 && kS24PanelCols % 16 == 0, "k blocks of meta bytes, output blocks of 16");
  for (int64_t t = task_begin; t < task_end; ++t) {
    int64_t m_begin = 0, m_end = 0, n_begin = 0, n_end = 0;
    plan.task_bounds(a, t, &m_begin, &m_end, &n_begin, &n_end);
    switch (m_end - m_begin < kRowsMin ? 0 : (m_end - m_begin + 15) / 16) {
      case 1: f32_task_rows_zmm<1>(a, m_begin, m_end, n_begin, n_end); break;
      case 2: f32_task_rows_zmm<2>(a, m_begin, m_end, n_begin, n_end); break;
      case 3: f32_task_rows_zmm<3>(a, m_begin, m_end, n_begin, n_end); break;
      default: f32_task_ymm(a, m_begin, m_end, n_begin, n_end); break;
    }
  }
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
