// Fixed-point requantization primitives with gemmlowp / TFLite semantics.
//
// Torch-free and usable from CUDA: every run-time primitive is CK_HOST_DEVICE (`__host__ __device__
// __forceinline__` under nvcc) and uses only integer arithmetic, so the CUDA epilogues
// (csrc/cuda/int8_*.cu) call the very same definitions as the CPU. Every primitive states its
// exact rounding and saturation; the SIMD paths in csrc/cpu/*_avx512*.cpp reproduce these scalar
// definitions bit for bit, and tests/test_requantize.py checks both against an int64 reference
// (tests/test_cuda_int8.py checks the GPU against the CPU).
//
// Convention: a real multiplier r > 0 is stored as (m0, shift) with r ~= m0 * 2^(shift - 31),
// m0 in [2^30, 2^31) and shift in [-31, 30]. Zero (and multipliers below 2^-32) are (0, 0).
#pragma once

#include <cmath>
#include <cstdint>

#if defined(__CUDACC__)
#define CK_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define CK_HOST_DEVICE inline
#endif

namespace ck {

constexpr int32_t kInt32Min = INT32_MIN;
constexpr int32_t kInt32Max = INT32_MAX;
constexpr int kMinShift = -31;  // right shift by up to 31 bits
constexpr int kMaxShift = 30;   // left shift by up to 30 bits

enum class Rounding : int {
  // gemmlowp / TFLite default: SaturatingRoundingDoublingHighMul, then RoundingDivideByPOT.
  kDouble = 0,
  // TFLite's TFLITE_SINGLE_ROUNDING: one rounding of x * m0 at bit (31 - shift).
  kSingle = 1,
};

// round(a * b / 2^31) with ties rounded toward +infinity (ARM SQRDMULH):
// (a * b + 2^30) >> 31 in 64-bit arithmetic. Saturates the one overflowing case,
// a == b == INT32_MIN, to INT32_MAX. Equal to gemmlowp's nudge-and-truncate formulation.
CK_HOST_DEVICE int32_t SaturatingRoundingDoublingHighMul(int32_t a, int32_t b) {
  if (a == kInt32Min && b == kInt32Min) return kInt32Max;
  const int64_t ab = static_cast<int64_t>(a) * static_cast<int64_t>(b);
  // Arithmetic right shift of a negative int64 is floor division (guaranteed since C++20 and by
  // every compiler this builds with).
  return static_cast<int32_t>((ab + (int64_t{1} << 30)) >> 31);
}

// Correctly-rounded-to-nearest division by 2^exponent, ties rounded away from zero.
// exponent in [0, 31]. Never overflows.
CK_HOST_DEVICE int32_t RoundingDivideByPOT(int32_t x, int exponent) {
  const int32_t mask = static_cast<int32_t>((int64_t{1} << exponent) - 1);
  const int32_t remainder = x & mask;
  const int32_t threshold = (mask >> 1) + (x < 0 ? 1 : 0);
  return (x >> exponent) + (remainder > threshold ? 1 : 0);
}

// x * 2^exponent, saturated to [INT32_MIN, INT32_MAX]. exponent in [0, 30].
// (TFLite's reference multiplies and may overflow; its NEON path saturates, as this does.)
CK_HOST_DEVICE int32_t SaturatingLeftShift(int32_t x, int exponent) {
  const int64_t shifted = static_cast<int64_t>(x) * (int64_t{1} << exponent);
  if (shifted > kInt32Max) return kInt32Max;
  if (shifted < kInt32Min) return kInt32Min;
  return static_cast<int32_t>(shifted);
}

// Double rounding (gemmlowp / TFLite default):
// RoundingDivideByPOT(SaturatingRoundingDoublingHighMul(SaturatingLeftShift(x, max(shift, 0)), m0),
//                     max(-shift, 0)).
CK_HOST_DEVICE int32_t MultiplyByQuantizedMultiplierDouble(int32_t x, int32_t m0, int shift) {
  const int left = shift > 0 ? shift : 0;
  const int right = shift > 0 ? 0 : -shift;
  return RoundingDivideByPOT(SaturatingRoundingDoublingHighMul(SaturatingLeftShift(x, left), m0), right);
}

// Single rounding (TFLite TFLITE_SINGLE_ROUNDING): (x * m0 + 2^(30 - shift)) >> (31 - shift),
// i.e. round(x * m0 / 2^(31 - shift)) with ties toward +infinity, computed exactly in 64 bits and
// saturated to int32 (TFLite leaves the overflow undefined; m0 >= 0 is required).
CK_HOST_DEVICE int32_t MultiplyByQuantizedMultiplierSingle(int32_t x, int32_t m0, int shift) {
  const int total_shift = 31 - shift;  // in [1, 62]
  const int64_t rounded =
      (static_cast<int64_t>(x) * static_cast<int64_t>(m0) + (int64_t{1} << (total_shift - 1))) >> total_shift;
  if (rounded > kInt32Max) return kInt32Max;
  if (rounded < kInt32Min) return kInt32Min;
  return static_cast<int32_t>(rounded);
}

CK_HOST_DEVICE int32_t MultiplyByQuantizedMultiplier(int32_t x, int32_t m0, int shift, Rounding rounding) {
  return rounding == Rounding::kSingle ? MultiplyByQuantizedMultiplierSingle(x, m0, shift)
                                       : MultiplyByQuantizedMultiplierDouble(x, m0, shift);
}

// clamp(MultiplyByQuantizedMultiplier(acc) + zero_point, qmin, qmax). The zero point is added in
// 64 bits so no intermediate overflows; [qmin, qmax] lies within int32.
CK_HOST_DEVICE int32_t Requantize(int32_t acc, int32_t m0, int shift, int32_t zero_point, int32_t qmin, int32_t qmax,
                                  Rounding rounding) {
  const int64_t v = static_cast<int64_t>(MultiplyByQuantizedMultiplier(acc, m0, shift, rounding)) + zero_point;
  return static_cast<int32_t>(v < qmin ? qmin : (v > qmax ? qmax : v));
}

// Host only (it uses <cmath>; multipliers are encoded once, when a layer is built).
// TFLite QuantizeMultiplier: real = q * 2^e with q in [0.5, 1) (frexp); m0 = round(q * 2^31) with
// ties away from zero; the q * 2^31 == 2^31 edge becomes (2^30, e + 1). shift = e. A result with
// shift < -31 (real < ~2^-32) flushes to (0, 0). Returns false for a negative, non-finite or too
// large (shift > 30, real >= 2^30) multiplier, which callers refuse.
inline bool QuantizeMultiplier(double real, int32_t* m0, int32_t* shift) {
  if (real == 0.0) {
    *m0 = 0;
    *shift = 0;
    return true;
  }
  if (!(real > 0.0) || !std::isfinite(real)) return false;
  int exponent = 0;
  const double q = std::frexp(real, &exponent);
  int64_t q_fixed = static_cast<int64_t>(std::round(q * static_cast<double>(int64_t{1} << 31)));
  if (q_fixed == (int64_t{1} << 31)) {
    q_fixed /= 2;
    ++exponent;
  }
  if (exponent < kMinShift) {
    *m0 = 0;
    *shift = 0;
    return true;
  }
  if (exponent > kMaxShift) return false;
  *m0 = static_cast<int32_t>(q_fixed);
  *shift = exponent;
  return true;
}

}  // namespace ck
