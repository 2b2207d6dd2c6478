#include "int8_gemm.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "amx_tiles.h"
#include "dispatch.h"

namespace ck::cpu {

void int8_pack_weight(const int8_t* w, int64_t n, int64_t k, int64_t ldw, int32_t* out) {
  const int64_t k_pad = int8_padded_k(k);
  int8_t* data = reinterpret_cast<int8_t*>(out);
  int32_t* row_sum = out + n * k_pad / 4;
  int32_t* k_trailer = row_sum + n;
  for (int64_t block = 0; block * kInt8BlockRows < n; ++block) {
    const int64_t first = block * kInt8BlockRows;
    const int64_t rows = std::min(kInt8BlockRows, n - first);
    int8_t* dst = data + first * k_pad;
    for (int64_t g = 0; g < k_pad / 4; ++g) {
      for (int64_t i = 0; i < rows; ++i) {
        for (int64_t j = 0; j < 4; ++j) {
          const int64_t kk = 4 * g + j;
          dst[(g * rows + i) * 4 + j] = kk < k ? w[(first + i) * ldw + kk] : int8_t{0};
        }
      }
    }
  }
  for (int64_t r = 0; r < n; ++r) {
    int32_t s = 0;
    for (int64_t kk = 0; kk < k; ++kk) s += w[r * ldw + kk];
    row_sum[r] = s;
    k_trailer[r] = static_cast<int32_t>(k);
  }
}

PackedInt8Weight int8_packed_view(const int32_t* packed, int64_t n, int64_t words_per_row) {
  const int64_t k_pad = (words_per_row - 2) * 4;
  PackedInt8Weight v;
  v.data = reinterpret_cast<const int8_t*>(packed);
  v.row_sum = packed + n * k_pad / 4;
  v.n = n;
  v.k_pad = k_pad;
  v.k = n > 0 ? v.row_sum[n] : 0;
  return v;
}

bool int8_gemm_uses_amx(int64_t m, int64_t n, int64_t k) {
  if ((tier_bit(int8_gemm_tiers.select(enabled_tiers())) & kTileTiers) == 0) return false;
  return m >= 9 || (m == 8 && n * k <= (int64_t{4} << 20));
}

Int8GemmPlan int8_gemm_plan(int64_t m, int64_t n, int64_t threads, int64_t k) {
  Int8GemmPlan plan;
  plan.amx = int8_gemm_uses_amx(m, n, k);
  const int64_t tile_rows = plan.amx ? 2 * kAmxTileRows : kInt8TileRows;
  plan.panels = (n + kInt8PanelCols - 1) / kInt8PanelCols;
  const int64_t target_tasks = 4 * std::max<int64_t>(threads, 1);
  const int64_t tiles = std::max<int64_t>((m + tile_rows - 1) / tile_rows, 1);
  int64_t chunks = 1;
  if (plan.panels < target_tasks) {
    chunks = std::min(tiles, (target_tasks + plan.panels - 1) / std::max<int64_t>(plan.panels, 1));
  }
  if (plan.amx) {
    // The tile kernel streams its chunk of x once per panel: keep the chunk within kAmxChunkBytes
    // (half of a 2 MB L2) and walk the tasks chunk-major, so a thread's consecutive tasks share
    // the chunk from L2 and stream the weight panels (without it, M = 1024 and K = N = 4096 read all of x from memory
    // once per 64 columns).
    const int64_t max_tiles = std::max<int64_t>(1, kAmxChunkBytes / (tile_rows * int8_padded_k(k)));
    chunks = std::max(chunks, (tiles + max_tiles - 1) / max_tiles);
    plan.chunk_major = true;
  }
  const int64_t tiles_per_chunk = (tiles + chunks - 1) / chunks;
  plan.chunk_rows = tiles_per_chunk * tile_rows;
  plan.row_chunks = std::max<int64_t>((m + plan.chunk_rows - 1) / plan.chunk_rows, 1);
  return plan;
}

Int8GemmPlan amx_bf16_plan(int64_t m, int64_t n, int64_t threads) {
  Int8GemmPlan plan;
  plan.amx = true;
  plan.panels = (n + kInt8PanelCols - 1) / kInt8PanelCols;
  // Every task decodes its panel (K x 64 weights) once, so rows are split only as far as it takes to
  // give each thread two tasks.
  const int64_t row_pairs = std::max<int64_t>((m + 2 * kAmxTileRows - 1) / (2 * kAmxTileRows), 1);
  const int64_t target_tasks = 2 * std::max<int64_t>(threads, 1);
  const int64_t chunks =
      plan.panels >= target_tasks ? 1 : std::min(row_pairs, (target_tasks + plan.panels - 1) / plan.panels);
  plan.chunk_rows = (row_pairs + chunks - 1) / chunks * 2 * kAmxTileRows;
  plan.row_chunks = std::max<int64_t>((m + plan.chunk_rows - 1) / plan.chunk_rows, 1);
  return plan;
}

void write_output(const Int8GemmArgs& a, int64_t m, int64_t n, int32_t acc) {
  const int64_t o = m * a.out_stride() + n;
  switch (a.kind) {
    case EpilogueKind::kInt32:
      static_cast<int32_t*>(a.out)[o] = acc;
      return;
    case EpilogueKind::kFloat: {
      // Three separately rounded fp32 operations, in this order (the build disables contraction).
      float y = static_cast<float>(acc) * a.x_scale[a.x_scale_per_row ? m : 0];
      y = y * a.w_scale[a.w_scale_per_channel ? n : 0];
      if (a.bias_f != nullptr) y = y + a.bias_f[n];
      static_cast<float*>(a.out)[o] = y;
      return;
    }
    case EpilogueKind::kRequantize: {
      const RequantParams& p = a.requant;
      const int64_t ch = p.per_channel ? n : 0;
      store_requantized(a.out, o, Requantize(acc, p.m0[ch], p.shift[ch], p.zero_point, p.qmin, p.qmax, p.rounding), p);
      return;
    }
  }
}

namespace {

template <typename XT>
void run_portable_typed(const Int8GemmArgs& a, const Int8GemmPlan& plan, int64_t task_begin, int64_t task_end) {
  const XT* x = static_cast<const XT*>(a.x);
  const int64_t k = a.w.k, k_pad = a.w.k_pad;
  for (int64_t t = task_begin; t < task_end; ++t) {
    const int64_t panel = t / plan.row_chunks, chunk = t % plan.row_chunks;
    const int64_t m_begin = chunk * plan.chunk_rows;
    const int64_t m_end = std::min(a.m, m_begin + plan.chunk_rows);
    const int64_t n_begin = panel * kInt8PanelCols;
    const int64_t n_end = std::min(a.w.n, n_begin + kInt8PanelCols);
    for (int64_t m = m_begin; m < m_end; ++m) {
      const XT* xr = x + m * a.ldx;
      for (int64_t first = n_begin; first < n_end; first += kInt8BlockRows) {
        const int64_t rows = std::min(kInt8BlockRows, a.w.n - first);
        const int8_t* block = a.w.data + first * k_pad;
        int32_t acc[kInt8BlockRows] = {0};
        for (int64_t g = 0; g * 4 < k; ++g) {
          const int8_t* wg = block + g * rows * 4;
          for (int64_t i = 0; i < rows; ++i) {
            int32_t s = 0;
            for (int64_t j = 0; j < 4 && 4 * g + j < k; ++j) {
              s += static_cast<int32_t>(xr[4 * g + j]) * static_cast<int32_t>(wg[i * 4 + j]);
            }
            acc[i] += s;
          }
        }
        for (int64_t i = 0; i < rows; ++i) {
          write_output(a, m, first + i, int8_corrected_acc(a, first + i, acc[i]));
        }
      }
    }
  }
}

}  // namespace

void int8_gemm_run_portable(const Int8GemmArgs& args, const Int8GemmPlan& plan, int64_t task_begin, int64_t task_end) {
  if (args.x_signed) {
    run_portable_typed<int8_t>(args, plan, task_begin, task_end);
  } else {
    run_portable_typed<uint8_t>(args, plan, task_begin, task_end);
  }
}

void int8_gemm_run(const Int8GemmArgs& args, const Int8GemmPlan& plan, int64_t task_begin, int64_t task_end) {
  int8_gemm_tiers.kernels(enabled_tiers(plan.amx)).run(args, plan, task_begin, task_end);
}

void int8_conv_direct_run(const Int8GemmArgs& args, const Int8GemmPlan& plan, const int64_t* a_offsets,
                          const VirtualConvRows& rows, int64_t task_begin, int64_t task_end) {
  int8_gemm_tiers.kernels(enabled_tiers(plan.amx)).conv_direct_run(args, plan, a_offsets, rows, task_begin, task_end);
}

const Int8GemmKernels int8_gemm_kernels_portable = {&int8_gemm_run_portable, nullptr};

constexpr TierTable<Int8GemmKernels> int8_gemm_tiers{int8_gemm_kernels_portable,
                                                     {
                                                         {Tier::kAvx2, &int8_gemm_kernels_avx2},
                                                         {Tier::kAvx512Vnni, &int8_gemm_kernels_avx512vnni},
                                                         {Tier::kAmx, &int8_gemm_kernels_amx},
                                                         {Tier::kAmxEmulated, &int8_gemm_kernels_amx_emulated},
                                                     }};

void quantize_rows(const float* x, int64_t rows, int64_t cols, int64_t row_begin, int64_t row_end, int32_t qmin,
                   int32_t qmax, int8_t* q, float* scale) {
  (void)rows;
  quantize_rows_tiers.active().rows(x, cols, row_begin, row_end, qmin, qmax, q, scale);
}

void quantize_rows_portable(const float* x, int64_t cols, int64_t row_begin, int64_t row_end, int32_t qmin,
                            int32_t qmax, int8_t* q, float* scale) {
  for (int64_t r = row_begin; r < row_end; ++r) {
    const float* xr = x + r * cols;
    uint32_t amax_bits = 0;  // max of the bit patterns of |x|: see kFloatExponentMask in int8_gemm.h
    for (int64_t c = 0; c < cols; ++c) {
      uint32_t bits;
      std::memcpy(&bits, xr + c, sizeof(bits));
      amax_bits = std::max(amax_bits, bits & kFloatAbsMask);
    }
    if (!quantize_rows_scale(amax_bits, qmax, cols, q + r * cols, &scale[r])) continue;  // a NaN or +-Inf
    const float s = scale[r];
    for (int64_t c = 0; c < cols; ++c) {
      float v = std::nearbyint(xr[c] / s);  // round half to even in the default FP environment
      v = std::min(std::max(v, static_cast<float>(qmin)), static_cast<float>(qmax));
      q[r * cols + c] = static_cast<int8_t>(v);
    }
  }
}

void quantize_per_tensor(const float* x, int64_t cols, int64_t row_begin, int64_t row_end,
                         const QuantizePerTensorParams& p, void* q, bool* nonfinite_row) {
  quantize_rows_tiers.active().per_tensor(x, cols, row_begin, row_end, p, q, nonfinite_row);
}

void quantize_per_tensor_portable(const float* x, int64_t cols, int64_t row_begin, int64_t row_end,
                                  const QuantizePerTensorParams& p, void* q, bool* nonfinite_row) {
  // clamp(r + zero_point, qmin, qmax) == clamp(r, qmin - zero_point, qmax - zero_point) + zero_point
  // for the integer-valued r = round(x / scale) (both bounds are small integers, exact in fp32).
  const float lo = static_cast<float>(p.qmin - p.zero_point), hi = static_cast<float>(p.qmax - p.zero_point);
  for (int64_t r = row_begin; r < row_end; ++r) {
    const float* xr = x + r * cols;
    bool nonfinite = false;
    for (int64_t c = 0; c < cols; ++c) {
      int32_t v = p.zero_point;
      if (std::isfinite(xr[c])) {
        const float t = std::nearbyint(xr[c] / p.scale);  // round half to even in the default FP environment
        v = static_cast<int32_t>(std::min(std::max(t, lo), hi)) + p.zero_point;
      } else {
        nonfinite = true;
      }
      if (p.out_signed) {
        static_cast<int8_t*>(q)[r * cols + c] = static_cast<int8_t>(v);
      } else {
        static_cast<uint8_t*>(q)[r * cols + c] = static_cast<uint8_t>(v);
      }
    }
    nonfinite_row[r] = nonfinite;
  }
}

const QuantizeRowsKernels quantize_rows_kernels_portable = {&quantize_rows_portable, &quantize_per_tensor_portable};

constexpr TierTable<QuantizeRowsKernels> quantize_rows_tiers{quantize_rows_kernels_portable,
                                                             {
                                                                 {Tier::kAvx2, &quantize_rows_kernels_avx2},
                                                                 {Tier::kAvx512Vnni, &quantize_rows_kernels_avx512vnni},
                                                             }};

}  // namespace ck::cpu
