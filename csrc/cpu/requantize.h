// Standalone requantization of int32 accumulators (torch-free).
#pragma once

#include <cstdint>

#include "ck/fixedpoint.h"
#include "dispatch.h"

namespace ck::cpu {

enum class OutType : int { kInt8 = 0, kUInt8 = 1, kInt32 = 2, kFloat32 = 3 };

// Fixed-point output stage shared by requantize() and the int8 GEMM epilogue:
// out = clamp(MultiplyByQuantizedMultiplier(acc, m0[c], shift[c]) + zero_point, qmin, qmax),
// with c the channel (per_channel) or 0. m0 >= 0 and shift in [-31, 30] are checked by callers.
struct RequantParams {
  const int32_t* m0 = nullptr;
  const int32_t* shift = nullptr;
  bool per_channel = false;
  int32_t zero_point = 0;
  int32_t qmin = -128;
  int32_t qmax = 127;
  Rounding rounding = Rounding::kDouble;
  // kInt8, kUInt8 or kInt32: the clamped integer q. kFloat32: q dequantized in fp32,
  // float(q - zero_point) * dequant_scale (one rounding: q - zero_point is exact and fits in fp32's
  // 24-bit significand for every 8-bit range), i.e. numerics.dequantize of the integer output.
  OutType out_type = OutType::kInt8;
  float dequant_scale = 1.0f;
};

// Stores one requantized value q (already clamped, zero point added) at out[o] as p.out_type.
inline void store_requantized(void* out, int64_t o, int32_t q, const RequantParams& p) {
  switch (p.out_type) {
    case OutType::kInt8:
      static_cast<int8_t*>(out)[o] = static_cast<int8_t>(q);
      return;
    case OutType::kUInt8:
      static_cast<uint8_t*>(out)[o] = static_cast<uint8_t>(q);
      return;
    case OutType::kInt32:
      static_cast<int32_t*>(out)[o] = q;
      return;
    case OutType::kFloat32:
      static_cast<float*>(out)[o] = static_cast<float>(q - p.zero_point) * p.dequant_scale;
      return;
  }
}

// acc is [rows, cols] row-major (row stride ld_acc); out is [rows, cols] contiguous of out_type;
// channel = column. Processes rows [row_begin, row_end).
void requantize_rows(const int32_t* acc, int64_t ld_acc, int64_t cols, int64_t row_begin, int64_t row_end,
                     const RequantParams& p, void* out);

// TFLite's quantized ADD of two int8 / uint8 tensors, elementwise over [begin, end):
//   s_i = MultiplyByQuantizedMultiplier((x_i - zero_point_i) << left_shift, m0_i, shift_i)  (i = a, b)
//   out = clamp(MultiplyByQuantizedMultiplier(s_a + s_b, m0_out, shift_out) + out zero_point, qmin, qmax)
// every multiplier per tensor with the rounding of its params (int32 intermediates; callers keep
// 255 << left_shift within int32). Portable form: a chunk at a time through requantize_rows (so the
// AVX2 path is its vector rescale); AVX-512: one fused pass. Every path gives the same bits.
struct Int8AddParams {
  bool a_signed = false, b_signed = false;
  int32_t a_zero_point = 0, b_zero_point = 0;
  int left_shift = 20;
  RequantParams a{}, b{};  // out_type kInt32, clamp to the int32 range, zero point 0
  RequantParams out{};
};
void int8_add_range(const void* a, const void* b, const Int8AddParams& p, int64_t begin, int64_t end, void* out);

// The requantize kernels of one tier (dispatch.h); requantize_rows and int8_add_range call the
// entry of the active tier. The avx2 tier's int8_add_range is the portable one (its rescales run
// through requantize_rows, i.e. on the avx2 kernel).
struct RequantizeKernels {
  void (*rows)(const int32_t* acc, int64_t ld_acc, int64_t cols, int64_t row_begin, int64_t row_end,
               const RequantParams& p, void* out);
  void (*int8_add_range)(const void* a, const void* b, const Int8AddParams& p, int64_t begin, int64_t end, void* out);
};
extern const RequantizeKernels requantize_kernels_portable, requantize_kernels_avx2, requantize_kernels_avx512vnni;
extern const TierTable<RequantizeKernels> requantize_tiers;

// The portable kernels (the other tiers' non-x86 builds delegate to them).
void requantize_rows_portable(const int32_t* acc, int64_t ld_acc, int64_t cols, int64_t row_begin, int64_t row_end,
                              const RequantParams& p, void* out);
void int8_add_range_portable(const void* a, const void* b, const Int8AddParams& p, int64_t begin, int64_t end,
                             void* out);

}  // namespace ck::cpu
