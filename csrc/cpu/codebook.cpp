#include "codebook.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "dispatch.h"

namespace ck::cpu {

namespace bp = ck::bitpack;

void codebook_pack(const uint8_t* idx, int64_t n, int64_t k, int64_t ld, int bits, uint32_t* out) {
  const int64_t c = bp::per_word(bits), kw = bp::words_per_row(k, bits);
  for (int64_t r = 0; r < n; ++r) {
    for (int64_t g = 0; g < kw; ++g) {
      const int64_t first = g * c;
      out[bp::word_offset(n, kw, r, g)] = bp::pack_word(idx + r * ld + first, std::min(c, k - first), bits);
    }
  }
}

void codebook_unpack(const uint32_t* packed, int64_t n, int64_t k, int bits, uint8_t* idx) {
  const int64_t kw = bp::words_per_row(k, bits);
  for (int64_t r = 0; r < n; ++r) {
    for (int64_t kk = 0; kk < k; ++kk) {
      idx[r * k + kk] = static_cast<uint8_t>(bp::get_index(packed, n, kw, bits, r, kk));
    }
  }
}

void codebook_decode_rows(const uint32_t* packed, int64_t n, int64_t k, int bits, const float* codebook,
                          int64_t group_rows, int64_t row_begin, int64_t row_end, float* w) {
  const int64_t kw = bp::words_per_row(k, bits), per_word = bp::per_word(bits), entries = int64_t{1} << bits;
  const uint32_t mask = (1u << bits) - 1u;
  for (int64_t r = row_begin; r < row_end; ++r) {
    const float* cb = codebook + (r / group_rows) * entries;
    float* out = w + r * k;
    for (int64_t g = 0; g < kw; ++g) {
      uint32_t word = packed[bp::word_offset(n, kw, r, g)];
      const int64_t count = std::min(per_word, k - g * per_word);
      for (int64_t j = 0; j < count; ++j, word >>= bits) out[g * per_word + j] = cb[word & mask];
    }
  }
}

void codebook_im2col(const float* x, const Im2colShape& s, int64_t row_begin, int64_t row_end, float* cols) {
  const int64_t row_len = s.channels * s.kh * s.kw;
  for (int64_t r = row_begin; r < row_end; ++r) {
    const int64_t b = r / (s.ho * s.wo), oy = r / s.wo % s.ho, ox = r % s.wo;
    float* dst = cols + r * row_len;
    for (int64_t c = 0; c < s.channels; ++c) {
      const float* plane = x + (b * s.channels + c) * s.h * s.w;
      for (int64_t i = 0; i < s.kh; ++i) {
        const int64_t y = oy * s.sh - s.ph + i * s.dh;
        const bool row_in = y >= 0 && y < s.h;
        for (int64_t j = 0; j < s.kw; ++j) {
          const int64_t xx = ox * s.sw - s.pw + j * s.dw;
          *dst++ = row_in && xx >= 0 && xx < s.w ? plane[y * s.w + xx] : 0.0f;
        }
      }
    }
  }
}

// Rows per row chunk: a multiple of both microkernels' row tiles (4 and 6).
constexpr int64_t kChunkRowUnit = 12;
// From this many rows on, decoding a tile of weights once and reusing it across rows beats
// looking up each weight in registers once per row tile (measured in benchmarks/bench_codebook.py).
constexpr int64_t kDecodeTilesFromRows = 16;

CodebookPlan codebook_plan(const CodebookLinearArgs& args, int64_t threads) {
  CodebookPlan plan;
  const int64_t cols = args.n_end - args.n_begin;
  plan.panels = (cols + kCodebookPanelCols - 1) / kCodebookPanelCols;
  plan.decode_tiles = args.m >= kDecodeTilesFromRows;
  const int64_t target_tasks = 4 * std::max<int64_t>(threads, 1);
  const int64_t units = std::max<int64_t>((args.m + kChunkRowUnit - 1) / kChunkRowUnit, 1);
  int64_t chunks = 1;
  if (plan.panels < target_tasks) {
    chunks = std::min(units, (target_tasks + plan.panels - 1) / std::max<int64_t>(plan.panels, 1));
  }
  plan.chunk_rows = (units + chunks - 1) / chunks * kChunkRowUnit;
  plan.row_chunks = std::max<int64_t>((args.m + plan.chunk_rows - 1) / plan.chunk_rows, 1);
  return plan;
}

void codebook_linear_run_portable(const CodebookLinearArgs& a, const CodebookPlan& plan, int64_t task_begin,
                                  int64_t task_end) {
  const int64_t entries = int64_t{1} << a.bits;
  // One decoded weight row, reused across the rows of x (thread-local: allocated once per thread).
  thread_local std::vector<float> row;
  if (static_cast<int64_t>(row.size()) < a.k) row.resize(static_cast<size_t>(a.k));
  const uint32_t* packed = a.packed;
  for (int64_t t = task_begin; t < task_end; ++t) {
    const auto [m_begin, m_end, n_first, n_last] = plan.task(a, t);
    for (int64_t n = n_first; n < n_last; ++n) {
      const float* cb = a.codebook + (n / a.group_rows) * entries;
      for (int64_t kk = 0; kk < a.k; ++kk) row[kk] = cb[bp::get_index(packed, a.n, a.kw, a.bits, n, kk)];
      for (int64_t m = m_begin; m < m_end; ++m) {
        const float* xr = a.x + m * a.ldx;
        float acc = 0.0f;
        for (int64_t kk = 0; kk < a.k; ++kk) acc = std::fmaf(xr[kk], row[kk], acc);
        if (a.bias != nullptr) acc = acc + a.bias[n];
        a.out[m * a.ldo + n] = acc;
      }
    }
  }
}

void codebook_linear_run(const CodebookLinearArgs& args, const CodebookPlan& plan, int64_t task_begin,
                         int64_t task_end) {
  codebook_tiers.active().linear_run(args, plan, task_begin, task_end);
}

const CodebookKernels codebook_kernels_portable = {&codebook_linear_run_portable};

int64_t codebook_bf16_tile_min_rows(int bits, int64_t group_rows) {
  const bool shared_blocks = group_rows % 16 == 0;  // every 16-column block within one codebook
  if (!shared_blocks || bits >= 7) return 8;
  return bits == 6 ? 16 : 12;
}

bool codebook_bf16_uses_tiles(int64_t m, int bits, int64_t group_rows) {
  return (enabled_tiers() & kTileTiers) != 0 && m >= codebook_bf16_tile_min_rows(bits, group_rows);
}

void codebook_bf16_run(const CodebookBf16Args& args, const Int8GemmPlan& plan, int64_t task_begin, int64_t task_end) {
  codebook_bf16_tiers.active().run(args, plan, task_begin, task_end);
}

constexpr TierTable<CodebookBf16Kernels> codebook_bf16_tiers{
    codebook_bf16_kernels_amx_emulated,
    {
        {Tier::kAmx, &codebook_bf16_kernels_amx},
        {Tier::kAmxEmulated, &codebook_bf16_kernels_amx_emulated},
    }};

constexpr TierTable<CodebookKernels> codebook_tiers{codebook_kernels_portable,
                                                    {
                                                        {Tier::kAvx2, &codebook_kernels_avx2},
                                                        {Tier::kAvx512Vnni, &codebook_kernels_avx512vnni},
                                                    }};

}  // namespace ck::cpu
