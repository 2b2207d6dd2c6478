// Argument checks shared by the CPU and CUDA op glue. Every message names the op, the argument,
// what was expected and what was given.
#pragma once

#include <ATen/ATen.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <cstdint>
#include <limits>
#include <optional>
#include <string>

#include "../cpu/requantize.h"
#include "ck/fixedpoint.h"

namespace ck::ops {

inline void check_cpu(const at::Tensor& t, const char* op, const char* name) {
  TORCH_CHECK(t.device().is_cpu(), op, ": ", name, " must be a CPU tensor here, got ", t.device());
}

inline void check_dtype(const at::Tensor& t, at::ScalarType dtype, const char* op, const char* name) {
  TORCH_CHECK(t.scalar_type() == dtype, op, ": ", name, " must be ", dtype, ", got ", t.scalar_type());
}

inline void check_dim(const at::Tensor& t, int64_t dim, const char* op, const char* name) {
  TORCH_CHECK(t.dim() == dim, op, ": ", name, " must be ", dim, "-D, got ", t.dim(), "-D with shape ", t.sym_sizes());
}

inline void check_same_device(const at::Tensor& t, const at::Tensor& ref, const char* op, const char* name) {
  TORCH_CHECK(t.device() == ref.device(), op, ": ", name, " must be on ", ref.device(), " like x, got ", t.device());
}

// int8 or uint8 input; returns true for int8.
inline bool check_int8_input(const at::Tensor& x, const char* op, const char* name) {
  TORCH_CHECK(x.scalar_type() == at::kChar || x.scalar_type() == at::kByte, op, ": ", name,
              " must be int8 or uint8, got ", x.scalar_type());
  return x.scalar_type() == at::kChar;
}

inline void check_zero_point_for(const at::Tensor& x, int64_t zero_point, const char* op, const char* name) {
  const bool is_signed = x.scalar_type() == at::kChar;
  const int64_t lo = is_signed ? -128 : 0, hi = is_signed ? 127 : 255;
  TORCH_CHECK(zero_point >= lo && zero_point <= hi, op, ": ", name, " must be in [", lo, ", ", hi, "] for ",
              x.scalar_type(), " input, got ", zero_point);
}

// The integer output range of out_dtype, which [qmin, qmax] must lie in.
inline void check_output_range(at::ScalarType out_dtype, int64_t zero_point, int64_t qmin, int64_t qmax,
                               const char* op) {
  int64_t lo = 0, hi = 0;
  if (out_dtype == at::kChar) {
    lo = -128, hi = 127;
  } else if (out_dtype == at::kByte) {
    lo = 0, hi = 255;
  } else if (out_dtype == at::kInt) {
    lo = std::numeric_limits<int32_t>::min(), hi = std::numeric_limits<int32_t>::max();
  } else {
    TORCH_CHECK(false, op, ": out_dtype must be int8, uint8 or int32, got ", out_dtype);
  }
  TORCH_CHECK(qmin <= qmax, op, ": qmin must be <= qmax, got qmin=", qmin, " qmax=", qmax);
  TORCH_CHECK(qmin >= lo && qmax <= hi, op, ": [qmin, qmax] must lie in [", lo, ", ", hi, "] for ", out_dtype,
              ", got [", qmin, ", ", qmax, "]");
  TORCH_CHECK(zero_point >= lo && zero_point <= hi, op, ": zero_point must be in [", lo, ", ", hi, "] for ", out_dtype,
              ", got ", zero_point);
}

// An optional bias of `dtype` and shape [n].
inline void check_bias(const std::optional<at::Tensor>& bias, at::ScalarType dtype, const c10::SymInt& n,
                       const char* op) {
  if (!bias.has_value()) return;
  check_dtype(*bias, dtype, op, "bias");
  TORCH_CHECK(bias->dim() == 1 && bias->sym_size(0) == n, op, ": bias must have shape [", n, "], got ",
              bias->sym_sizes());
}

inline Rounding parse_rounding(const std::string& rounding, const char* op) {
  if (rounding == "double") return Rounding::kDouble;
  if (rounding == "single") return Rounding::kSingle;
  TORCH_CHECK(false, op, ": rounding must be \"double\" or \"single\", got \"", rounding, "\"");
}

// m0 or shift of a fixed-point multiplier: an int32 tensor. A float tensor is refused with a pointer
// to quantize_multiplier (a real multiplier such as 0.0123 is not an m0: truncated it would be 0).
inline void check_multiplier_dtype(const at::Tensor& t, const char* op, const char* name) {
  TORCH_CHECK(t.scalar_type() == at::kInt, op, ": ", name, " must be Int, got ", t.scalar_type(),
              " (an int32 tensor: the fixed-point multiplier real ~= m0 * 2^(shift - 31))",
              at::isFloatingType(t.scalar_type())
                  ? "; for a real multiplier r, compress_kernels.quantize_multiplier(r) returns (m0, shift)"
                  : "");
}

// m0 / shift: int32, numel 1 (per tensor) or `channels` (per channel), m0 >= 0, shift in [-31, 30].
// Returns true when per channel. The values are read where they are on the CPU (not on a device,
// nor on a meta / fake tensor, which holds none).
inline bool check_multiplier(const at::Tensor& m0, const at::Tensor& shift, const c10::SymInt& channels,
                             const char* op) {
  check_multiplier_dtype(m0, op, "m0");
  check_multiplier_dtype(shift, op, "shift");
  TORCH_CHECK(m0.dim() <= 1 && shift.dim() <= 1, op, ": m0 and shift must be 0-D or 1-D, got shapes ", m0.sym_sizes(),
              " and ", shift.sym_sizes());
  TORCH_CHECK(m0.sym_numel() == shift.sym_numel(), op, ": m0 and shift must have the same numel, got ", m0.sym_numel(),
              " and ", shift.sym_numel());
  TORCH_CHECK(m0.sym_numel() == 1 || m0.sym_numel() == channels, op, ": m0 and shift must have 1 (per-tensor) or ",
              channels, " (per-channel) elements, got ", m0.sym_numel());
  if (m0.device().is_cpu() && m0.numel() > 0) {
    // A plain loop over the values: min() / item() dispatch and allocate per call, which at batch 1
    // cost more than a small layer's kernel.
    const at::Tensor mc = m0.contiguous(), sc = shift.contiguous();
    const int32_t* mp = mc.data_ptr<int32_t>();
    const int32_t* sp = sc.data_ptr<int32_t>();
    int64_t m0_min = mp[0], s_min = sp[0], s_max = sp[0];
    for (int64_t i = 1; i < mc.numel(); ++i) {
      m0_min = std::min<int64_t>(m0_min, mp[i]);
      s_min = std::min<int64_t>(s_min, sp[i]);
      s_max = std::max<int64_t>(s_max, sp[i]);
    }
    TORCH_CHECK(m0_min >= 0, op, ": m0 must be >= 0 (a quantized multiplier in [2^30, 2^31) or 0), got ", m0_min);
    TORCH_CHECK(s_min >= kMinShift && s_max <= kMaxShift, op, ": shift must be in [", kMinShift, ", ", kMaxShift,
                "], got values in [", s_min, ", ", s_max, "]");
  }
  return m0.sym_numel() > 1;  // with one channel, per-tensor and per-channel coincide
}

inline cpu::OutType integer_out_type(at::ScalarType dtype) {
  return dtype == at::kChar ? cpu::OutType::kInt8 : dtype == at::kByte ? cpu::OutType::kUInt8 : cpu::OutType::kInt32;
}

// The fixed-point output stage from checked op arguments; m0 / shift must stay alive (contiguous).
inline cpu::RequantParams requant_params(const at::Tensor& m0, const at::Tensor& shift, bool per_channel,
                                         int64_t zero_point, int64_t qmin, int64_t qmax, at::ScalarType out_dtype,
                                         c10::string_view rounding, const char* op) {
  cpu::RequantParams p;
  p.m0 = m0.data_ptr<int32_t>();
  p.shift = shift.data_ptr<int32_t>();
  p.per_channel = per_channel;
  p.zero_point = static_cast<int32_t>(zero_point);
  p.qmin = static_cast<int32_t>(qmin);
  p.qmax = static_cast<int32_t>(qmax);
  p.rounding = parse_rounding(std::string(rounding), op);
  p.out_type = integer_out_type(out_dtype);
  return p;
}

// Largest k for which sum_k |w| * |x - x_zero_point| <= 128 * 255 * k cannot overflow int32.
constexpr int64_t kMaxInt8Depth = std::numeric_limits<int32_t>::max() / (128 * 255);

inline void check_depth(const c10::SymInt& k, const char* op) {
  TORCH_CHECK(k <= kMaxInt8Depth, op, ": K=", k, " could overflow the int32 accumulator (K * 255 * 128 > 2^31 - 1); ",
              "the largest supported K is ", kMaxInt8Depth, ". Split the reduction into chunks.");
}

}  // namespace ck::ops
