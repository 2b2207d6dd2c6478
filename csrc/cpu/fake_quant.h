// Fused fake quantization (torch-free): y = (clamp(round_half_even(x * inv_scale) + z, qmin, qmax) - z) * s,
// its clipped straight-through backward and the LSQ partial sums for the scale / zero-point gradients.
//
// Exact semantics (every ISA path computes them bit for bit; the tests force each path):
//  - x / s is evaluated as x * inv_scale with inv_scale = 1.0f / s rounded to fp32, as PyTorch's
//    fake_quantize_per_tensor_affine / per_channel_affine do, so the forward equals them exactly.
//  - v = x * inv_scale, r = nearbyint(v) (ties to even), q = r + z, c = min(max(q, qmin), qmax),
//    y = (c - z) * s; every step one fp32 rounding (no fused multiply-add). bf16 / fp16 inputs are
//    widened to fp32 exactly, y is rounded back to nearest-even. float64 inputs compute in float64
//    with float64 qparams (used by gradcheck; portable path only).
//  - A NaN x gives a NaN y and a zero x gradient; +-inf saturate to qmin / qmax.
//  - mask (one byte per element, nonzero = kept): a dropped element gets y = +0, grad_x = 0 and adds
//    nothing to the qparam gradients, whatever x is (pruned weights stay exactly zero).
//  - grad_x = grad_y where qmin <= q <= qmax, else 0.
//  - d y / d s per element (LSQ, Esser et al.): r - v inside, qmin - z below, qmax - z above;
//    d y / d z: 0 inside, -s outside. The kernels return sum(grad_y * (d y / d s)) and
//    sum(grad_y over clipped elements) per channel; the caller multiplies by the gradient scale g
//    (and by -s for the zero point).
//
// Layout: x contiguous, viewed as [outer, channels, inner] (per tensor: channels = 1).
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>

#include "bf16.h"
#include "dispatch.h"

namespace ck::cpu {

enum class FqDtype : int { kFloat32 = 0, kBFloat16 = 1, kFloat16 = 2, kFloat64 = 3 };

struct FqLayout {
  int64_t outer = 1;
  int64_t channels = 1;
  int64_t inner = 1;
};

// How the work is split. Depends only on the layout (never on the thread count), so the partial
// sums, and the gradients reduced from them, are the same for any number of threads.
//  - by_spans: each run of `inner` elements of one channel is split into blocks of `block`
//    elements; one work unit per block, one partial sum per unit. Used when inner >= kMinSpan.
//  - by rows (inner small, e.g. a per-channel axis that is the last one): x is [rows, row_len] with
//    row_len = channels * inner and per-position qparams (each channel's repeated inner times);
//    units are (row group, column chunk) tiles; partials are per (row group, position).
struct FqPlan {
  static constexpr int64_t kMinSpan = 256;
  static constexpr int64_t kBlock = 16384;     // elements per unit when by_spans
  static constexpr int64_t kColumnChunk = 512;  // positions per unit when by rows
  bool by_spans = true;
  int64_t units = 0;
  int64_t blocks_per_span = 0;  // by_spans
  int64_t rows = 0, row_len = 0, groups = 0, rows_per_group = 0, column_chunks = 0;  // by rows
  int64_t partial_len = 0;  // doubles per partial-sum buffer
  // Entries per qparam array: channels (by_spans) or row_len (by rows: repeated per position).
  int64_t param_len = 0;

  // The task split, written once for every tier's kernels: the elements of work unit u.
  // by_spans: unit u is block u % blocks_per_span of span u / blocks_per_span (the span-th run of
  // `inner` elements, channel span % channels): elements [begin, end), at most kBlock of them.
  struct SpanUnit {
    int64_t channel, begin, end;
  };
  SpanUnit span_unit(const FqLayout& layout, int64_t u) const {
    const int64_t span = u / blocks_per_span, block = u % blocks_per_span;
    const int64_t begin = span * layout.inner + block * kBlock;
    return {span % layout.channels, begin, begin + std::min(kBlock, layout.inner - block * kBlock)};
  }
  // By rows: unit u is column chunk u % column_chunks of row group u / column_chunks: rows
  // [row_begin, row_end) x positions [pos_begin, pos_end) (element r * row_len + p), whose
  // partial sums go to row group `group`.
  struct RowUnit {
    int64_t group, row_begin, row_end, pos_begin, pos_end;
  };
  RowUnit row_unit(int64_t u) const {
    const int64_t group = u / column_chunks, chunk = u % column_chunks;
    const int64_t row_begin = group * rows_per_group, pos_begin = chunk * kColumnChunk;
    return {group, row_begin, std::min(rows, row_begin + rows_per_group), pos_begin,
            std::min(row_len, pos_begin + kColumnChunk)};
  }
};

FqPlan fake_quant_plan(const FqLayout& layout);

// qparams as the kernels use them, one entry per channel (by_spans) or per position (by rows).
// The fp32 arrays serve fp32 / bf16 / fp16 inputs, the fp64 ones float64 inputs.
struct FqParams {
  const float* scale = nullptr;
  const float* inv_scale = nullptr;   // 1.0f / scale in fp32
  const float* zero_point = nullptr;  // integer-valued
  const double* scale64 = nullptr;
  const double* inv_scale64 = nullptr;
  const double* zero_point64 = nullptr;
  float qmin = 0, qmax = 0;  // integers with |q| <= 2^23, so q, q - z and clamps are exact in fp32
};

struct FqArgs {
  FqDtype dtype = FqDtype::kFloat32;
  FqLayout layout;
  FqPlan plan;
  FqParams params;
  const void* x = nullptr;
  const void* grad_y = nullptr;  // backward only
  void* out = nullptr;           // y (forward) or grad_x (backward)
  const uint8_t* mask = nullptr;  // optional, nonzero = kept
  // Backward: when not null, per-unit partial sums (plan.partial_len doubles each) of
  // grad_y * dy/ds and of grad_y over clipped elements.
  double* partial_scale = nullptr;
  double* partial_zero_point = nullptr;
};

// Work units [begin, end) of the plan, on the kernels of the active tier.
void fake_quant_forward(const FqArgs& args, int64_t begin, int64_t end);
void fake_quant_backward(const FqArgs& args, int64_t begin, int64_t end);

// The fake-quant kernels of one tier (dispatch.h; same contract). Every tier's kernels run float64
// inputs on the portable ones.
struct FakeQuantKernels {
  void (*forward)(const FqArgs& args, int64_t begin, int64_t end);
  void (*backward)(const FqArgs& args, int64_t begin, int64_t end);
};
extern const FakeQuantKernels fake_quant_kernels_portable, fake_quant_kernels_avx2, fake_quant_kernels_avx512vnni;
extern const TierTable<FakeQuantKernels> fake_quant_tiers;

void fake_quant_forward_portable(const FqArgs& args, int64_t begin, int64_t end);
void fake_quant_backward_portable(const FqArgs& args, int64_t begin, int64_t end);

// Sums the partials of fake_quant_backward into out[channels], in a fixed order.
void fake_quant_reduce_partials(const FqLayout& layout, const FqPlan& plan, const double* partial, double* out);

// Exact bit conversions shared by every path (the same as c10::BFloat16 / c10::Half).
inline uint32_t float_bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  return u;
}
inline float bits_float(uint32_t u) {
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}

// IEEE binary16 <-> binary32 (the FP16 library's bit tricks, as c10::Half), round to nearest even;
// a NaN becomes sign | 0x7E00.
inline float fp16_to_float(uint16_t h) {
  const uint32_t w = static_cast<uint32_t>(h) << 16;
  const uint32_t sign = w & 0x80000000u;
  const uint32_t two_w = w + w;
  const float normalized = bits_float((two_w >> 4) + (0xE0u << 23)) * bits_float(0x7800000u);  // * 2^-112
  const float denormalized = bits_float((two_w >> 17) | (126u << 23)) - 0.5f;
  const uint32_t r = two_w < (1u << 27) ? float_bits(denormalized) : float_bits(normalized);
  return bits_float(sign | r);
}

inline uint16_t float_to_fp16(float f) {
  float base = (f < 0 ? -f : f) * bits_float(0x77800000u);  // 2^112
  base *= bits_float(0x08800000u);                            // 2^-110
  const uint32_t w = float_bits(f);
  const uint32_t shl1_w = w + w;
  const uint32_t sign = w & 0x80000000u;
  uint32_t bias = shl1_w & 0xFF000000u;
  if (bias < 0x71000000u) bias = 0x71000000u;
  base = bits_float((bias >> 1) + 0x07800000u) + base;
  const uint32_t rb = float_bits(base);
  const uint32_t nonsign = ((rb >> 13) & 0x00007C00u) + (rb & 0x00000FFFu);
  return static_cast<uint16_t>((sign >> 16) | (shl1_w > 0xFF000000u ? 0x7E00u : nonsign));
}

}  // namespace ck::cpu
