// int8 GEMM / conv2d / requantization on CUDA: parameters and launchers (torch-free).
//
// The weight operand is the packed int32 buffer that int8_pack_weight writes on the CPU (layout in
// csrc/cpu/int8_gemm.h): for each block of 16 output rows, the words w[16b + i, 4g .. 4g + 3] in
// (g, i) order, then row_sum[n], then k[n]. One int32 word is four consecutive k of one output row,
// which is exactly one register of the B fragment of mma.m16n8k32 (see int8_mma.cuh), so modules
// carry the same buffer across .to("cuda") and the CUDA kernels read it as is.
//
// Every launcher returns cudaErrorInvalidValue for arguments it refuses (the torch glue checks
// them first with messages) and otherwise cudaGetLastError() after the launch.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "ck/fixedpoint.h"

namespace ck::cuda {

enum class Int8Epilogue : int {
  kInt32 = 0,       // out[m, n] = acc (int32)
  kRequantize = 1,  // out[m, n] = clamp(MultiplyByQuantizedMultiplier(acc) + out_zero_point, qmin, qmax)
  kFloat = 2,       // out[m, n] = ((float(acc) * x_scale[m]) * w_scale[n]) + bias_f[n], fp32, no FMA
};

enum class Int8OutType : int { kInt8 = 0, kUInt8 = 1, kInt32 = 2, kFloat32 = 3 };

// The fused output stage, applied to acc = sum_k w[n, k] * (x[m, k] - x_zero_point) + bias_i32[n]
// (computed modulo 2^32 as acc_raw - x_zero_point * row_sum[n] + bias_i32[n], like the CPU path).
struct Int8EpilogueParams {
  Int8Epilogue kind = Int8Epilogue::kInt32;
  Int8OutType out_type = Int8OutType::kInt32;
  const int32_t* bias_i32 = nullptr;  // [channels] or null, added to acc (modulo 2^32) for every kind
  // kRequantize: the multiplier of channel ch is (m0[per_channel ? ch : 0], shift[...]) when the
  // pointers are set (device memory), else (m0_scalar, shift_scalar), so that a per-tensor
  // multiplier given on the host needs no copy. shift is clamped into [kMinShift, kMaxShift] on the
  // device (no undefined shifts); the glue refuses values outside it wherever it can read them.
  const int32_t* m0 = nullptr;
  const int32_t* shift = nullptr;
  bool per_channel = false;
  int32_t m0_scalar = 0, shift_scalar = 0;
  int32_t zero_point = 0, qmin = -128, qmax = 127;
  Rounding rounding = Rounding::kDouble;
  // kFloat.
  const float* x_scale = nullptr;  // [rows] when x_scale_per_row, else [1]
  bool x_scale_per_row = false;
  const float* w_scale = nullptr;  // [channels] when w_scale_per_channel, else [1]
  bool w_scale_per_channel = false;
  const float* bias_f = nullptr;  // [channels] or null
};

// out[m, n] for m < m, n < n: a [m, k] (row stride lda, int8 when a_signed else uint8) times the
// packed weight (n rows, depth k, words_per_row = ceil(k / 4) + 2), output row stride ldo elements.
struct Int8GemmParams {
  const void* a = nullptr;
  bool a_signed = true;
  int64_t m = 0, lda = 0;
  int32_t a_zero_point = 0;
  const int32_t* w_packed = nullptr;
  int64_t n = 0, k = 0;
  Int8EpilogueParams epilogue{};
  void* out = nullptr;
  int64_t ldo = 0;
};

// NHWC (channels_last) int8 / uint8 conv2d as an implicit GEMM, one GEMM per group: row = output
// pixel (b, oh, ow), depth index = (kh * KW + kw) * Cg + c, the weight of group g being the rows
// [g * OCg, (g + 1) * OCg) of int8_conv2d_pack_weight's buffer (each group packed separately, so
// its block layout starts at word g * OCg * words_per_row). Input pixels outside the image read as
// x_zero_point, so padding contributes zero after the zero-point correction, as on the CPU.
struct Int8ConvParams {
  const void* x = nullptr;  // [batch, height, width, in_channels] contiguous
  bool x_signed = true;
  int32_t x_zero_point = 0;
  int64_t batch = 0, in_channels = 0, height = 0, width = 0;
  int64_t out_channels = 0, kernel_h = 0, kernel_w = 0;
  int64_t stride_h = 1, stride_w = 1, pad_h = 0, pad_w = 0, dilation_h = 1, dilation_w = 1;
  int64_t groups = 1;
  const int32_t* w_packed = nullptr;  // [out_channels, ceil(depth / 4) + 2] (GEMM path)
  const int8_t* w_depthwise = nullptr;  // [channels, kernel_h * kernel_w] (depthwise path)
  Int8EpilogueParams epilogue{};        // channel index = output channel
  void* out = nullptr;                  // [batch, out_h, out_w, out_channels] contiguous
  int64_t out_h() const { return (height + 2 * pad_h - dilation_h * (kernel_h - 1) - 1) / stride_h + 1; }
  int64_t out_w() const { return (width + 2 * pad_w - dilation_w * (kernel_w - 1) - 1) / stride_w + 1; }
};

inline int64_t int8_words_per_row(int64_t k) { return (k + 3) / 4 + 2; }

// The epilogue has what its kind reads (launchers refuse it otherwise).
inline bool int8_epilogue_valid(const Int8EpilogueParams& ep) {
  switch (ep.kind) {
    case Int8Epilogue::kInt32:
      return ep.out_type == Int8OutType::kInt32;
    case Int8Epilogue::kRequantize:
      return ep.out_type != Int8OutType::kFloat32 && ep.qmin <= ep.qmax &&
             (!ep.per_channel || (ep.m0 != nullptr && ep.shift != nullptr));
    case Int8Epilogue::kFloat:
      return ep.out_type == Int8OutType::kFloat32 && ep.x_scale != nullptr && ep.w_scale != nullptr;
  }
  return false;
}

// int8_pack_weight on the device: w [n, k] int8 (row stride ldw) -> out [n, ceil(k / 4) + 2] int32,
// byte for byte what csrc/cpu/int8_gemm.cpp writes. groups > 1 packs rows [g * n / groups, ...)
// as separate blocks (int8_conv2d_pack_weight); n must be a multiple of groups.
cudaError_t int8_pack_weight(const int8_t* w, int64_t n, int64_t k, int64_t ldw, int64_t groups, int32_t* out,
                             cudaStream_t stream);

// The GEMM with its fused epilogue: tensor cores (mma.sync m16n8k32) on sm_80+, dp4a otherwise.
cudaError_t int8_gemm(const Int8GemmParams& p, cudaStream_t stream);

// int8 conv2d (groups >= 1; the depthwise case groups == C == OC runs a direct kernel).
cudaError_t int8_conv2d(const Int8ConvParams& p, cudaStream_t stream);

// Elementwise requantization of acc [rows, cols] (contiguous; channel = column) into out
// (contiguous, epilogue.out_type int8 / uint8 / int32). epilogue.kind must be kRequantize.
cudaError_t int8_requantize(const int32_t* acc, int64_t rows, int64_t cols, const Int8EpilogueParams& epilogue,
                            void* out, cudaStream_t stream);

// quantize_rows: scale[r] = max|x[r, :]| / qmax (1 when zero), q = clamp(rint(x / scale), qmin, qmax),
// true fp32 division and round-half-even, exactly as csrc/cpu/int8_gemm.cpp.
cudaError_t int8_quantize_rows(const float* x, int64_t rows, int64_t cols, int32_t qmin, int32_t qmax, int8_t* q,
                               float* scale, cudaStream_t stream);

}  // namespace ck::cuda
