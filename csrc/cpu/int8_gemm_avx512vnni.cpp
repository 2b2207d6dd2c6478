// AVX-512 VNNI int8 GEMM microkernel; compiled for AVX-512 by the pragma below, chosen at run time.
//
// Blocking: a tile is MR rows of x by NV blocks of 16 output columns (MR x NV zmm accumulators).
// Per group of four k, each block's 64 packed weight bytes are loaded once and each row's four x
// bytes are broadcast once, then MR x NV `vpdpbusd` accumulate u8 x s8 products. `vpdpbusd` needs
// an unsigned first operand, so int8 x is biased to uint8 by flipping its sign bit (x + 128); the
// epilogue subtracts (128 + x_zero_point) * row_sum[n] in int32 (modulo 2^32), which restores the
// exact sum. The epilogue is fused: correction, bias, requantization or float scaling, store.
#include "int8_gemm.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq,avx512vnni")
// GCC 12 reports its own intrinsics' _mm512_undefined_* placeholders as uninitialized.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#include <cstring>

#include "int8_output_avx512vnni-inl.h"

namespace ck::cpu {
namespace {

inline __m512i broadcast_x_group(const uint8_t* p) {
  int32_t v;
  __builtin_memcpy(&v, p, 4);
  return _mm512_set1_epi32(v);
}

// The last group of four k when k % 4 != 0: reads only the bytes that exist (the padded weight
// bytes are zero, so whatever the padding of x holds contributes nothing).
inline __m512i broadcast_x_tail(const uint8_t* p, int64_t bytes) {
  uint32_t v = p[0];
  if (bytes > 1) v |= static_cast<uint32_t>(p[1]) << 8;
  if (bytes > 2) v |= static_cast<uint32_t>(p[2]) << 16;
  return _mm512_set1_epi32(static_cast<int32_t>(v));
}

// MR: rows of x in the tile (1..6, the row tail uses fewer).
// NV: 16-column blocks in the tile (1..4, the column tail uses fewer).
// kSigned: x is int8 and needs the sign-bit flip.
// kPartialLast: the last block holds last_rows < 16 rows (the n % 16 tail of the packed weight).
template <int MR, int NV, bool kSigned, bool kPartialLast>
void tile(const Int8GemmArgs& a, int64_t m0, int64_t n0, int last_rows) {
  const int64_t k = a.w.k, k_pad = a.w.k_pad, full_groups = k / 4;
  const uint8_t* x = static_cast<const uint8_t*>(a.x) + m0 * a.ldx;
  const int8_t* wb[NV];
  for (int v = 0; v < NV; ++v) wb[v] = a.w.data + (n0 + 16 * v) * k_pad;
  const int64_t last_stride = kPartialLast ? last_rows * 4 : 64;
  const __mmask64 last_mask = kPartialLast ? ((uint64_t{1} << (last_rows * 4)) - 1) : ~uint64_t{0};
  const __m512i flip = _mm512_set1_epi32(static_cast<int32_t>(0x80808080u));

  __m512i acc[MR][NV];
#pragma GCC unroll 8
  for (int r = 0; r < MR; ++r)
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) acc[r][v] = _mm512_setzero_si512();

  // Every loop that touches acc carries `#pragma GCC unroll`: GCC 12 keeps the MR x NV accumulators
  // in zmm registers only when all of them are unrolled before scalar replacement; otherwise the
  // array lives on the stack and each vpdpbusd costs a load and a store (measured 4x slower).
  // One loop over every group (the last one partial when k % 4 != 0) so that GCC allocates the
  // accumulators once; a separate tail block made it keep a stack copy of each accumulator.
  const int64_t groups = k_pad / 4;
  for (int64_t g = 0; g < groups; ++g) {
    __m512i b[NV];
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) {
      b[v] = (kPartialLast && v == NV - 1) ? _mm512_maskz_loadu_epi8(last_mask, wb[v] + g * last_stride)
                                           : _mm512_loadu_si512(wb[v] + g * 64);
    }
    const bool full = g < full_groups;
#pragma GCC unroll 8
    for (int r = 0; r < MR; ++r) {
      const uint8_t* p = x + r * a.ldx + 4 * g;
      __m512i xv = full ? broadcast_x_group(p) : broadcast_x_tail(p, k % 4);
      if (kSigned) xv = _mm512_xor_si512(xv, flip);
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) acc[r][v] = _mm512_dpbusd_epi32(acc[r][v], xv, b[v]);
    }
  }

  alignas(64) int32_t sums[MR][NV][16];
#pragma GCC unroll 8
  for (int r = 0; r < MR; ++r)
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) _mm512_store_si512(sums[r][v], acc[r][v]);

  const int cols = kPartialLast ? 16 * (NV - 1) + last_rows : 16 * NV;
  int8_output_block<NV>(a, m0, MR, n0, cols, &sums[0][0][0], NV * 16, kSigned ? 128 : 0);
}

using TileFn = void (*)(const Int8GemmArgs&, int64_t, int64_t, int);

template <bool kSigned, bool kPartialLast, int MR>
constexpr TileFn tile_row[4] = {tile<MR, 1, kSigned, kPartialLast>, tile<MR, 2, kSigned, kPartialLast>,
                                tile<MR, 3, kSigned, kPartialLast>, tile<MR, 4, kSigned, kPartialLast>};

// Row tails of 7 or 8 rows run as 8-row x 32-column tiles (16 accumulators) over half panels:
// one pass over the weights instead of a 6-row pass plus a 1- or 2-row pass, which at M = 8 read
// every weight panel twice for little work.
template <bool kSigned, bool kPartialLast>
TileFn pick_tall_tile(int mr, int nv) {
  static constexpr TileFn tiles[2][2] = {{tile<7, 1, kSigned, kPartialLast>, tile<7, 2, kSigned, kPartialLast>},
                                         {tile<8, 1, kSigned, kPartialLast>, tile<8, 2, kSigned, kPartialLast>}};
  return tiles[mr - 7][nv - 1];
}

template <bool kSigned, bool kPartialLast>
TileFn pick_tile(int mr, int nv) {
  static constexpr const TileFn* rows[6] = {tile_row<kSigned, kPartialLast, 1>, tile_row<kSigned, kPartialLast, 2>,
                                            tile_row<kSigned, kPartialLast, 3>, tile_row<kSigned, kPartialLast, 4>,
                                            tile_row<kSigned, kPartialLast, 5>, tile_row<kSigned, kPartialLast, 6>};
  return rows[mr - 1][nv - 1];
}

}  // namespace

void int8_gemm_run_avx512vnni(const Int8GemmArgs& args, const Int8GemmPlan& plan, int64_t task_begin,
                              int64_t task_end) {
  static_assert(kInt8TileRows == 6 && kInt8PanelBlocks == 4, "tile tables assume 6 x 4");
  for (int64_t t = task_begin; t < task_end; ++t) {
    const int64_t panel = t / plan.row_chunks, chunk = t % plan.row_chunks;
    const int64_t m_begin = chunk * plan.chunk_rows;
    const int64_t m_end = args.m < m_begin + plan.chunk_rows ? args.m : m_begin + plan.chunk_rows;
    const int64_t n0 = panel * kInt8PanelCols;
    const int64_t cols = args.w.n - n0 < kInt8PanelCols ? args.w.n - n0 : kInt8PanelCols;
    const int nv = static_cast<int>((cols + 15) / 16);
    const int last_rows = static_cast<int>(cols - 16 * (nv - 1));
    const bool partial = last_rows < 16;
    for (int64_t m = m_begin; m < m_end; m += kInt8TileRows) {
      const int64_t rows_left = m_end - m;
      if (rows_left == 7 || rows_left == 8) {
        const int mr = static_cast<int>(rows_left);
        for (int half = 0; 2 * half < nv; ++half) {
          const int hv = nv - 2 * half < 2 ? nv - 2 * half : 2;
          const bool last_half = 2 * half + hv == nv;
          const bool part = partial && last_half;
          const TileFn fn = args.x_signed
                                ? (part ? pick_tall_tile<true, true>(mr, hv) : pick_tall_tile<true, false>(mr, hv))
                                : (part ? pick_tall_tile<false, true>(mr, hv) : pick_tall_tile<false, false>(mr, hv));
          fn(args, m, n0 + 32 * half, last_half ? last_rows : 16);
        }
        break;
      }
      const int mr = static_cast<int>(m_end - m < kInt8TileRows ? m_end - m : kInt8TileRows);
      const TileFn fn = args.x_signed ? (partial ? pick_tile<true, true>(mr, nv) : pick_tile<true, false>(mr, nv))
                                      : (partial ? pick_tile<false, true>(mr, nv) : pick_tile<false, false>(mr, nv));
      fn(args, m, n0, last_rows);
    }
  }
}

void quantize_rows_avx512vnni(const float* x, int64_t cols, int64_t row_begin, int64_t row_end, int32_t qmin,
                              int32_t qmax, int8_t* q, float* scale) {
  // Same arithmetic as quantize_rows_portable: max |x| as the integer max of the bit patterns of
  // |x| (exact in any order; non-finite rows are those whose maximum reaches the exponent mask),
  // one correctly rounded fp32 division per element, round half to even (roundscale), clamp, narrow.
  const __m512i abs_mask = _mm512_set1_epi32(static_cast<int32_t>(kFloatAbsMask));
  const __m512 lo = _mm512_set1_ps(static_cast<float>(qmin)), hi = _mm512_set1_ps(static_cast<float>(qmax));
  for (int64_t r = row_begin; r < row_end; ++r) {
    const float* xr = x + r * cols;
    __m512i amax = _mm512_setzero_si512();
    for (int64_t c = 0; c < cols; c += 16) {
      const __mmask16 valid = lane_mask(cols - c);
      amax = _mm512_max_epi32(amax, _mm512_and_si512(_mm512_maskz_loadu_epi32(valid, xr + c), abs_mask));
    }
    const uint32_t amax_bits = static_cast<uint32_t>(_mm512_reduce_max_epi32(amax));
    if (!quantize_rows_scale(amax_bits, qmax, cols, q + r * cols, &scale[r])) continue;  // a NaN or +-Inf
    const __m512 sv = _mm512_set1_ps(scale[r]);
    for (int64_t c = 0; c < cols; c += 16) {
      const __mmask16 valid = lane_mask(cols - c);
      __m512 v = _mm512_div_ps(_mm512_maskz_loadu_ps(valid, xr + c), sv);
      v = _mm512_roundscale_ps(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
      v = _mm512_min_ps(_mm512_max_ps(v, lo), hi);
      _mm_mask_storeu_epi8(q + r * cols + c, valid, _mm512_cvtepi32_epi8(_mm512_cvtps_epi32(v)));
    }
  }
}

void quantize_per_tensor_avx512vnni(const float* x, int64_t cols, int64_t row_begin, int64_t row_end,
                                    const QuantizePerTensorParams& p, void* q, bool* nonfinite_row) {
  // Same arithmetic as quantize_per_tensor_portable: a correctly rounded division, round half to
  // even (roundscale), the clamp to [qmin - zp, qmax - zp] in fp32 (a NaN lane takes the bound:
  // vmaxps returns its second operand), + zp; NaN / +-Inf lanes (fpclass) then take zp.
  const __m512 scale = _mm512_set1_ps(p.scale);
  const __m512 lo = _mm512_set1_ps(static_cast<float>(p.qmin - p.zero_point));
  const __m512 hi = _mm512_set1_ps(static_cast<float>(p.qmax - p.zero_point));
  const __m512i zp = _mm512_set1_epi32(p.zero_point);
  constexpr int kNanOrInf = 0x01 | 0x08 | 0x10 | 0x80;  // fpclass: QNaN, +Inf, -Inf, SNaN
  for (int64_t r = row_begin; r < row_end; ++r) {
    const float* xr = x + r * cols;
    uint8_t* qr = static_cast<uint8_t*>(q) + r * cols;  // int8 and uint8 share the byte narrowing
    __mmask16 nonfinite = 0;
    for (int64_t c = 0; c < cols; c += 16) {
      const __mmask16 valid = lane_mask(cols - c);
      const __m512 v = _mm512_maskz_loadu_ps(valid, xr + c);
      const __mmask16 bad = _mm512_fpclass_ps_mask(v, kNanOrInf);
      nonfinite |= bad;
      __m512 t = _mm512_roundscale_ps(_mm512_div_ps(v, scale), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
      t = _mm512_min_ps(_mm512_max_ps(t, lo), hi);
      const __m512i out = _mm512_mask_mov_epi32(_mm512_add_epi32(_mm512_cvtps_epi32(t), zp), bad, zp);
      _mm_mask_storeu_epi8(qr + c, valid, _mm512_cvtepi32_epi8(out));
    }
    nonfinite_row[r] = nonfinite != 0;
  }
}

const Int8GemmKernels int8_gemm_kernels_avx512vnni = {&int8_gemm_run_avx512vnni, nullptr};
const QuantizeRowsKernels quantize_rows_kernels_avx512vnni = {&quantize_rows_avx512vnni,
                                                              &quantize_per_tensor_avx512vnni};

}  // namespace ck::cpu
#else
namespace ck::cpu {
const Int8GemmKernels int8_gemm_kernels_avx512vnni = {&int8_gemm_run_portable, nullptr};
const QuantizeRowsKernels quantize_rows_kernels_avx512vnni = {&quantize_rows_portable, &quantize_per_tensor_portable};
}  // namespace ck::cpu
#endif
