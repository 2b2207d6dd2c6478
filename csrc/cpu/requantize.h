// Standalone requantization of int32 accumulators (torch-free).
#pragma once

#include <cstdint>

#include "ck/fixedpoint.h"

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
  OutType out_type = OutType::kInt8;  // kInt8, kUInt8 or kInt32 (clamped to [qmin, qmax])
};

// acc is [rows, cols] row-major (row stride ld_acc); out is [rows, cols] contiguous of out_type;
// channel = column. Processes rows [row_begin, row_end).
void requantize_rows(const int32_t* acc, int64_t ld_acc, int64_t cols, int64_t row_begin,
                     int64_t row_end, const RequantParams& p, void* out);

// Per-ISA implementations (same contract); requantize_rows dispatches between them.
void requantize_rows_portable(const int32_t* acc, int64_t ld_acc, int64_t cols, int64_t row_begin,
                              int64_t row_end, const RequantParams& p, void* out);
void requantize_rows_avx512(const int32_t* acc, int64_t ld_acc, int64_t cols, int64_t row_begin,
                            int64_t row_end, const RequantParams& p, void* out);
void requantize_rows_avx2(const int32_t* acc, int64_t ld_acc, int64_t cols, int64_t row_begin,
                          int64_t row_end, const RequantParams& p, void* out);

}  // namespace ck::cpu
