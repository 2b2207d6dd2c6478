// AVX2 int8 GEMM microkernel (CPUs without AVX-512: Intel Haswell+, AMD Zen 1-3); compiled for
// AVX2 by the pragma below, chosen at run time. It reads the same packed weight as the VNNI kernel
// (16-row blocks of four k per row, int8_gemm.h) and equals the portable path bit for bit.
//
// Exact products: every multiply is `vpmaddwd` on int16 operands, x[k] * w[k] + x[k'] * w[k'] into
// an int32 lane, which is exact for int8 / uint8 values (|sum| <= 2 * 255 * 128 < 2^31), and the
// lanes accumulate with `vpaddd` (wrapping like int32 hardware, exact whenever the true sum fits,
// which the K limit guarantees). `vpmaddubsw` (u8 x s8 pairs into int16) would take half the
// multiplies, but it saturates: 255 * 127 * 2 > 32767, so it is not exact for general inputs
// (FBGEMM accepts that error; this kernel must not). Because the operands are widened, no
// sign-bit flip is needed either: int8 x is sign-extended, uint8 x zero-extended, and the epilogue
// subtracts only x_zero_point * row_sum[n].
//
// Operand preparation (per group of four k, whose packed bytes for 8 rows fill one ymm word-pair
// per row: bytes w0 w1 w2 w3):
//   weights: the int16 words of a row's dword are (w1:w0, w3:w2); srai16(slli16(W, 8), 8) gives
//            (w0, w2) and srai16(W, 8) gives (w1, w3): three shifts per 8 columns, done in
//            registers on the packed bytes (the packed weight is never rewritten).
//   x:       rows are widened to int16 in the order (x0, x2, x1, x3) per group (once per row chunk
//            of the plan, see int8_gemm_run_avx2), so `vpbroadcastd` of words 0-1 pairs with
//            (w0, w2) and of words 2-3 with (w1, w3). Padding k (k % 4 != 0) is widened as 0; the
//            packed weight is 0 there too.
// Blocking: a tile is MR <= 4 rows of x by one 16-column weight block (two ymm of 8 columns):
// 8 accumulators + 4 decoded weight vectors + 2 x broadcasts + 2 products = the 16 ymm registers
// (the full 4 x 16 loop is in assembly, k_loop_4x16). Per group and tile: 2 loads, 6 shifts,
// 8 broadcasts, 16 vpmaddwd, 16 vpaddd. On Zen 3 vpmaddwd issues twice per cycle and the four FP
// pipes take ~3.3 of these uops per cycle, so uop count (not loads) bounds the kernel: the loop
// runs 23.3 multiply-accumulates per cycle with its data in L1/L2 (measured); without the weight
// shifts it would run 25.5, without the broadcasts 25. Wider or taller tiles need more registers
// than AVX2 has. Tried and not kept: x broadcasts as memory operands of vpmaddwd from a
// pre-broadcast buffer (load-bound, 23-24 per cycle), and a 5 x 16 tile with a two-uop weight
// decode on 256-scaled products flushed every 256 k (24.4 alone, no faster end to end).
// The fused epilogue (correction, bias, requantization or float scaling, store) is the VNNI one on
// 8 lanes (requant_avx2-inl.h).
#include "int8_gemm.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#pragma GCC target("avx2,fma")
#include <cstring>
#include <vector>

#include "requant_avx2-inl.h"

namespace ck::cpu {
namespace {

constexpr int kTileRows = 4;  // rows of x per tile (see the register count above)

// Widens rows [m0, m0 + rows) of x ([m, k], row stride ldx) into dst (row stride k_pad int16):
// dst[r, 4g + {0, 1, 2, 3}] = x[m0 + r, 4g + {0, 2, 1, 3}], zero for k >= the real k.
void widen_rows(const Int8GemmArgs& a, int64_t m0, int64_t rows, int16_t* dst) {
  const int64_t k = a.w.k, k_pad = a.w.k_pad;
  // Within each 128-bit half: words (0, 1, 2, 3, 4, 5, 6, 7) -> (0, 2, 1, 3, 4, 6, 5, 7).
  const __m256i order = _mm256_setr_epi8(0, 1, 4, 5, 2, 3, 6, 7, 8, 9, 12, 13, 10, 11, 14, 15, 0, 1, 4, 5, 2, 3, 6, 7,
                                         8, 9, 12, 13, 10, 11, 14, 15);
  for (int64_t r = 0; r < rows; ++r) {
    const uint8_t* src = static_cast<const uint8_t*>(a.x) + (m0 + r) * a.ldx;
    int16_t* d = dst + r * k_pad;
    int64_t c = 0;
    for (; c + 16 <= k; c += 16) {
      const __m128i bytes = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + c));
      const __m256i words = a.x_signed ? _mm256_cvtepi8_epi16(bytes) : _mm256_cvtepu8_epi16(bytes);
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(d + c), _mm256_shuffle_epi8(words, order));
    }
    // (c & ~3) | {0, 2, 1, 3}[c & 3] is the position of k = c (the order is its own inverse).
    for (; c < k; ++c) {
      const int16_t v = a.x_signed ? static_cast<int16_t>(static_cast<int8_t>(src[c])) : static_cast<int16_t>(src[c]);
      d[(c & ~int64_t{3}) | ((c & 1) << 1) | ((c & 2) >> 1)] = v;
    }
    for (; c < k_pad; ++c) d[(c & ~int64_t{3}) | ((c & 1) << 1) | ((c & 2) >> 1)] = 0;
  }
}

inline __m256i broadcast_pair(const int16_t* p) {
  int32_t v;
  __builtin_memcpy(&v, p, 4);
  return _mm256_set1_epi32(v);
}

inline __m256i load_lanes(const int32_t* p, bool full, __m256i mask) {
  return full ? _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)) : _mm256_maskload_epi32(p, mask);
}

inline __m256 load_lanes_ps(const float* p, bool full, __m256i mask) {
  return full ? _mm256_loadu_ps(p) : _mm256_maskload_ps(p, mask);
}

// MR: rows of x in the tile (1..4, the row tail uses fewer).
// NV: 8-column vectors (2; 1 when a partial block holds <= 8 rows, which halves the work).
// kPartial: the block holds rows < 16 rows (the n % 16 tail of the packed weight): its groups are
//   rows * 4 bytes apart and are read with masked loads, so nothing past the buffer is touched.
// The K loop of a full 4-row x 16-column tile in assembly: GCC 12 spills three of the eight
// accumulators of the intrinsic loop below to the stack (and copies others between registers every
// group), while this register assignment keeps all 16 ymm busy without a spill:
//   ymm0-7 acc[r][v] (2r + v), ymm8/9 (w0, w2) words of columns 0-7 / 8-15, ymm10/11 (w1, w3),
//   ymm12/13 x broadcasts (x0, x2) / (x1, x3), ymm14/15 products.
// Same arithmetic as the intrinsic loop (exact int16 products, wrapping int32 sums); writes the
// accumulators to sums[r][v][8].
void k_loop_4x16(const int8_t* w, const int16_t* xw, int64_t k_pad, int64_t groups, int32_t* sums) {
  const int16_t* x0 = xw;
  const int16_t* x1 = xw + k_pad;
  const int16_t* x2 = xw + 2 * k_pad;
  const int16_t* x3 = xw + 3 * k_pad;
#define CK_ROW(X)        \
  "vpbroadcastd (%[" #X  \
  "],%[i]), %%ymm12\n\t" \
  "vpbroadcastd 4(%[" #X "],%[i]), %%ymm13\n\t"
#define CK_MAC(A0, A1)                     \
  "vpmaddwd %%ymm8, %%ymm12, %%ymm14\n\t"  \
  "vpmaddwd %%ymm9, %%ymm12, %%ymm15\n\t"  \
  "vpaddd %%ymm14, %%" A0 ", %%" A0        \
  "\n\t"                                   \
  "vpaddd %%ymm15, %%" A1 ", %%" A1        \
  "\n\t"                                   \
  "vpmaddwd %%ymm10, %%ymm13, %%ymm14\n\t" \
  "vpmaddwd %%ymm11, %%ymm13, %%ymm15\n\t" \
  "vpaddd %%ymm14, %%" A0 ", %%" A0        \
  "\n\t"                                   \
  "vpaddd %%ymm15, %%" A1 ", %%" A1 "\n\t"
  int64_t i = 0;
  const int64_t end = groups * 8;  // bytes of widened x per row
  __asm__ volatile(
      "vpxor %%xmm0, %%xmm0, %%xmm0\n\t"
      "vpxor %%xmm1, %%xmm1, %%xmm1\n\t"
      "vpxor %%xmm2, %%xmm2, %%xmm2\n\t"
      "vpxor %%xmm3, %%xmm3, %%xmm3\n\t"
      "vpxor %%xmm4, %%xmm4, %%xmm4\n\t"
      "vpxor %%xmm5, %%xmm5, %%xmm5\n\t"
      "vpxor %%xmm6, %%xmm6, %%xmm6\n\t"
      "vpxor %%xmm7, %%xmm7, %%xmm7\n\t"
      ".p2align 4\n\t"
      "1:\n\t"
      "vmovdqu (%[w]), %%ymm10\n\t"
      "vmovdqu 32(%[w]), %%ymm11\n\t"
      "vpsllw $8, %%ymm10, %%ymm8\n\t"
      "vpsllw $8, %%ymm11, %%ymm9\n\t"
      "vpsraw $8, %%ymm8, %%ymm8\n\t"
      "vpsraw $8, %%ymm9, %%ymm9\n\t"
      "vpsraw $8, %%ymm10, %%ymm10\n\t"
      "vpsraw $8, %%ymm11, %%ymm11\n\t"
      CK_ROW(x0) CK_MAC("ymm0", "ymm1")
      CK_ROW(x1) CK_MAC("ymm2", "ymm3")
      CK_ROW(x2) CK_MAC("ymm4", "ymm5")
      CK_ROW(x3) CK_MAC("ymm6", "ymm7")
      "addq $64, %[w]\n\t"
      "addq $8, %[i]\n\t"
      "cmpq %[end], %[i]\n\t"
      "jne 1b\n\t"
      "vmovdqu %%ymm0, (%[s])\n\t"
      "vmovdqu %%ymm1, 32(%[s])\n\t"
      "vmovdqu %%ymm2, 64(%[s])\n\t"
      "vmovdqu %%ymm3, 96(%[s])\n\t"
      "vmovdqu %%ymm4, 128(%[s])\n\t"
      "vmovdqu %%ymm5, 160(%[s])\n\t"
      "vmovdqu %%ymm6, 192(%[s])\n\t"
      "vmovdqu %%ymm7, 224(%[s])\n\t"
      : [w] "+r"(w), [i] "+r"(i)
      : [x0] "r"(x0), [x1] "r"(x1), [x2] "r"(x2), [x3] "r"(x3), [end] "r"(end), [s] "r"(sums)
      : "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7", "xmm8", "xmm9", "xmm10",
        "xmm11", "xmm12", "xmm13", "xmm14", "xmm15", "memory", "cc");
#undef CK_ROW
#undef CK_MAC
}

template <int MR, int NV, bool kPartial>
void tile(const Int8GemmArgs& a, const int16_t* xw, int64_t m0, int64_t n0, int rows) {
  const int64_t k_pad = a.w.k_pad, groups = k_pad / 4;
  const int8_t* wb = a.w.data + n0 * k_pad;
  const int64_t stride = kPartial ? rows * 4 : 64;
  __m256i valid[NV];
  bool full[NV];
#pragma GCC unroll 2
  for (int v = 0; v < NV; ++v) {
    full[v] = !kPartial || rows >= 8 * (v + 1);
    valid[v] = lane_mask8(rows - 8 * v);
  }

  __m256i acc[MR][NV];
#pragma GCC unroll 4
  for (int r = 0; r < MR; ++r)
#pragma GCC unroll 2
    for (int v = 0; v < NV; ++v) acc[r][v] = _mm256_setzero_si256();

  if constexpr (MR == 4 && NV == 2 && !kPartial) {
    alignas(32) int32_t sums[MR][NV][8];
    k_loop_4x16(wb, xw, k_pad, groups, &sums[0][0][0]);
#pragma GCC unroll 4
    for (int r = 0; r < MR; ++r)
#pragma GCC unroll 2
      for (int v = 0; v < NV; ++v) acc[r][v] = _mm256_load_si256(reinterpret_cast<const __m256i*>(sums[r][v]));
  } else {
    // Every loop that touches acc carries `#pragma GCC unroll` so that GCC keeps the accumulators in
    // registers (as in the VNNI kernel).
    for (int64_t g = 0; g < groups; ++g) {
      const int8_t* wg = wb + g * stride;
      __m256i we[NV], wo[NV];
#pragma GCC unroll 2
      for (int v = 0; v < NV; ++v) {
        const __m256i raw = kPartial ? _mm256_maskload_epi32(reinterpret_cast<const int*>(wg + 32 * v), valid[v])
                                     : _mm256_loadu_si256(reinterpret_cast<const __m256i*>(wg + 32 * v));
        we[v] = _mm256_srai_epi16(_mm256_slli_epi16(raw, 8), 8);
        wo[v] = _mm256_srai_epi16(raw, 8);
      }
#pragma GCC unroll 4
      for (int r = 0; r < MR; ++r) {
        const int16_t* xp = xw + r * k_pad + 4 * g;
        const __m256i xe = broadcast_pair(xp);
#pragma GCC unroll 2
        for (int v = 0; v < NV; ++v) acc[r][v] = _mm256_add_epi32(acc[r][v], _mm256_madd_epi16(xe, we[v]));
        const __m256i xo = broadcast_pair(xp + 2);
#pragma GCC unroll 2
        for (int v = 0; v < NV; ++v) acc[r][v] = _mm256_add_epi32(acc[r][v], _mm256_madd_epi16(xo, wo[v]));
      }
    }
  }

  // Column terms: bias[n] - x_zero_point * row_sum[n], modulo 2^32.
  const __m256i neg_zp = _mm256_set1_epi32(-a.x_zero_point);
  __m256i column_term[NV];
#pragma GCC unroll 2
  for (int v = 0; v < NV; ++v) {
    const int64_t n = n0 + 8 * v;
    column_term[v] = _mm256_mullo_epi32(load_lanes(a.w.row_sum + n, full[v], valid[v]), neg_zp);
    if (a.bias_i32 != nullptr) {
      column_term[v] = _mm256_add_epi32(column_term[v], load_lanes(a.bias_i32 + n, full[v], valid[v]));
    }
#pragma GCC unroll 4
    for (int r = 0; r < MR; ++r) acc[r][v] = _mm256_add_epi32(acc[r][v], column_term[v]);
  }

  const int64_t ldo = a.out_stride();
  const __m256i zero = _mm256_setzero_si256();
  if (a.kind == EpilogueKind::kInt32) {
#pragma GCC unroll 4
    for (int r = 0; r < MR; ++r) {
      store_lanes16(a.out, (m0 + r) * ldo + n0, acc[r][0], NV > 1 ? acc[r][NV - 1] : zero, rows, OutType::kInt32);
    }
  } else if (a.kind == EpilogueKind::kRequantize) {
    const RequantParams& p = a.requant;
    const ClampLanes8 clamp = clamp_lanes8(p);
    RequantLanes8 lanes[NV];
#pragma GCC unroll 2
    for (int v = 0; v < NV; ++v) {
      const int64_t n = n0 + 8 * v;
      lanes[v] = p.per_channel ? requant_lanes8(load_lanes(p.m0 + n, full[v], valid[v]),
                                                load_lanes(p.shift + n, full[v], valid[v]))
                               : requant_lanes8(_mm256_set1_epi32(p.m0[0]), _mm256_set1_epi32(p.shift[0]));
    }
#pragma GCC unroll 4
    for (int r = 0; r < MR; ++r) {
      __m256i y[2] = {zero, zero};
#pragma GCC unroll 2
      for (int v = 0; v < NV; ++v) {
        y[v] = clamp_add_zero_point8(multiply_by_quantized_multiplier8(acc[r][v], lanes[v], p.rounding), clamp);
      }
      store_requantized16(a.out, (m0 + r) * ldo + n0, y[0], y[1], rows, p);
    }
  } else {
    __m256 w_scale[NV], bias[NV];
#pragma GCC unroll 2
    for (int v = 0; v < NV; ++v) {
      const int64_t n = n0 + 8 * v;
      w_scale[v] =
          a.w_scale_per_channel ? load_lanes_ps(a.w_scale + n, full[v], valid[v]) : _mm256_set1_ps(a.w_scale[0]);
      bias[v] = a.bias_f != nullptr ? load_lanes_ps(a.bias_f + n, full[v], valid[v]) : _mm256_setzero_ps();
    }
#pragma GCC unroll 4
    for (int r = 0; r < MR; ++r) {
      const __m256 xs = _mm256_set1_ps(a.x_scale[a.x_scale_per_row ? m0 + r : 0]);
      float* o = static_cast<float*>(a.out) + (m0 + r) * ldo + n0;
#pragma GCC unroll 2
      for (int v = 0; v < NV; ++v) {
        // Same operation order as the portable path and the reference: ((acc * xs) * ws) + b, each
        // a separately rounded fp32 operation (the build disables contraction into FMA).
        __m256 y = _mm256_mul_ps(_mm256_mul_ps(_mm256_cvtepi32_ps(acc[r][v]), xs), w_scale[v]);
        if (a.bias_f != nullptr) y = _mm256_add_ps(y, bias[v]);
        if (full[v]) {
          _mm256_storeu_ps(o + 8 * v, y);
        } else {
          _mm256_maskstore_ps(o + 8 * v, valid[v], y);
        }
      }
    }
  }
}

using TileFn = void (*)(const Int8GemmArgs&, const int16_t*, int64_t, int64_t, int);

// [MR - 1][kind]: kind 0 = full block, 1 = partial block of 9..15 rows, 2 = partial of 1..8 rows.
constexpr TileFn kTiles[kTileRows][3] = {
    {tile<1, 2, false>, tile<1, 2, true>, tile<1, 1, true>},
    {tile<2, 2, false>, tile<2, 2, true>, tile<2, 1, true>},
    {tile<3, 2, false>, tile<3, 2, true>, tile<3, 1, true>},
    {tile<4, 2, false>, tile<4, 2, true>, tile<4, 1, true>},
};

}  // namespace

void int8_gemm_run_avx2(const Int8GemmArgs& args, const Int8GemmPlan& plan, int64_t task_begin, int64_t task_end) {
  // Widened rows of x, kept per thread across calls. A task's whole row chunk is widened once and
  // reused by the following tasks of the same chunk (its other panels: all of them when the plan
  // has one chunk, as on one thread or in the conv), unless the chunk would take more than
  // kWholeChunkBytes; then each tile's rows are widened on their own, once per panel.
  constexpr int64_t kWholeChunkBytes = int64_t{2} << 20;
  thread_local std::vector<int16_t> widened;
  const int64_t k_pad = args.w.k_pad;
  const bool whole_chunk = plan.chunk_rows * k_pad * 2 <= kWholeChunkBytes;
  const size_t need = static_cast<size_t>((whole_chunk ? plan.chunk_rows : kTileRows) * k_pad);
  if (widened.size() < need) widened.resize(need);
  int16_t* xw = widened.data();
  int64_t widened_chunk = -1;  // the chunk whose rows xw holds (whole_chunk only)
  for (int64_t t = task_begin; t < task_end; ++t) {
    const int64_t panel = t / plan.row_chunks, chunk = t % plan.row_chunks;
    const int64_t m_begin = chunk * plan.chunk_rows;
    const int64_t m_end = args.m < m_begin + plan.chunk_rows ? args.m : m_begin + plan.chunk_rows;
    const int64_t n_begin = panel * kInt8PanelCols;
    const int64_t n_end = args.w.n < n_begin + kInt8PanelCols ? args.w.n : n_begin + kInt8PanelCols;
    if (whole_chunk && chunk != widened_chunk) {
      widen_rows(args, m_begin, m_end - m_begin, xw);
      widened_chunk = chunk;
    }
    for (int64_t m = m_begin; m < m_end; m += kTileRows) {
      const int mr = static_cast<int>(m_end - m < kTileRows ? m_end - m : kTileRows);
      const int16_t* tile_x = xw + (whole_chunk ? (m - m_begin) * k_pad : 0);
      if (!whole_chunk) widen_rows(args, m, mr, xw);
      for (int64_t first = n_begin; first < n_end; first += kInt8BlockRows) {
        const int rows = static_cast<int>(n_end - first < kInt8BlockRows ? n_end - first : kInt8BlockRows);
        const int kind = rows == kInt8BlockRows ? 0 : (rows > 8 ? 1 : 2);
        kTiles[mr - 1][kind](args, tile_x, m, first, rows);
      }
    }
  }
}

void quantize_rows_avx2(const float* x, int64_t cols, int64_t row_begin, int64_t row_end, int32_t qmin, int32_t qmax,
                        int8_t* q, float* scale) {
  // Same arithmetic as quantize_rows_portable: max |x| as the integer max of the bit patterns of
  // |x| (exact in any order; non-finite rows are those whose maximum reaches the exponent mask),
  // one correctly rounded fp32 division per element, round half to even (vroundps), clamp, narrow.
  // The last cols % 8 elements run the same vector code on masked loads (zeros) and a partial store.
  const __m256i abs_mask = _mm256_set1_epi32(static_cast<int32_t>(kFloatAbsMask));
  const __m256 lo = _mm256_set1_ps(static_cast<float>(qmin)), hi = _mm256_set1_ps(static_cast<float>(qmax));
  for (int64_t r = row_begin; r < row_end; ++r) {
    const float* xr = x + r * cols;
    __m256i amax = _mm256_setzero_si256();
    for (int64_t c = 0; c < cols; c += 8) {
      const __m256 v = cols - c >= 8 ? _mm256_loadu_ps(xr + c) : _mm256_maskload_ps(xr + c, lane_mask8(cols - c));
      amax = _mm256_max_epi32(_mm256_and_si256(_mm256_castps_si256(v), abs_mask), amax);
    }
    __m128i m4 = _mm_max_epi32(_mm256_castsi256_si128(amax), _mm256_extracti128_si256(amax, 1));
    m4 = _mm_max_epi32(m4, _mm_shuffle_epi32(m4, _MM_SHUFFLE(1, 0, 3, 2)));
    m4 = _mm_max_epi32(m4, _mm_shuffle_epi32(m4, _MM_SHUFFLE(2, 3, 0, 1)));
    const uint32_t amax_bits = static_cast<uint32_t>(_mm_cvtsi128_si32(m4));
    if (!quantize_rows_scale(amax_bits, qmax, cols, q + r * cols, &scale[r])) continue;  // a NaN or +-Inf
    const __m256 sv = _mm256_set1_ps(scale[r]);
    for (int64_t c = 0; c < cols; c += 8) {
      const bool full = cols - c >= 8;
      const __m256 xv = full ? _mm256_loadu_ps(xr + c) : _mm256_maskload_ps(xr + c, lane_mask8(cols - c));
      __m256 v = _mm256_div_ps(xv, sv);
      v = _mm256_round_ps(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
      v = _mm256_min_ps(_mm256_max_ps(v, lo), hi);
      const __m256i i32 = _mm256_cvtps_epi32(v);
      const __m128i i16 = _mm_packs_epi32(_mm256_castsi256_si128(i32), _mm256_extracti128_si256(i32, 1));
      const __m128i i8 = _mm_packs_epi16(i16, i16);
      if (full) {
        _mm_storel_epi64(reinterpret_cast<__m128i*>(q + r * cols + c), i8);
      } else {
        alignas(16) int8_t tmp[16];
        _mm_store_si128(reinterpret_cast<__m128i*>(tmp), i8);
        std::memcpy(q + r * cols + c, tmp, static_cast<size_t>(cols - c));
      }
    }
  }
}

void quantize_per_tensor_avx2(const float* x, int64_t cols, int64_t row_begin, int64_t row_end,
                              const QuantizePerTensorParams& p, void* q, bool* nonfinite_row) {
  // Same arithmetic as quantize_per_tensor_portable (see the AVX-512 kernel); NaN / +-Inf lanes are
  // those whose exponent bits are all set. The last cols % 8 elements run the same vector code on
  // masked loads (zeros) and a partial store.
  const __m256 scale = _mm256_set1_ps(p.scale);
  const __m256 lo = _mm256_set1_ps(static_cast<float>(p.qmin - p.zero_point));
  const __m256 hi = _mm256_set1_ps(static_cast<float>(p.qmax - p.zero_point));
  const __m256i zp = _mm256_set1_epi32(p.zero_point), exponent = _mm256_set1_epi32(0x7f800000);
  for (int64_t r = row_begin; r < row_end; ++r) {
    const float* xr = x + r * cols;
    uint8_t* qr = static_cast<uint8_t*>(q) + r * cols;
    __m256i nonfinite = _mm256_setzero_si256();
    for (int64_t c = 0; c < cols; c += 8) {
      const bool full = cols - c >= 8;
      const __m256 v = full ? _mm256_loadu_ps(xr + c) : _mm256_maskload_ps(xr + c, lane_mask8(cols - c));
      const __m256i bad =
          _mm256_cmpeq_epi32(_mm256_and_si256(_mm256_castps_si256(v), exponent), exponent);  // NaN or +-Inf
      nonfinite = _mm256_or_si256(nonfinite, bad);
      __m256 t = _mm256_round_ps(_mm256_div_ps(v, scale), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
      t = _mm256_min_ps(_mm256_max_ps(t, lo), hi);
      const __m256i i32 = _mm256_blendv_epi8(_mm256_add_epi32(_mm256_cvtps_epi32(t), zp), zp, bad);
      const __m128i i16 = _mm_packs_epi32(_mm256_castsi256_si128(i32), _mm256_extracti128_si256(i32, 1));
      const __m128i i8 = p.out_signed ? _mm_packs_epi16(i16, i16) : _mm_packus_epi16(i16, i16);
      if (full) {
        _mm_storel_epi64(reinterpret_cast<__m128i*>(qr + c), i8);
      } else {
        alignas(16) uint8_t tmp[16];
        _mm_store_si128(reinterpret_cast<__m128i*>(tmp), i8);
        std::memcpy(qr + c, tmp, static_cast<size_t>(cols - c));
      }
    }
    nonfinite_row[r] = !_mm256_testz_si256(nonfinite, nonfinite);
  }
}

const Int8GemmKernels int8_gemm_kernels_avx2 = {&int8_gemm_run_avx2, nullptr};
const QuantizeRowsKernels quantize_rows_kernels_avx2 = {&quantize_rows_avx2, &quantize_per_tensor_avx2};

}  // namespace ck::cpu
#else
namespace ck::cpu {
const Int8GemmKernels int8_gemm_kernels_avx2 = {&int8_gemm_run_portable, nullptr};
const QuantizeRowsKernels quantize_rows_kernels_avx2 = {&quantize_rows_portable, &quantize_per_tensor_portable};
}  // namespace ck::cpu
#endif
