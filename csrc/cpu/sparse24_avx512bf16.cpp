// bf16 2:4 kernel for CPUs with AVX-512 VBMI + BF16 (Zen 4, Sapphire Rapids); compiled for them by
// the pragma below, chosen at run time (sparse24_bf16_run). Semantics: sparse24.h (vdpbf16ps).
//
// Vectorized over 16 output columns like the int8 kernel: per group of four k, the row's eight bf16
// x of the pair of groups are broadcast to every 128-bit lane, one `vpshufb` with a per-column
// control picks each column's two x (as the dword (x[k0], x[k1])), and one `vdpbf16ps` multiplies
// them with the column's two stored values and adds both products to its fp32 accumulator. Dense
// bf16 needs two vdpbf16ps per group of four k where 2:4 needs one shuffle and one. The controls
// come from the packed meta bytes in registers: one vpmultishiftqb and one ternary-logic op per 16
// columns and group, shared by the 8 rows of a tile.
#include "sparse24.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq,avx512vbmi,avx512bf16,avx2,fma")
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#include <immintrin.h>

#include <algorithm>
#include <cstring>
#include <memory>

#include "bf16_avx512-inl.h"

namespace ck::cpu {
namespace {

// Qword of vpmultishiftqb offsets for the two columns at bytes 2c, 2c + 1 of a qword: byte j of
// dword d starts at bit 8 (2c + d) + lo (j = 0, 1) or + hi (j = 2, 3), mod 64.
constexpr int64_t multishift_offsets(int c, int lo, int hi) {
  uint64_t q = 0;
  for (int d = 0; d < 2; ++d)
    for (int j = 0; j < 4; ++j)
      q |= static_cast<uint64_t>((8 * (2 * c + d) + (j < 2 ? lo : hi) + 64) % 64) << (8 * (4 * d + j));
  return static_cast<int64_t>(q);
}
template <int lo, int hi>
inline __m512i offsets_vector() {
  constexpr int64_t c0 = multishift_offsets(0, lo, hi), c1 = multishift_offsets(1, lo, hi),
                    c2 = multishift_offsets(2, lo, hi), c3 = multishift_offsets(3, lo, hi);
  return _mm512_set_epi64(c3, c2, c1, c0, c3, c2, c1, c0);
}

// The vpshufb controls of the two groups of a pair for 16 columns from their 16 meta bytes b:
// dword i of group 0 = bytes (2 p0, 2 p0 + 1, 2 p1, 2 p1 + 1) with p0 = b & 3, p1 = (b >> 2) & 3
// (the bf16 x[k0], x[k1] of the lane's eight); group 1 the same with (b >> 4) & 3, (b >> 6) & 3 and
// + 8. As in the int8 VBMI kernel, qwords 0-3 hold meta bytes 0-7 and qwords 4-7 bytes 8-15 (two
// broadcast loads), so qword q has its columns 2q, 2q + 1 at bytes 2 (q % 4) and 2 (q % 4) + 1.
// vpmultishiftqb starts each field one bit low, so bits [2:1] of the byte are the field (2 p); the
// ternary-logic op keeps them and ORs in the odd byte's + 1 (and the group's + 8).
inline void pair_controls(const uint8_t* meta16, __m512i* group0, __m512i* group1) {
  int64_t low = 0, high = 0;
  std::memcpy(&low, meta16, 8);
  std::memcpy(&high, meta16 + 8, 8);
  const __m512i bytes = _mm512_mask_set1_epi64(_mm512_set1_epi64(low), 0xF0, high);
  const __m512i field_bits = _mm512_set1_epi32(0x06060606);
  // (fields & 0x06...) | add: imm 0xEA = (A & B) | C.
  *group0 = _mm512_ternarylogic_epi32(_mm512_multishift_epi64_epi8(offsets_vector<-1, 1>(), bytes), field_bits,
                                      _mm512_set1_epi32(0x01000100), 0xEA);
  *group1 = _mm512_ternarylogic_epi32(_mm512_multishift_epi64_epi8(offsets_vector<3, 5>(), bytes), field_bits,
                                      _mm512_set1_epi32(0x09080908), 0xEA);
}

// float_to_bf16 on 16 lanes, stored to the first `count`.
inline void store_bf16(uint16_t* out, __m512 y, int64_t count) {
  store_bf16_lanes(out, y, static_cast<__mmask16>(count >= 16 ? 0xFFFF : (1u << count) - 1));
}

// MR rows (1..8) x NV blocks of 16 columns (1..2) from column n0. kExpanded: `controls` holds the
// task's controls (block v, pair h, group s at controls[(v * pairs + h) * 2 + s]); else they are
// expanded here per pair.
template <int MR, int NV, bool kExpanded>
void bf16_tile(const Sparse24Bf16Args& a, int64_t m0, int64_t n0, const __m512i* controls) {
  const int64_t pairs = (a.k + 7) / 8, full_pairs = a.k / 8;
  const uint16_t* x = a.x + m0 * a.ldx;
  const uint16_t* wb[NV];
#pragma GCC unroll 2
  for (int v = 0; v < NV; ++v) wb[v] = a.packed + (n0 / 16 + v) * pairs * 72;
  __m512 acc[MR][NV];
#pragma GCC unroll 8
  for (int r = 0; r < MR; ++r)
#pragma GCC unroll 2
    for (int v = 0; v < NV; ++v) acc[r][v] = _mm512_setzero_ps();
  // x of the last pair when K % 8 == 4: its four bf16, then four -0.0 (the packed values of the
  // missing group are +0, so its products are -0.0, and s + -0.0 == s for every s, signed zeros
  // included), so that one loop reads 16 bytes for every pair.
  alignas(16) uint16_t tail[MR][8];
  if (pairs > full_pairs) {
    for (int r = 0; r < MR; ++r) {
      std::fill(tail[r], tail[r] + 8, static_cast<uint16_t>(0x8000));
      std::memcpy(tail[r], x + r * a.ldx + 8 * full_pairs, 4 * sizeof(uint16_t));
    }
  }
  // In-register expansion runs one pair ahead, as in the int8 kernel.
  __m512i next0[NV], next1[NV];
  if (!kExpanded) {
#pragma GCC unroll 2
    for (int v = 0; v < NV; ++v) pair_controls(reinterpret_cast<const uint8_t*>(wb[v] + 64), &next0[v], &next1[v]);
  }
  for (int64_t h = 0; h < pairs; ++h) {
    __m512i val0[NV], val1[NV], ctl0[NV], ctl1[NV];
    const int64_t ahead = std::min(h + 1, pairs - 1);
#pragma GCC unroll 2
    for (int v = 0; v < NV; ++v) {
      const uint16_t* p = wb[v] + h * 72;
      val0[v] = _mm512_loadu_si512(p);
      val1[v] = _mm512_loadu_si512(p + 32);
      if (kExpanded) {
        ctl0[v] = _mm512_load_si512(controls + (v * pairs + h) * 2);
        ctl1[v] = _mm512_load_si512(controls + (v * pairs + h) * 2 + 1);
      } else {
        ctl0[v] = next0[v];
        ctl1[v] = next1[v];
        pair_controls(reinterpret_cast<const uint8_t*>(wb[v] + ahead * 72 + 64), &next0[v], &next1[v]);
      }
    }
    const bool last = h == full_pairs;
#pragma GCC unroll 8
    for (int r = 0; r < MR; ++r) {
      const __m512i xb = _mm512_broadcast_i32x4(
          _mm_loadu_si128(reinterpret_cast<const __m128i*>(last ? tail[r] : x + r * a.ldx + 8 * h)));
#pragma GCC unroll 2
      for (int v = 0; v < NV; ++v) {
        acc[r][v] = _mm512_dpbf16_ps(acc[r][v], (__m512bh)_mm512_shuffle_epi8(xb, ctl0[v]), (__m512bh)val0[v]);
        acc[r][v] = _mm512_dpbf16_ps(acc[r][v], (__m512bh)_mm512_shuffle_epi8(xb, ctl1[v]), (__m512bh)val1[v]);
      }
    }
  }
#pragma GCC unroll 2
  for (int v = 0; v < NV; ++v) {
    const int64_t n = n0 + 16 * v, count = std::min<int64_t>(16, a.n - n);
    const __mmask16 valid = static_cast<__mmask16>(count >= 16 ? 0xFFFF : (1u << count) - 1);
    const __m512 bias = a.bias != nullptr ? _mm512_maskz_loadu_ps(valid, a.bias + n) : _mm512_setzero_ps();
#pragma GCC unroll 8
    for (int r = 0; r < MR; ++r) {
      const __m512 y = a.bias != nullptr ? _mm512_add_ps(acc[r][v], bias) : acc[r][v];
      store_bf16(a.out + (m0 + r) * a.n + n, y, count);
    }
  }
}

using Bf16TileFn = void (*)(const Sparse24Bf16Args&, int64_t, int64_t, const __m512i*);
template <bool kExpanded, int MR>
constexpr Bf16TileFn bf16_tile_row[2] = {bf16_tile<MR, 1, kExpanded>, bf16_tile<MR, 2, kExpanded>};
template <bool kExpanded>
constexpr const Bf16TileFn* kBf16Tiles[8] = {
    bf16_tile_row<kExpanded, 1>, bf16_tile_row<kExpanded, 2>, bf16_tile_row<kExpanded, 3>, bf16_tile_row<kExpanded, 4>,
    bf16_tile_row<kExpanded, 5>, bf16_tile_row<kExpanded, 6>, bf16_tile_row<kExpanded, 7>, bf16_tile_row<kExpanded, 8>};

}  // namespace

void sparse24_bf16_run_avx512bf16(const Sparse24Bf16Args& a, const Sparse24Bf16Plan& plan, int64_t task_begin,
                                  int64_t task_end) {
  static_assert(kS24I8TileRows == 8 && kS24I8PanelBlocks == 2 && kS24I8BlockCols == 16, "tiles of 8 x 2 x 16");
  // A task with more than one tile of rows expands its panel's controls once (2 x 64 bytes per
  // block and pair, K * 32 bytes for the panel) instead of once per tile. Grown once per thread.
  struct alignas(64) Control {
    uint8_t bytes[64];
  };
  thread_local std::unique_ptr<Control[]> controls;
  thread_local int64_t capacity = 0;
  const int64_t pairs = (a.k + 7) / 8;
  for (int64_t t = task_begin; t < task_end; ++t) {
    int64_t m_begin = 0, m_end = 0, n0 = 0, n_end = 0;
    plan.task_bounds(a.m, a.n, t, &m_begin, &m_end, &n0, &n_end);
    const int nv = static_cast<int>(std::min<int64_t>(kS24I8PanelBlocks, (a.n - n0 + 15) / 16));
    const bool expand = m_end - m_begin > kS24I8TileRows;
    if (expand) {
      if (capacity < kS24I8PanelBlocks * pairs * 2) {
        capacity = kS24I8PanelBlocks * pairs * 2;
        controls.reset(new Control[capacity]);  // C++17 aligned new: 64-byte aligned
      }
      for (int v = 0; v < nv; ++v) {
        const uint16_t* wb = a.packed + (n0 / 16 + v) * pairs * 72;
        for (int64_t h = 0; h < pairs; ++h) {
          __m512i c0, c1;
          pair_controls(reinterpret_cast<const uint8_t*>(wb + h * 72 + 64), &c0, &c1);
          _mm512_store_si512(controls[(v * pairs + h) * 2].bytes, c0);
          _mm512_store_si512(controls[(v * pairs + h) * 2 + 1].bytes, c1);
        }
      }
    }
    const __m512i* expanded = reinterpret_cast<const __m512i*>(controls.get());
    for (int64_t m = m_begin; m < m_end; m += kS24I8TileRows) {
      const int mr = static_cast<int>(std::min<int64_t>(kS24I8TileRows, m_end - m));
      if (expand) {
        kBf16Tiles<true>[mr - 1][nv - 1](a, m, n0, expanded);
      } else {
        kBf16Tiles<false>[mr - 1][nv - 1](a, m, n0, nullptr);
      }
    }
  }
}

}  // namespace ck::cpu

#else  // not x86-64 GCC/Clang: never selected

namespace ck::cpu {
void sparse24_bf16_run_avx512bf16(const Sparse24Bf16Args& a, const Sparse24Bf16Plan& plan, int64_t b, int64_t e) {
  sparse24_bf16_run_portable(a, plan, b, e);
}
}  // namespace ck::cpu

#endif

namespace ck::cpu {
const Sparse24Bf16Kernels sparse24_bf16_kernels_avx512bf16 = {&sparse24_bf16_run_avx512bf16};
}  // namespace ck::cpu
