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
// loads, take the other half), i.e. 1.05-1.3x oneDNN's dense fp32 at M >= 256; at small M, where
// dense is bound by the weight stream, 2:4 reads half the bytes and gains 1.3-2.7x. This design
// was kept because it needs no transposed copy of x (no workspace) and no extra packed bytes.
//
// int8 (VNNI, vectorized over 16 output columns): per pair of groups h (eight k), the eight x bytes
// of a row are broadcast to every 128-bit lane, one `vpshufb` with the packed per-column control
// gathers each column's four x bytes, and one `vpdpbusd` multiplies them with the column's four
// stored weights: one shuffle plus one dot product per eight k, where dense needs two dot
// products. int8 x is biased to uint8 by flipping its sign bit and corrected in the epilogue, as
// in int8_gemm_avx512vnni.cpp; the epilogue is the shared fixed-point output stage.
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

// The eight x bytes of pair h in both halves of every 128-bit lane; only `bytes` (4 or 8) exist.
inline __m512i broadcast_x_pair(const uint8_t* p, int64_t bytes) {
  int64_t v = 0;
  std::memcpy(&v, p, static_cast<size_t>(bytes));
  return _mm512_set1_epi64(v);
}

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
// `controls`: null, or the panel's controls expanded by expand_controls (block v, pair h at
// controls[v * pairs + h]).
template <int MR, int NV, bool kSigned>
void int8_tile(const Sparse24Int8Args& a, int64_t m0, int64_t n0, const __m512i* controls) {
  const int64_t k = a.w.k, pairs = a.w.pairs, full_pairs = k / 8;
  const uint8_t* x = static_cast<const uint8_t*>(a.x) + m0 * a.ldx;
  const int8_t* wb[NV];
  for (int v = 0; v < NV; ++v) wb[v] = a.w.data + ((n0 / 16 + v) * pairs) * 80;
  const __m512i flip = _mm512_set1_epi8(static_cast<char>(0x80));

  __m512i acc[MR][NV];
  for (int r = 0; r < MR; ++r)
    for (int v = 0; v < NV; ++v) acc[r][v] = _mm512_setzero_si512();

  auto step = [&](int64_t h, int64_t bytes) {
    __m512i val[NV], ctl[NV];
    for (int v = 0; v < NV; ++v) {
      val[v] = _mm512_loadu_si512(wb[v] + h * 80);
      ctl[v] = controls != nullptr ? _mm512_load_si512(controls + v * pairs + h) : shuffle_control(wb[v] + h * 80 + 64);
    }
    for (int r = 0; r < MR; ++r) {
      __m512i xb = broadcast_x_pair(x + r * a.ldx + 8 * h, bytes);
      if (kSigned) xb = _mm512_xor_si512(xb, flip);
      for (int v = 0; v < NV; ++v)
        acc[r][v] = _mm512_dpbusd_epi32(acc[r][v], _mm512_shuffle_epi8(xb, ctl[v]), val[v]);
    }
  };
  for (int64_t h = 0; h < full_pairs; ++h) step(h, 8);
  if (pairs > full_pairs) step(full_pairs, 4);

  // bias[n] - (x_zero_point + 128 * kSigned) * row_sum[n], modulo 2^32.
  const __m512i zp_total = _mm512_set1_epi32(-(a.x_zero_point + (kSigned ? 128 : 0)));
  const RequantParams& p = a.requant;
  const ClampLanes clamp = clamp_lanes(p);
  const int64_t ldo = a.w.n;
  for (int v = 0; v < NV; ++v) {
    const int64_t n = n0 + 16 * v;
    const __mmask16 valid = lane_mask(a.w.n - n);
    __m512i column_term = _mm512_mullo_epi32(_mm512_maskz_loadu_epi32(valid, a.w.row_sum + n), zp_total);
    if (a.bias_i32 != nullptr) column_term = _mm512_add_epi32(column_term, _mm512_maskz_loadu_epi32(valid, a.bias_i32 + n));
    const RequantLanes lanes = p.per_channel ? requant_lanes(_mm512_maskz_loadu_epi32(valid, p.m0 + n),
                                                             _mm512_maskz_loadu_epi32(valid, p.shift + n))
                                             : requant_lanes(_mm512_set1_epi32(p.m0[0]), _mm512_set1_epi32(p.shift[0]));
    for (int r = 0; r < MR; ++r) {
      const __m512i y = multiply_by_quantized_multiplier(_mm512_add_epi32(acc[r][v], column_term), lanes, p.rounding);
      store_lanes(a.out, (m0 + r) * ldo + n, clamp_add_zero_point(y, clamp), valid, p.out_type);
    }
  }
}

using Int8TileFn = void (*)(const Sparse24Int8Args&, int64_t, int64_t, const __m512i*);

template <bool kSigned, int MR>
constexpr Int8TileFn int8_tile_row[2] = {int8_tile<MR, 1, kSigned>, int8_tile<MR, 2, kSigned>};

template <bool kSigned>
Int8TileFn pick_int8_tile(int mr, int nv) {
  static constexpr const Int8TileFn* rows[8] = {int8_tile_row<kSigned, 1>, int8_tile_row<kSigned, 2>,
                                                int8_tile_row<kSigned, 3>, int8_tile_row<kSigned, 4>,
                                                int8_tile_row<kSigned, 5>, int8_tile_row<kSigned, 6>,
                                                int8_tile_row<kSigned, 7>, int8_tile_row<kSigned, 8>};
  return rows[mr - 1][nv - 1];
}

}  // namespace

void sparse24_int8_run_avx512vnni(const Sparse24Int8Args& a, const Sparse24Int8Plan& plan, int64_t task_begin,
                                  int64_t task_end) {
  static_assert(kS24I8TileRows == 8 && kS24I8PanelBlocks == 2, "tile tables assume 8 x 2");
  constexpr int64_t panel_cols = kS24I8BlockCols * kS24I8PanelBlocks;
  // A task with more than one tile of rows expands its panel's controls once (64 bytes per block
  // and pair, K * 16 bytes for the panel, kept in L2) instead of once per tile: the expansion is
  // seven vector ops per block and pair, nearly as many as the shuffles and dot products of an 8-row tile.
  // Grown once per thread, reused by every later call.
  struct alignas(64) Control {
    int8_t bytes[64];
  };
  thread_local std::unique_ptr<Control[]> controls;
  thread_local int64_t capacity = 0;
  for (int64_t t = task_begin; t < task_end; ++t) {
    const int64_t panel = t / plan.row_chunks, chunk = t % plan.row_chunks;
    const int64_t m_begin = chunk * plan.chunk_rows, m_end = std::min(a.m, m_begin + plan.chunk_rows);
    const int64_t n0 = panel * panel_cols;
    const int nv = static_cast<int>(std::min<int64_t>(kS24I8PanelBlocks, (a.w.n - n0 + 15) / 16));
    const __m512i* expanded = nullptr;
    if (m_end - m_begin > kS24I8TileRows) {
      const int64_t pairs = a.w.pairs;
      if (capacity < kS24I8PanelBlocks * pairs) {
        capacity = kS24I8PanelBlocks * pairs;
        controls.reset(new Control[capacity]);  // C++17 aligned new: 64-byte aligned
      }
      for (int v = 0; v < nv; ++v) {
        const int8_t* wb = a.w.data + ((n0 / 16 + v) * pairs) * 80;
        for (int64_t h = 0; h < pairs; ++h)
          _mm512_store_si512(controls[v * pairs + h].bytes, shuffle_control(wb + h * 80 + 64));
      }
      expanded = reinterpret_cast<const __m512i*>(controls.get());
    }
    for (int64_t m = m_begin; m < m_end; m += kS24I8TileRows) {
      const int mr = static_cast<int>(std::min<int64_t>(kS24I8TileRows, m_end - m));
      Int8TileFn fn = a.x_signed ? pick_int8_tile<true>(mr, nv) : pick_int8_tile<false>(mr, nv);
      fn(a, m, n0, expanded);
    }
  }
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
