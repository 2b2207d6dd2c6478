// The bf16 codebook_linear on the tile instructions, with an AVX-512 decoder and output stage. Chosen at run time
// (tile_unit() == kHardware).
#include "codebook.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,avx512vbmi,amx-tile,amx-int8,amx-bf16")
// GCC 12 reports its own intrinsics' _mm512_undefined_* placeholders as uninitialized.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#include <immintrin.h>

#include "amx_hardware_tiles-inl.h"
#include "bf16_avx512-inl.h"
#include "codebook_amx-inl.h"

namespace ck::cpu {
namespace {

// A block of up to 16 columns, one k pair (one 64-byte tile row) per step. Lane i is column n0 + i: word g of
// the block's rows is one masked 64-byte load (ck/bitpack.h interleaves the block's rows), index j of it a
// variable shift and a mask. The two indices of a pair become the halves of one dword; when the block's
// columns share one codebook, it sits in registers and one lookup (vpermw up to 5 bits, vpermi2w and blends
// above) serves both, and where a word holds an even number of indices (every width but 6 bits) whole words go
// at once, one vpmultishiftqb per pair; otherwise each lane gathers from its own codebook (the glue pads the
// codebook by two entries, so a 4-byte gather at the last entry stays inside it).
struct Avx512CodebookDecode {
  static void block(const CodebookBf16Args& a, int64_t n0, int cols, int64_t chunks, uint8_t* dst) {
    const int bits = a.bits;
    const int64_t per_word = bitpack::per_word(bits), entries = int64_t{1} << bits;
    const uint32_t* words = a.packed + n0 * a.kw;  // block n0 / 16 starts at word 16 * block * kw
    const __mmask16 lanes = static_cast<__mmask16>(cols == 16 ? 0xffff : (1u << cols) - 1u);
    const __m512i index_mask = _mm512_set1_epi32(static_cast<int>(entries - 1));
    const __m512i low_half = _mm512_set1_epi32(0xffff);
    const int64_t first_group = n0 / a.group_rows, last_group = (n0 + cols - 1) / a.group_rows;
    const bool shared = first_group == last_group;
    // A shared codebook in registers: 32 bf16 entries per zmm (1 for up to 5 bits, 2 / 4 / 8 for 6 / 7 / 8).
    __m512i table[8], base = _mm512_setzero_si512();
    const int table_regs = shared ? static_cast<int>(entries + 31) / 32 : 0;
    for (int r = 0; r < table_regs; ++r) {
      const int64_t left = entries - 32 * r;
      table[r] = _mm512_maskz_loadu_epi16(static_cast<__mmask32>(left >= 32 ? 0xffffffffu : (1u << left) - 1u),
                                          a.codebook + first_group * entries + 32 * r);
    }
    if (!shared) {
      alignas(64) int32_t b[16];
      for (int i = 0; i < 16; ++i) b[i] = static_cast<int32_t>(((n0 + (i < cols ? i : 0)) / a.group_rows) * entries);
      base = _mm512_load_si512(b);
    }
    auto index_at = [&](int64_t kk) {
      const int64_t g = kk / per_word;
      const __m512i w = _mm512_maskz_loadu_epi32(lanes, words + g * cols);
      return _mm512_and_si512(_mm512_srl_epi32(w, _mm_cvtsi32_si128(static_cast<int>((kk - g * per_word) * bits))),
                              index_mask);
    };
    // The entries of a shared codebook at the 16-bit indices of idx (each 16-bit lane < entries): one vpermw up to 5
    // bits, one vpermi2w per 64 entries above, the halves picked by index bits 6 and 7.
    auto lookup = [&](__m512i idx) {
      if (table_regs == 1) return _mm512_permutexvar_epi16(idx, table[0]);
      __m512i part[4];
      for (int q = 0; q < table_regs / 2; ++q) part[q] = _mm512_permutex2var_epi16(table[2 * q], idx, table[2 * q + 1]);
      for (int width = table_regs / 2, bit = 6; width > 1; width /= 2, ++bit) {
        const __mmask32 upper = _mm512_test_epi16_mask(idx, _mm512_set1_epi16(static_cast<int16_t>(1 << bit)));
        for (int q = 0; q < width / 2; ++q) part[q] = _mm512_mask_blend_epi16(upper, part[2 * q], part[2 * q + 1]);
      }
      return part[0];
    };
    auto gather = [&](__m512i idx) {
      const __m512i v =
          _mm512_mask_i32gather_epi32(_mm512_setzero_si512(), lanes, _mm512_add_epi32(base, idx), a.codebook, 2);
      return _mm512_and_si512(v, low_half);
    };
    int64_t kk = 0;
    if (shared && per_word % 2 == 0) {
      // Whole words (per_word k = per_word / 2 tile rows) at once: vpmultishiftqb moves the pair (k = g * per_word
      // + 2s, + 2s + 1) of each lane, bits [2s * bits, ...) and [(2s + 1) * bits, ...) of its word, to bits 0 and
      // 16 of the lane (each qword holds two lanes, hence the second pair of offsets + 32).
      const int pairs = static_cast<int>(per_word / 2);
      const __m512i pair_mask = _mm512_set1_epi32(static_cast<int>((entries - 1) | (entries - 1) << 16));
      __m512i pair_ctrl[16];
      for (int p = 0; p < pairs; ++p) {
        const uint64_t lo = static_cast<uint64_t>(2 * p * bits), hi = lo + static_cast<uint64_t>(bits);
        pair_ctrl[p] = _mm512_set1_epi64(static_cast<long long>(lo | hi << 16 | (32 + lo) << 32 | (32 + hi) << 48));
      }
      for (; kk + per_word <= a.k; kk += per_word) {
        const __m512i w = _mm512_maskz_loadu_epi32(lanes, words + (kk / per_word) * cols);
        for (int p = 0; p < pairs; ++p) {
          const __m512i idx = _mm512_and_si512(_mm512_multishift_epi64_epi8(pair_ctrl[p], w), pair_mask);
          _mm512_storeu_si512(dst + amx_bf16_offset(kk + 2 * p), _mm512_maskz_mov_epi32(lanes, lookup(idx)));
        }
      }
    }
    for (; kk < chunks * kAmxBf16ChunkK; kk += 2) {
      uint8_t* row = dst + amx_bf16_offset(kk);
      __m512i pair = _mm512_setzero_si512();
      if (kk < a.k) {
        const bool odd = kk + 1 < a.k;
        const __m512i i0 = index_at(kk);
        if (shared) {
          const __m512i i1 = odd ? index_at(kk + 1) : _mm512_setzero_si512();
          pair = lookup(_mm512_or_si512(i0, _mm512_slli_epi32(i1, 16)));
          if (!odd) pair = _mm512_and_si512(pair, low_half);
        } else {
          pair = gather(i0);
          if (odd) pair = _mm512_or_si512(pair, _mm512_slli_epi32(gather(index_at(kk + 1)), 16));
        }
        pair = _mm512_maskz_mov_epi32(lanes, pair);
      }
      _mm512_storeu_si512(row, pair);
    }
  }
};

}  // namespace

void codebook_bf16_run_amx(const CodebookBf16Args& args, const Int8GemmPlan& plan, int64_t task_begin,
                           int64_t task_end) {
  amx_bf16_family_tasks<HardwareTiles, Avx512Bf16Row, Avx512CodebookDecode>(args, plan, task_begin, task_end);
}

}  // namespace ck::cpu
#else  // not x86-64 GCC/Clang: never selected (detected_isa() is portable there)
namespace ck::cpu {
void codebook_bf16_run_amx(const CodebookBf16Args& args, const Int8GemmPlan& plan, int64_t task_begin,
                           int64_t task_end) {
  codebook_bf16_kernels_amx_emulated.run(args, plan, task_begin, task_end);
}
}  // namespace ck::cpu
#endif

namespace ck::cpu {
const CodebookBf16Kernels codebook_bf16_kernels_amx = {&codebook_bf16_run_amx};
}  // namespace ck::cpu
