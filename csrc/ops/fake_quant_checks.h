// Argument checks of the fake-quant ops shared by the CPU glue (cpu_fake_quant.cpp) and the Meta
// kernels (meta.cpp): same checks, same messages. Sizes may be symbolic; the checks that read values
// (scale and zero point per channel, a non-bool mask's 0 / 1, the observed range) are the CPU glue's.
#pragma once

#include <ATen/ATen.h>
#include <c10/util/Exception.h>

#include <cmath>
#include <optional>

#include "checks.h"

namespace ck::ops {

// |qmin|, |qmax| <= 2^23 keeps q = round(v) + z, its clamp and q - z exact in fp32 wherever the
// result is not saturated anyway (see csrc/cpu/fake_quant.h).
constexpr int64_t kFakeQuantMaxLevel = int64_t{1} << 23;

inline void check_fake_quant_x(const at::Tensor& x, const char* op) {
  const at::ScalarType t = x.scalar_type();
  TORCH_CHECK(t == at::kFloat || t == at::kBFloat16 || t == at::kHalf || t == at::kDouble, op,
              ": x must be float32, bfloat16, float16 or float64, got ", t);
}

inline void check_fake_quant_levels(int64_t qmin, int64_t qmax, const char* op) {
  TORCH_CHECK(qmin < qmax, op, ": qmin must be < qmax, got qmin=", qmin, " qmax=", qmax);
  TORCH_CHECK(qmin >= -kFakeQuantMaxLevel && qmax <= kFakeQuantMaxLevel, op,
              ": [qmin, qmax] must lie in [-2^23, 2^23], got [", qmin, ", ", qmax, "]");
}

// The channel axis in [0, dim), or -1 when per tensor.
inline int64_t fake_quant_axis(const at::Tensor& x, std::optional<int64_t> axis, const char* op) {
  if (!axis.has_value()) return -1;
  const int64_t dim = x.dim();
  TORCH_CHECK(dim >= 1 && *axis >= -dim && *axis < dim, op, ": axis must be in [", -dim, ", ", dim - 1, "] for a ", dim,
              "-D x, got ", *axis);
  return *axis < 0 ? *axis + dim : *axis;
}

inline void check_fake_quant_mask(const std::optional<at::Tensor>& mask, const at::Tensor& x, const char* op) {
  if (!mask.has_value()) return;
  TORCH_CHECK(mask->sym_sizes() == x.sym_sizes(), op, ": mask must have x's shape ", x.sym_sizes(), ", got ",
              mask->sym_sizes());
  TORCH_CHECK(!mask->is_complex(), op, ": mask must be bool or hold 0 / 1, got ", mask->scalar_type());
}

// fake_quant / fake_quant_backward: x, [qmin, qmax], axis, scale / zero_point with one element per
// channel (1 per tensor), mask. Returns the channel axis (-1: per tensor).
inline int64_t check_fake_quant(const at::Tensor& x, const at::Tensor& scale, const at::Tensor& zero_point,
                                int64_t qmin, int64_t qmax, std::optional<int64_t> axis_opt,
                                const std::optional<at::Tensor>& mask, const char* op) {
  check_fake_quant_x(x, op);
  check_fake_quant_levels(qmin, qmax, op);
  const int64_t axis = fake_quant_axis(x, axis_opt, op);
  const c10::SymInt channels = axis < 0 ? c10::SymInt(1) : x.sym_size(axis);
  TORCH_CHECK(at::isFloatingType(scale.scalar_type()), op, ": scale must be a floating tensor, got ",
              scale.scalar_type());
  TORCH_CHECK(scale.dim() <= 1 && zero_point.dim() <= 1, op, ": scale and zero_point must be 0-D or 1-D, got shapes ",
              scale.sym_sizes(), " and ", zero_point.sym_sizes());
  TORCH_CHECK(scale.sym_numel() == channels, op, ": scale must have ",
              axis < 0 ? "1 element (per tensor, axis=None)" : "one element per channel of x along axis", " = ",
              channels, ", got ", scale.sym_numel());
  TORCH_CHECK(zero_point.sym_numel() == channels, op, ": zero_point must have ", channels,
              " element(s) like scale, got ", zero_point.sym_numel());
  TORCH_CHECK(zero_point.scalar_type() != at::kBool && !zero_point.is_complex(), op,
              ": zero_point must be an integer or floating tensor, got ", zero_point.scalar_type());
  check_fake_quant_mask(mask, x, op);
  return axis;
}

inline void check_grad_factor(std::optional<double> grad_factor, const char* op) {
  TORCH_CHECK(!grad_factor.has_value() || (std::isfinite(*grad_factor) && *grad_factor > 0), op,
              ": grad_factor must be finite and > 0 (or None for the LSQ default), got ", grad_factor.value_or(0));
}

inline void check_fake_quant_grad(const at::Tensor& grad, const at::Tensor& x, const char* op) {
  TORCH_CHECK(grad.sym_sizes() == x.sym_sizes() && grad.scalar_type() == x.scalar_type(), op,
              ": grad must have x's shape and dtype ", x.sym_sizes(), " ", x.scalar_type(), ", got ", grad.sym_sizes(),
              " ", grad.scalar_type());
}

// fake_quant_observe: x, [qmin, qmax], momentum in (0, 1], axis, the running min / max (contiguous
// float32 with one element per channel, on the CPU where the op runs there), a non-empty x and the
// mask. Returns the number of channels.
inline c10::SymInt check_fake_quant_observe(const at::Tensor& x, const at::Tensor& running_min,
                                            const at::Tensor& running_max, double momentum, int64_t qmin, int64_t qmax,
                                            std::optional<int64_t> axis_opt, const std::optional<at::Tensor>& mask,
                                            const char* op) {
  check_fake_quant_x(x, op);
  check_fake_quant_levels(qmin, qmax, op);
  TORCH_CHECK(std::isfinite(momentum) && momentum > 0 && momentum <= 1, op, ": momentum must be in (0, 1], got ",
              momentum);
  const int64_t axis = fake_quant_axis(x, axis_opt, op);
  const c10::SymInt channels = axis < 0 ? c10::SymInt(1) : x.sym_size(axis);
  for (const auto* t : {&running_min, &running_max}) {
    const char* name = t == &running_min ? "running_min" : "running_max";
    check_dtype(*t, at::kFloat, op, name);
    TORCH_CHECK(
        (t->device().is_cpu() || t->is_meta()) && t->is_contiguous() && t->dim() <= 1 && t->sym_numel() == channels, op,
        ": ", name, " must be a contiguous CPU float32 tensor with ", channels, " element(s), got shape ",
        t->sym_sizes());
  }
  TORCH_CHECK(x.sym_numel() > 0, op, ": x must not be empty (nothing to observe)");
  check_fake_quant_mask(mask, x, op);
  return channels;
}

}  // namespace ck::ops
