// AVX-512 codebook linear kernels; compiled for AVX-512 by the pragma below, chosen at run time.
//
// The packed layout (ck/bitpack.h) puts, in lane i of one 64-byte load, the next c = 32/b indices of
// output row n0 + i. The codebook lives in registers as a 16- or 32-entry table:
//   b <= 4: one zmm holding table[j] = codebook[j mod 2^b]; `vpermps` reads only the low 4 bits of
//           each lane, and because the table repeats with period 2^b, the bits of the next indices
//           above bit b do not change the result: no mask is needed, only a right shift by b.
//   b = 5:  `vpermt2ps` over two zmm (32 entries, reads the low 5 bits).
//   b = 6..8: 2^(b-5) `vpermt2ps` over pairs of zmm, then blends selected by bits 5 .. b-1.
// Two strategies, equal bit for bit (same fmaf order per output, see codebook.h):
//   small M (register tiles): per step of k, look up NV vectors of 16 weights in registers and use
//     each for MR rows of x (MR x NV zmm accumulators); the weights never touch memory.
//   large M (decoded tiles): decode a [KC x 64] tile of weights once into an L1-sized buffer and
//     run an fp32 MR x NV microkernel over it for every row of the task; partial sums stay in the
//     output between chunks of k (an fp32 store and reload is exact, so the order is unchanged).
#include "codebook.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <algorithm>

#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq")
// GCC 12 reports its own intrinsics' _mm512_undefined_* placeholders as uninitialized.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#include <immintrin.h>

#include "avx512_lane_mask-inl.h"

namespace ck::cpu {
namespace {

namespace bp = ck::bitpack;

// zmm registers of table for b bits.
constexpr int table_regs(int bits) { return bits <= 4 ? 1 : (1 << (bits - 4)); }

template <int Bits>
struct Table {
  __m512 t[table_regs(Bits)];
};

template <int Bits>
inline Table<Bits> load_table(const float* cb) {
  Table<Bits> tab;
  if constexpr (Bits <= 4) {
    alignas(64) float rep[16];
    for (int j = 0; j < 16; ++j) rep[j] = cb[j & ((1 << Bits) - 1)];
    tab.t[0] = _mm512_load_ps(rep);
  } else {
    for (int r = 0; r < table_regs(Bits); ++r) tab.t[r] = _mm512_loadu_ps(cb + 16 * r);
  }
  return tab;
}

// The codebook entries selected by the low b bits of each lane of v (higher bits are ignored).
template <int Bits>
inline __m512 lookup(__m512i v, const Table<Bits>& tab) {
  if constexpr (Bits <= 4) {
    return _mm512_permutexvar_ps(v, tab.t[0]);
  } else {
    constexpr int kPairs = table_regs(Bits) / 2;
    __m512 r[kPairs];
    for (int p = 0; p < kPairs; ++p) r[p] = _mm512_permutex2var_ps(tab.t[2 * p], v, tab.t[2 * p + 1]);
    int bit = 5;
    for (int width = kPairs; width > 1; width /= 2, ++bit) {
      const __mmask16 upper = _mm512_test_epi32_mask(v, _mm512_set1_epi32(1 << bit));
      for (int p = 0; p < width / 2; ++p) r[p] = _mm512_mask_blend_ps(upper, r[2 * p], r[2 * p + 1]);
    }
    return r[0];
  }
}

// ---------------------------------------------------------------- small M: register tiles

// Bits: index width (the table form and the indices per word follow from it).
// MR: rows of x per tile (1..4 with NV = 4, 5..8 with NV = 2); MR x NV accumulators plus NV words,
//     NV weights and the table fit the 32 zmm registers.
// NV: 16-row blocks per tile: 4 (or 2) for full panels, 1 for the tail (whose last block may be
//     partial).
template <int Bits, int MR, int NV>
void register_tile(const CodebookLinearArgs& a, const Table<Bits>& tab, int64_t m0, int64_t n0) {
  constexpr int kPerWord = 32 / Bits;
  const int64_t k = a.k, full_words = k / kPerWord, tail = k % kPerWord;
  const float* x = a.x + m0 * a.ldx;
  const uint32_t* wp[NV];
  int64_t stride[NV];
  __mmask16 valid[NV];
  for (int v = 0; v < NV; ++v) {
    const int64_t block = (n0 + 16 * v) / 16;
    const int64_t rows = bp::rows_in_block(a.n, block);
    wp[v] = a.packed + block * 16 * a.kw;
    stride[v] = rows;
    valid[v] = lane_mask(rows);
  }
  __m512 acc[MR][NV];
  for (int r = 0; r < MR; ++r)
    for (int v = 0; v < NV; ++v) acc[r][v] = _mm512_setzero_ps();

  auto word_step = [&](int64_t g, int count) {
    __m512i w[NV];
    for (int v = 0; v < NV; ++v) {
      w[v] = NV == 1 ? _mm512_maskz_loadu_epi32(valid[v], wp[v] + g * stride[v])
                     : _mm512_loadu_si512(wp[v] + g * stride[v]);
    }
    const float* xk = x + g * kPerWord;
    for (int j = 0; j < count; ++j) {
      __m512 wv[NV];
      for (int v = 0; v < NV; ++v) {
        wv[v] = lookup<Bits>(w[v], tab);
        w[v] = _mm512_srli_epi32(w[v], Bits);
      }
      for (int r = 0; r < MR; ++r) {
        const __m512 xb = _mm512_set1_ps(xk[r * a.ldx + j]);
        for (int v = 0; v < NV; ++v) acc[r][v] = _mm512_fmadd_ps(xb, wv[v], acc[r][v]);
      }
    }
  };
  for (int64_t g = 0; g < full_words; ++g) word_step(g, kPerWord);
  if (tail != 0) word_step(full_words, static_cast<int>(tail));

  for (int v = 0; v < NV; ++v) {
    const int64_t n = n0 + 16 * v;
    const __m512 b = a.bias != nullptr ? _mm512_maskz_loadu_ps(valid[v], a.bias + n) : _mm512_setzero_ps();
    for (int r = 0; r < MR; ++r) {
      __m512 y = acc[r][v];
      if (a.bias != nullptr) y = _mm512_add_ps(y, b);
      _mm512_mask_storeu_ps(a.out + (m0 + r) * a.ldo + n, valid[v], y);
    }
  }
}

template <int Bits, int NV>
void register_rows(const CodebookLinearArgs& a, const Table<Bits>& tab, int64_t m_begin, int64_t m_end, int64_t n0) {
  int64_t m = m_begin;
  for (; m + 4 <= m_end; m += 4) register_tile<Bits, 4, NV>(a, tab, m, n0);
  switch (m_end - m) {
    case 3:
      register_tile<Bits, 3, NV>(a, tab, m, n0);
      break;
    case 2:
      register_tile<Bits, 2, NV>(a, tab, m, n0);
      break;
    case 1:
      register_tile<Bits, 1, NV>(a, tab, m, n0);
      break;
    default:
      break;
  }
}

// 5..8 rows over a full panel, as two halves of 32 columns: MR x 2 tiles look each weight up once
// per up to 8 rows (MR x 4 tiles would need 4 x 8 accumulators, more than the 32 registers), and
// MR x 2 >= 10 independent accumulation chains still hide the FMA latency.
template <int Bits>
void register_tall(const CodebookLinearArgs& a, const Table<Bits>& tab, int64_t m, int rows, int64_t n0) {
  for (int64_t half = n0; half < n0 + kCodebookPanelCols; half += 32) {
    switch (rows) {
      case 8:
        register_tile<Bits, 8, 2>(a, tab, m, half);
        break;
      case 7:
        register_tile<Bits, 7, 2>(a, tab, m, half);
        break;
      case 6:
        register_tile<Bits, 6, 2>(a, tab, m, half);
        break;
      default:
        register_tile<Bits, 5, 2>(a, tab, m, half);
        break;
    }
  }
}

// One panel (n0 .. n_last) whose rows all use the codebook `cb`.
template <int Bits>
void register_panel(const CodebookLinearArgs& a, const float* cb, int64_t m_begin, int64_t m_end, int64_t n0,
                    int64_t n_last) {
  const Table<Bits> tab = load_table<Bits>(cb);
  if (n_last - n0 == kCodebookPanelCols) {
    int64_t m = m_begin;
    for (; m_end - m >= 5; m += std::min<int64_t>(8, m_end - m)) {
      register_tall<Bits>(a, tab, m, static_cast<int>(std::min<int64_t>(8, m_end - m)), n0);
    }
    register_rows<Bits, 4>(a, tab, m, m_end, n0);
  } else {
    for (int64_t n = n0; n < n_last; n += 16) register_rows<Bits, 1>(a, tab, m_begin, m_end, n);
  }
}

// ---------------------------------------------------------------- large M: decoded tiles

constexpr int64_t kTileTargetK = 128;  // k per decoded tile: 128 x 64 fp32 = 32 KiB, about L1
constexpr int kTileRows = 6;           // rows of x per microkernel: 6 x 4 = 24 zmm accumulators

// Decodes words [g_begin, g_end) of the 16-row block at n0 into buf[(kk - k_first) * 64 + lane]
// for kk in the chunk. Lanes past the block's rows hold garbage (their outputs are never stored).
template <int Bits>
void decode_block(const CodebookLinearArgs& a, int64_t n0, int64_t g_begin, int64_t g_end, float* buf) {
  constexpr int kPerWord = 32 / Bits;
  const int64_t block = n0 / 16, rows = bp::rows_in_block(a.n, block);
  const uint32_t* wp = a.packed + block * 16 * a.kw;
  const __mmask16 valid = lane_mask(rows);
  const int64_t entries = int64_t{1} << Bits;
  const int64_t g_first = n0 / a.group_rows, g_lastrow = (n0 + rows - 1) / a.group_rows;
  const int64_t k_first = g_begin * kPerWord;
  if (g_first == g_lastrow) {
    const Table<Bits> tab = load_table<Bits>(a.codebook + g_first * entries);
    for (int64_t g = g_begin; g < g_end; ++g) {
      __m512i w = _mm512_maskz_loadu_epi32(valid, wp + g * rows);
      const int count = static_cast<int>(std::min<int64_t>(kPerWord, a.k - g * kPerWord));
      float* dst = buf + (g * kPerWord - k_first) * kCodebookPanelCols;
      for (int j = 0; j < count; ++j) {
        _mm512_store_ps(dst + j * kCodebookPanelCols, lookup<Bits>(w, tab));
        w = _mm512_srli_epi32(w, Bits);
      }
    }
  } else {
    // The block straddles codebook groups (group_rows not a multiple of 16): decode lane by lane.
    for (int64_t g = g_begin; g < g_end; ++g) {
      const int count = static_cast<int>(std::min<int64_t>(kPerWord, a.k - g * kPerWord));
      float* dst = buf + (g * kPerWord - k_first) * kCodebookPanelCols;
      for (int64_t i = 0; i < rows; ++i) {
        const float* cb = a.codebook + ((n0 + i) / a.group_rows) * entries;
        uint32_t w = wp[g * rows + i];
        for (int j = 0; j < count; ++j, w >>= Bits) dst[j * kCodebookPanelCols + i] = cb[w & (entries - 1)];
      }
    }
  }
}

// MR: rows of x (1..6). NV: 16-row blocks (1..4). `first` starts the accumulators at zero, else at
// the partial sums stored in out; `last` adds the bias.
template <int MR, int NV>
void decoded_tile(const CodebookLinearArgs& a, const float* buf, int64_t kc, int64_t k_first, int64_t m0, int64_t n0,
                  int last_rows, bool first, bool last) {
  __mmask16 valid[NV];
  for (int v = 0; v < NV; ++v) valid[v] = v == NV - 1 ? lane_mask(last_rows) : static_cast<__mmask16>(0xFFFF);
  __m512 acc[MR][NV];
  for (int r = 0; r < MR; ++r)
    for (int v = 0; v < NV; ++v)
      acc[r][v] = first ? _mm512_setzero_ps() : _mm512_maskz_loadu_ps(valid[v], a.out + (m0 + r) * a.ldo + n0 + 16 * v);
  const float* x = a.x + m0 * a.ldx + k_first;
  for (int64_t kk = 0; kk < kc; ++kk) {
    __m512 w[NV];
    for (int v = 0; v < NV; ++v) w[v] = _mm512_load_ps(buf + kk * kCodebookPanelCols + 16 * v);
    for (int r = 0; r < MR; ++r) {
      const __m512 xb = _mm512_set1_ps(x[r * a.ldx + kk]);
      for (int v = 0; v < NV; ++v) acc[r][v] = _mm512_fmadd_ps(xb, w[v], acc[r][v]);
    }
  }
  for (int v = 0; v < NV; ++v) {
    const int64_t n = n0 + 16 * v;
    __m512 b = _mm512_setzero_ps();
    if (last && a.bias != nullptr) b = _mm512_maskz_loadu_ps(valid[v], a.bias + n);
    for (int r = 0; r < MR; ++r) {
      __m512 y = acc[r][v];
      if (last && a.bias != nullptr) y = _mm512_add_ps(y, b);
      _mm512_mask_storeu_ps(a.out + (m0 + r) * a.ldo + n, valid[v], y);
    }
  }
}

using DecodedTileFn = void (*)(const CodebookLinearArgs&, const float*, int64_t, int64_t, int64_t, int64_t, int, bool,
                               bool);

template <int MR>
constexpr DecodedTileFn decoded_row[4] = {decoded_tile<MR, 1>, decoded_tile<MR, 2>, decoded_tile<MR, 3>,
                                          decoded_tile<MR, 4>};
constexpr const DecodedTileFn* decoded_table[kTileRows] = {decoded_row<1>, decoded_row<2>, decoded_row<3>,
                                                           decoded_row<4>, decoded_row<5>, decoded_row<6>};

template <int Bits>
void decoded_panel(const CodebookLinearArgs& a, int64_t m_begin, int64_t m_end, int64_t n0, int64_t n_last) {
  constexpr int kPerWord = 32 / Bits;
  constexpr int64_t kWordsPerTile = (kTileTargetK + kPerWord - 1) / kPerWord;
  alignas(64) float buf[kWordsPerTile * kPerWord * kCodebookPanelCols];
  const int64_t cols = n_last - n0;
  const int nv = static_cast<int>((cols + 15) / 16);
  const int last_rows = static_cast<int>(cols - 16 * (nv - 1));
  for (int64_t g0 = 0; g0 < a.kw; g0 += kWordsPerTile) {
    const int64_t g1 = std::min(a.kw, g0 + kWordsPerTile);
    const int64_t k_first = g0 * kPerWord, kc = std::min(a.k, g1 * kPerWord) - k_first;
    for (int v = 0; v < nv; ++v) decode_block<Bits>(a, n0 + 16 * v, g0, g1, buf + 16 * v);
    const bool first = g0 == 0, last = g1 == a.kw;
    for (int64_t m = m_begin; m < m_end; m += kTileRows) {
      const int mr = static_cast<int>(std::min<int64_t>(kTileRows, m_end - m));
      decoded_table[mr - 1][nv - 1](a, buf, kc, k_first, m, n0, last_rows, first, last);
    }
  }
}

template <int Bits>
void run_bits(const CodebookLinearArgs& a, const CodebookPlan& plan, int64_t task_begin, int64_t task_end) {
  const int64_t entries = int64_t{1} << Bits;
  for (int64_t t = task_begin; t < task_end; ++t) {
    const auto [m_begin, m_end, n0, n_last] = plan.task(a, t);
    const bool one_codebook = n0 / a.group_rows == (n_last - 1) / a.group_rows;
    if (!plan.decode_tiles && one_codebook) {
      register_panel<Bits>(a, a.codebook + (n0 / a.group_rows) * entries, m_begin, m_end, n0, n_last);
    } else {
      decoded_panel<Bits>(a, m_begin, m_end, n0, n_last);
    }
  }
}

}  // namespace

void codebook_linear_run_avx512vnni(const CodebookLinearArgs& args, const CodebookPlan& plan, int64_t task_begin,
                                    int64_t task_end) {
  switch (args.bits) {
    case 1:
      run_bits<1>(args, plan, task_begin, task_end);
      break;
    case 2:
      run_bits<2>(args, plan, task_begin, task_end);
      break;
    case 3:
      run_bits<3>(args, plan, task_begin, task_end);
      break;
    case 4:
      run_bits<4>(args, plan, task_begin, task_end);
      break;
    case 5:
      run_bits<5>(args, plan, task_begin, task_end);
      break;
    case 6:
      run_bits<6>(args, plan, task_begin, task_end);
      break;
    case 7:
      run_bits<7>(args, plan, task_begin, task_end);
      break;
    default:
      run_bits<8>(args, plan, task_begin, task_end);
      break;
  }
}

const CodebookKernels codebook_kernels_avx512vnni = {&codebook_linear_run_avx512vnni};

}  // namespace ck::cpu
#else
namespace ck::cpu {
const CodebookKernels codebook_kernels_avx512vnni = {&codebook_linear_run_portable};
}  // namespace ck::cpu
#endif
