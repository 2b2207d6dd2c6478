// AVX2 + FMA 2:4 kernels, compiled for AVX2 by the pragma below, chosen at run time on CPUs
// without AVX-512 (and, for bf16, on AVX-512 CPUs without AVX512_BF16).
//
// fp32: tasks of >= 16 rows run sparse24_f32_rows-inl.h on ymm (loads select x), fewer rows
// sparse24_f32_avx2-inl.h on 16 ymm registers (2 rows x 2 blocks of accumulators).
//
// bf16: vdpbf16ps' bits from fp32 FMAs under MXCSR FTZ + DAZ (see bf16_tile_avx2).
//
// int8 (exact: no vpmaddubsw, whose int16 pair sums saturate): per pair of groups h (eight k) the
// eight x of a row are widened to int16 (sign- or zero-extended) and broadcast to both 128-bit
// lanes; per 4 output columns one `vpshufb` gathers each column's four x words (control: 8 bytes
// per column, looked up from its meta byte in a 256-entry table, once per task and pair), and one
// `vpmaddwd` multiplies them with the column's four stored weights widened to int16, giving two
// int32 partial sums per column. The pairs of partial sums are added once, in the epilogue
// (vphaddd + vpermq). Per 8 k and 16 columns a row costs 4 shuffles + 4 multiply-adds + 4 adds,
// where dense int8_linear's AVX2 path needs 8 multiply-adds + 8 adds. x needs no sign flip: the
// epilogue subtracts x_zero_point * row_sum as the portable path does.
#include "sparse24.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#pragma GCC target("avx2,fma")
#include <immintrin.h>

#include <algorithm>
#include <array>
#include <cstring>
#include <memory>

#include "requant_avx2-inl.h"

namespace ck::cpu {
namespace {

constexpr int kF32Rows = 2;    // 2 x 2 accumulators + 8 controls + 2 x: the 16 ymm registers
constexpr int kF32Blocks = 2;

inline __m256 load_columns(const float* p, int count) { return _mm256_maskload_ps(p, lane_mask8(count)); }
inline void store_columns(float* p, int count, __m256 v) { _mm256_maskstore_ps(p, lane_mask8(count), v); }

#include "sparse24_f32_avx2-inl.h"

// The rows kernel of sparse24_f32_rows-inl.h on ymm: 8 rows per vector, 2 columns x up to 4 vectors of
// accumulators (8 of the 16 registers; 4 columns x 3 vectors ran 10% slower on Zen 4).
using RowsVec = __m256;
constexpr int64_t kRowsLanes = 8;
constexpr int kRowsColumns = 2;
constexpr int kRowsVectors = 4;
inline __m256 rows_zero() { return _mm256_setzero_ps(); }
inline __m256 rows_load(const float* p) { return _mm256_load_ps(p); }
inline void rows_store(float* p, __m256 v) { _mm256_store_ps(p, v); }
inline __m256 rows_broadcast(const float* p) { return _mm256_broadcast_ss(p); }
inline __m256 rows_fma(__m256 a, __m256 b, __m256 c) { return _mm256_fmadd_ps(a, b, c); }

// dst[j * ldd + i] = src[i * lds + j] + add[i] for j < cols and i < dst_lanes (rows, cols <= 8); lanes
// i >= rows read src as 0. The classic 8 x 8 transpose: unpack, shuffle, 128-bit lane permute.
inline void transpose_block(const float* src, int64_t lds, int64_t rows, int64_t cols, float* dst, int64_t ldd,
                            int64_t dst_lanes, const float* add) {
  __m256 r[8], t[8];
  const __m256i col_mask = lane_mask8(cols);
#pragma GCC unroll 8
  for (int i = 0; i < 8; ++i) {
    // AMD runs vmaskmovps slowly (the store form is microcoded): plain moves for whole vectors.
    if (i >= rows) {
      r[i] = _mm256_setzero_ps();
    } else {
      r[i] = cols == 8 ? _mm256_loadu_ps(src + i * lds) : _mm256_maskload_ps(src + i * lds, col_mask);
    }
  }
#pragma GCC unroll 4
  for (int i = 0; i < 8; i += 2) {
    t[i] = _mm256_unpacklo_ps(r[i], r[i + 1]);
    t[i + 1] = _mm256_unpackhi_ps(r[i], r[i + 1]);
  }
#pragma GCC unroll 2
  for (int i = 0; i < 8; i += 4) {
    r[i] = _mm256_shuffle_ps(t[i], t[i + 2], 0x44);
    r[i + 1] = _mm256_shuffle_ps(t[i], t[i + 2], 0xEE);
    r[i + 2] = _mm256_shuffle_ps(t[i + 1], t[i + 3], 0x44);
    r[i + 3] = _mm256_shuffle_ps(t[i + 1], t[i + 3], 0xEE);
  }
#pragma GCC unroll 4
  for (int i = 0; i < 4; ++i) {
    t[i] = _mm256_permute2f128_ps(r[i], r[4 + i], 0x20);
    t[4 + i] = _mm256_permute2f128_ps(r[i], r[4 + i], 0x31);
  }
  const __m256i lanes = lane_mask8(dst_lanes);
  const __m256 extra = add != nullptr ? _mm256_maskload_ps(add, lanes) : _mm256_setzero_ps();
#pragma GCC unroll 8
  for (int j = 0; j < 8; ++j) {
    if (j >= cols) continue;
    const __m256 y = add != nullptr ? _mm256_add_ps(t[j], extra) : t[j];
    if (dst_lanes == 8) {
      _mm256_storeu_ps(dst + j * ldd, y);
    } else {
      _mm256_maskstore_ps(dst + j * ldd, lanes, y);
    }
  }
}

#include "sparse24_f32_rows-inl.h"

// ---------------------------------------------------------------- int8

// Control bytes of a column with meta byte b: word positions p_s (s = 0..3: the two stored values of
// group 2h, then of group 2h + 1, i.e. (b >> 2s) & 3, + 4 for the second group), as byte pairs
// (2 p_s, 2 p_s + 1) of the widened x.
constexpr std::array<uint64_t, 256> make_control_table() {
  std::array<uint64_t, 256> t{};
  for (int b = 0; b < 256; ++b) {
    uint64_t v = 0;
    for (int j = 0; j < 8; ++j) {
      const int s = j / 2, p = ((b >> (2 * s)) & 3) + (s >= 2 ? 4 : 0);
      v |= static_cast<uint64_t>(2 * p + (j & 1)) << (8 * j);
    }
    t[b] = v;
  }
  return t;
}
constexpr std::array<uint64_t, 256> kControlTable = make_control_table();

constexpr int64_t kI8ControlBytes = 128;  // per block of 16 columns and pair: 16 x 8 control bytes

// The eight (or, for the last pair of K % 8 == 4, four) x of pair h widened to int16, in both lanes.
template <bool kSigned>
inline __m256i widened_x_pair(const uint8_t* p, int64_t bytes) {
  int64_t v = 0;
  std::memcpy(&v, p, static_cast<size_t>(bytes));
  const __m128i b = _mm_cvtsi64_si128(v);
  return _mm256_broadcastsi128_si256(kSigned ? _mm_cvtepi8_epi16(b) : _mm_cvtepu8_epi16(b));
}

inline __m256i load_count(const int32_t* p, int64_t count) {
  return count >= 8 ? _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p))
                    : _mm256_maskload_epi32(p, lane_mask8(count));
}

// MR rows (1..2) x one block of 16 columns starting at n0; `controls` holds the block's
// kI8ControlBytes per pair.
template <int MR, bool kSigned>
void int8_tile_avx2(const Sparse24Int8Args& a, int64_t m0, int64_t n0, const uint8_t* controls) {
  const int64_t pairs = a.w.pairs, full_pairs = a.w.k / 8;
  const uint8_t* x = static_cast<const uint8_t*>(a.x) + m0 * a.ldx;
  const int8_t* wb = a.w.data + (n0 / 16) * pairs * 80;
  __m256i acc[MR][4];
  for (int r = 0; r < MR; ++r)
    for (int q = 0; q < 4; ++q) acc[r][q] = _mm256_setzero_si256();
  auto step = [&](int64_t h, int64_t bytes) {
    __m256i w[4];
    for (int q = 0; q < 4; ++q)
      w[q] = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(wb + h * 80 + 16 * q)));
    const uint8_t* c = controls + h * kI8ControlBytes;
    for (int r = 0; r < MR; ++r) {
      const __m256i xw = widened_x_pair<kSigned>(x + r * a.ldx + 8 * h, bytes);
      for (int q = 0; q < 4; ++q) {
        const __m256i ctl = _mm256_load_si256(reinterpret_cast<const __m256i*>(c + 32 * q));
        acc[r][q] = _mm256_add_epi32(acc[r][q], _mm256_madd_epi16(_mm256_shuffle_epi8(xw, ctl), w[q]));
      }
    }
  };
  for (int64_t h = 0; h < full_pairs; ++h) step(h, 8);
  if (pairs > full_pairs) step(full_pairs, 4);

  // bias[n] - x_zero_point * row_sum[n], modulo 2^32.
  const int64_t cols = std::min<int64_t>(16, a.w.n - n0);
  const __m256i neg_zp = _mm256_set1_epi32(-a.x_zero_point);
  __m256i column_term[2];
  RequantLanes8 lanes[2];
  const RequantParams& p = a.requant;
  for (int v = 0; v < 2; ++v) {
    const int64_t n = n0 + 8 * v, count = cols - 8 * v;
    column_term[v] =
        count > 0 ? _mm256_mullo_epi32(load_count(a.w.row_sum + n, count), neg_zp) : _mm256_setzero_si256();
    if (a.bias_i32 != nullptr && count > 0)
      column_term[v] = _mm256_add_epi32(column_term[v], load_count(a.bias_i32 + n, count));
    lanes[v] = p.per_channel ? (count > 0 ? requant_lanes8(load_count(p.m0 + n, count), load_count(p.shift + n, count))
                                          : requant_lanes8(_mm256_set1_epi32(p.m0[0]), _mm256_set1_epi32(p.shift[0])))
                             : requant_lanes8(_mm256_set1_epi32(p.m0[0]), _mm256_set1_epi32(p.shift[0]));
  }
  const ClampLanes8 clamp = clamp_lanes8(p);
  for (int r = 0; r < MR; ++r) {
    __m256i y[2];
    for (int v = 0; v < 2; ++v) {
      // Two partial sums per column -> one: columns 8v .. 8v + 7 in order.
      const __m256i sums = _mm256_permute4x64_epi64(_mm256_hadd_epi32(acc[r][2 * v], acc[r][2 * v + 1]), 0xD8);
      y[v] = clamp_add_zero_point8(
          multiply_by_quantized_multiplier8(_mm256_add_epi32(sums, column_term[v]), lanes[v], p.rounding), clamp);
    }
    store_requantized16(a.out, (m0 + r) * a.w.n + n0, y[0], y[1], cols, p);
  }
}

}  // namespace

void sparse24_f32_run_avx2(const Sparse24F32Args& a, const Sparse24Plan& plan, int64_t task_begin, int64_t task_end) {
  f32_run_rows_or_ymm(a, plan, task_begin, task_end);
}

void sparse24_int8_run_avx2(const Sparse24Int8Args& a, const Sparse24Int8Plan& plan, int64_t task_begin,
                            int64_t task_end) {
  // Controls of the task's panel, expanded once per task (grown once per thread, then reused).
  struct alignas(32) Controls {
    uint8_t bytes[kI8ControlBytes];
  };
  thread_local std::unique_ptr<Controls[]> controls;
  thread_local int64_t capacity = 0;
  const int64_t pairs = a.w.pairs;
  if (capacity < kS24I8PanelBlocks * pairs) {
    capacity = kS24I8PanelBlocks * pairs;
    controls.reset(new Controls[capacity]);
  }
  for (int64_t t = task_begin; t < task_end; ++t) {
    int64_t m_begin = 0, m_end = 0, n_begin = 0, n_end = 0;
    plan.task_bounds(a.m, a.w.n, t, &m_begin, &m_end, &n_begin, &n_end);
    const int64_t blocks = (n_end - n_begin + 15) / 16;
    for (int64_t v = 0; v < blocks; ++v) {
      const int8_t* meta = a.w.data + ((n_begin / 16 + v) * pairs) * 80 + 64;
      for (int64_t h = 0; h < pairs; ++h) {
        uint8_t* dst = controls[v * pairs + h].bytes;
        for (int i = 0; i < 16; ++i) {
          const uint64_t c = kControlTable[static_cast<uint8_t>(meta[h * 80 + i])];
          std::memcpy(dst + 8 * i, &c, 8);
        }
      }
    }
    for (int64_t v = 0; v < blocks; ++v) {
      const uint8_t* ctl = controls[v * pairs].bytes;
      const int64_t n0 = n_begin + 16 * v;
      int64_t m = m_begin;
      for (; m + 2 <= m_end; m += 2) {
        a.x_signed ? int8_tile_avx2<2, true>(a, m, n0, ctl) : int8_tile_avx2<2, false>(a, m, n0, ctl);
      }
      if (m < m_end) a.x_signed ? int8_tile_avx2<1, true>(a, m, n0, ctl) : int8_tile_avx2<1, false>(a, m, n0, ctl);
    }
  }
}

// ---------------------------------------------------------------- bf16 without AVX512_BF16

namespace {

// vdpbf16ps emulated exactly with fp32 FMAs under MXCSR's FTZ and DAZ (x86 FTZ flushes exactly the
// sums the instruction flushes: tininess after rounding; 0 differences in 30M random and
// near-2^-126 cases on Zen 4), the odd product first. Set for the accumulation only: the bias add
// and the bf16 rounding run with the caller's MXCSR (ordinary fp32).
class FtzDazScope {
 public:
  FtzDazScope() : saved_(_mm_getcsr()) { _mm_setcsr(saved_ | 0x8040u); }
  ~FtzDazScope() { _mm_setcsr(saved_); }
  FtzDazScope(const FtzDazScope&) = delete;
  FtzDazScope& operator=(const FtzDazScope&) = delete;

 private:
  unsigned saved_;
};

// The eight bf16 x of a pair widened to fp32 (exact).
inline __m256 widen_bf16x8(const uint16_t* p) {
  const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
  return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}

// float_to_bf16 on 8 lanes (nearest even, NaN -> 0x7FC0), the first `count` stored.
inline void store_bf16x8(uint16_t* out, __m256 y, int64_t count) {
  const __m256i u = _mm256_castps_si256(y);
  const __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(1));
  __m256i r = _mm256_srli_epi32(_mm256_add_epi32(_mm256_add_epi32(u, _mm256_set1_epi32(0x7FFF)), lsb), 16);
  r = _mm256_blendv_epi8(r, _mm256_set1_epi32(0x7FC0), _mm256_castps_si256(_mm256_cmp_ps(y, y, _CMP_UNORD_Q)));
  const __m256i packed = _mm256_permute4x64_epi64(_mm256_packus_epi32(r, r), 0x08);  // 8 words in the low lane
  alignas(16) uint16_t words[8];
  _mm_store_si128(reinterpret_cast<__m128i*>(words), _mm256_castsi256_si128(packed));
  std::memcpy(out, words, static_cast<size_t>(count) * sizeof(uint16_t));
}

// MR rows (1..8) x 8 columns from n0 (a multiple of 8): per group one vpermps per stored value
// picks each column's x (index = position + 4 x the group's place in the pair) from the row's eight
// x widened once per pair (a stack copy, read by vpermps as its memory operand), and one FMA adds
// it. Eight rows keep eight independent accumulator chains in flight (each takes two dependent
// FMAs per group).
template <int MR>
void bf16_tile_avx2(const Sparse24Bf16Args& a, int64_t m0, int64_t n0) {
  const int64_t pairs = (a.k + 7) / 8, full_pairs = a.k / 8;
  const uint16_t* block = a.packed + (n0 / 16) * pairs * 72;
  const int c0 = static_cast<int>(n0 % 16);
  __m256 acc[MR];
#pragma GCC unroll 8
  for (int r = 0; r < MR; ++r) acc[r] = _mm256_setzero_ps();
  {
    FtzDazScope ftz_daz;
    alignas(16) uint16_t tail[MR][8] = {};  // x of the last pair when K % 8 == 4 (group 1 unused)
    if (pairs > full_pairs) {
      for (int r = 0; r < MR; ++r) std::memcpy(tail[r], a.x + (m0 + r) * a.ldx + 8 * full_pairs, 4 * sizeof(uint16_t));
    }
    alignas(32) float xw[MR][8];
    for (int64_t h = 0; h < pairs; ++h) {
      const uint16_t* pair = block + h * 72;
      const __m256i meta = _mm256_cvtepu8_epi32(
          _mm_loadl_epi64(reinterpret_cast<const __m128i*>(reinterpret_cast<const uint8_t*>(pair + 64) + c0)));
#pragma GCC unroll 8
      for (int r = 0; r < MR; ++r)
        _mm256_store_ps(xw[r], widen_bf16x8(h < full_pairs ? a.x + (m0 + r) * a.ldx + 8 * h : tail[r]));
      const int groups = h < full_pairs ? 2 : 1;
      for (int s = 0; s < groups; ++s) {
        const __m256i w = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(pair + 32 * s + 2 * c0));
        const __m256 v0 = _mm256_castsi256_ps(_mm256_slli_epi32(w, 16));
        const __m256 v1 = _mm256_castsi256_ps(_mm256_and_si256(w, _mm256_set1_epi32(static_cast<int>(0xFFFF0000u))));
        const __m256i shifted = _mm256_srlv_epi32(meta, _mm256_set1_epi32(4 * s));
        const __m256i group_base = _mm256_set1_epi32(4 * s);
        const __m256i i0 = _mm256_add_epi32(_mm256_and_si256(shifted, _mm256_set1_epi32(3)), group_base);
        const __m256i i1 =
            _mm256_add_epi32(_mm256_and_si256(_mm256_srli_epi32(shifted, 2), _mm256_set1_epi32(3)), group_base);
#pragma GCC unroll 8
        for (int r = 0; r < MR; ++r) {
          const __m256 x = _mm256_load_ps(xw[r]);
          acc[r] = _mm256_fmadd_ps(v1, _mm256_permutevar8x32_ps(x, i1), acc[r]);
          acc[r] = _mm256_fmadd_ps(v0, _mm256_permutevar8x32_ps(x, i0), acc[r]);
        }
      }
    }
  }
  const int64_t count = std::min<int64_t>(8, a.n - n0);
  const __m256 bias = a.bias != nullptr ? _mm256_maskload_ps(a.bias + n0, lane_mask8(count)) : _mm256_setzero_ps();
  for (int r = 0; r < MR; ++r)
    store_bf16x8(a.out + (m0 + r) * a.n + n0, a.bias != nullptr ? _mm256_add_ps(acc[r], bias) : acc[r], count);
}

using Bf16TileAvx2Fn = void (*)(const Sparse24Bf16Args&, int64_t, int64_t);
constexpr Bf16TileAvx2Fn kBf16TilesAvx2[8] = {bf16_tile_avx2<1>, bf16_tile_avx2<2>, bf16_tile_avx2<3>,
                                              bf16_tile_avx2<4>, bf16_tile_avx2<5>, bf16_tile_avx2<6>,
                                              bf16_tile_avx2<7>, bf16_tile_avx2<8>};

}  // namespace

void sparse24_bf16_run_avx2(const Sparse24Bf16Args& a, const Sparse24Bf16Plan& plan, int64_t task_begin,
                            int64_t task_end) {
  for (int64_t t = task_begin; t < task_end; ++t) {
    int64_t m_begin = 0, m_end = 0, n_begin = 0, n_end = 0;
    plan.task_bounds(a.m, a.n, t, &m_begin, &m_end, &n_begin, &n_end);
    for (int64_t n0 = n_begin; n0 < n_end; n0 += 8) {
      for (int64_t m = m_begin; m < m_end; m += 8) kBf16TilesAvx2[std::min<int64_t>(8, m_end - m) - 1](a, m, n0);
    }
  }
}

const Sparse24F32Kernels sparse24_f32_kernels_avx2 = {&sparse24_f32_run_avx2};
const Sparse24Int8Kernels sparse24_int8_kernels_avx2 = {&sparse24_int8_run_avx2};
const Sparse24Bf16Kernels sparse24_bf16_kernels_avx2 = {&sparse24_bf16_run_avx2};

}  // namespace ck::cpu
#else  // not x86-64 GCC/Clang: never selected (detected_isa() is portable there)
namespace ck::cpu {
const Sparse24F32Kernels sparse24_f32_kernels_avx2 = {&sparse24_f32_run_portable};
const Sparse24Int8Kernels sparse24_int8_kernels_avx2 = {&sparse24_int8_run_portable};
const Sparse24Bf16Kernels sparse24_bf16_kernels_avx2 = {&sparse24_bf16_run_portable};
}  // namespace ck::cpu
#endif
