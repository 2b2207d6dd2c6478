// The argument checks of the int8 ops (requantize, int8_add, quantize_multiplier, the int8 GEMM /
// linear ops, quantize_rows, int8_conv2d and the pack ops), shared by the CPU glue, the CUDA glue
// and the Meta kernels of meta.cpp, so that torch.compile and torch.export refuse exactly what the
// kernels refuse, with the same messages. They read metadata (dtype, rank, sizes, which may be
// symbolic under torch.compile / torch.export) and the values of CPU multipliers and packed
// headers; tensors without data (meta / fake) skip the value checks. Devices are the glue's concern.
#pragma once

#include <ATen/ATen.h>
#include <c10/util/Exception.h>

#include <cmath>
#include <optional>

#include "checks.h"
#include "packed_checks.h"

namespace ck::ops {

// int8_pack_weight's w: int8 [N, K] with N, K >= 1 and K within the accumulator's reach.
inline void check_int8_weight(const at::Tensor& w, const char* op) {
  check_dtype(w, at::kChar, op, "w");
  check_dim(w, 2, op, "w");
  TORCH_CHECK(w.sym_size(0) > 0 && w.sym_size(1) > 0, op, ": w must have at least one row and one column, got shape ",
              w.sym_sizes());
  check_depth(w.sym_size(1), op);
}

// An int8 conv weight [OC, C/groups, KH, KW] with OC a positive multiple of groups.
inline void check_int8_conv_weight(const at::Tensor& w, int64_t groups, const char* op) {
  check_dtype(w, at::kChar, op, "w");
  check_dim(w, 4, op, "w");
  TORCH_CHECK(groups >= 1, op, ": groups must be >= 1, got ", groups);
  TORCH_CHECK(w.sym_size(0) > 0 && w.sym_size(0) % groups == 0, op,
              ": w.size(0) (out channels) must be a positive multiple of groups=", groups, ", got ", w.sym_size(0));
  TORCH_CHECK(w.sym_size(1) > 0 && w.sym_size(2) > 0 && w.sym_size(3) > 0, op,
              ": w must have a non-empty [C/groups, KH, KW], got shape ", w.sym_sizes());
  check_depth(w.sym_size(1) * w.sym_size(2) * w.sym_size(3), op);
}

// x, x_zero_point and w of the int8 GEMM ops (int8_gemm, int8_linear, int8_linear_float): x int8 /
// uint8 [M, K] with K >= 1, the zero point in x's range, w a raw int8 [N, K] or a pack of
// int8_pack_weight for that K (check_packed).
struct Int8Operands {
  bool x_signed = false;
  c10::SymInt n;
  bool w_packed = false;  // w is a pack; `packed` describes it
  PackedInfo packed;
};

inline Int8Operands check_int8_gemm_operands(const at::Tensor& x, int64_t x_zero_point, const at::Tensor& w,
                                             const char* op) {
  Int8Operands o;
  o.x_signed = check_int8_input(x, op, "x");
  check_dim(x, 2, op, "x");
  check_zero_point_for(x, x_zero_point, op, "x_zero_point");
  const c10::SymInt k = x.sym_size(1);
  TORCH_CHECK(k > 0, op, ": x must have K > 0 columns, got shape ", x.sym_sizes());
  check_depth(k, op);
  if (w.scalar_type() == at::kInt) {
    PackedExpect expect;
    expect.k = concrete_size(k);
    expect.k_from = "x";
    o.packed = check_packed(w, PackedFamily::kInt8, expect, op, "w");
    o.w_packed = true;
    o.n = o.packed.n;
    return o;
  }
  TORCH_CHECK(w.scalar_type() == at::kChar, op,
              ": w must be int8 [N, K] or a packed int32 weight from int8_pack_weight, got ", w.scalar_type());
  check_dim(w, 2, op, "w");
  TORCH_CHECK(w.sym_size(1) == k, op, ": K mismatch: x has K=", k, " but w has shape ", w.sym_sizes());
  check_int8_weight(w, op);
  o.n = w.sym_size(0);
  return o;
}

// The fused requantization of int8_linear / int8_conv2d over `channels` outputs: m0 / shift
// (check_multiplier), the output range and an int32 bias. Returns true when per channel.
inline bool check_requant_epilogue(const at::Tensor& m0, const at::Tensor& shift, const c10::SymInt& channels,
                                   const std::optional<at::Tensor>& bias, int64_t out_zero_point, int64_t qmin,
                                   int64_t qmax, at::ScalarType out_dtype, c10::string_view rounding, const char* op) {
  const bool per_channel = check_multiplier(m0, shift, channels, op);
  check_output_range(out_dtype, out_zero_point, qmin, qmax, op);
  parse_rounding(std::string(rounding), op);
  check_bias(bias, at::kInt, channels, op);
  return per_channel;
}

// The float epilogue of int8_linear_float: fp32 x_scale of 1 or M elements, w_scale of 1 or N, an
// fp32 bias [N].
inline void check_float_epilogue(const at::Tensor& x_scale, const at::Tensor& w_scale,
                                 const std::optional<at::Tensor>& bias, const c10::SymInt& m, const c10::SymInt& n,
                                 const char* op) {
  check_dtype(x_scale, at::kFloat, op, "x_scale");
  check_dtype(w_scale, at::kFloat, op, "w_scale");
  TORCH_CHECK(x_scale.dim() <= 1 && (x_scale.sym_numel() == 1 || x_scale.sym_numel() == m), op,
              ": x_scale must have 1 or M=", m, " elements, got shape ", x_scale.sym_sizes());
  TORCH_CHECK(w_scale.dim() <= 1 && (w_scale.sym_numel() == 1 || w_scale.sym_numel() == n), op,
              ": w_scale must have 1 or N=", n, " elements, got shape ", w_scale.sym_sizes());
  check_bias(bias, at::kFloat, n, op);
}

// A per-tensor fp32 scale: one element (its value: check_scale_value, where data exists).
inline void check_scale_tensor(const at::Tensor& scale, const char* op, const char* name) {
  check_dtype(scale, at::kFloat, op, name);
  TORCH_CHECK(scale.sym_numel() == 1, op, ": ", name, " must have one element (a per-tensor scale), got shape ",
              scale.sym_sizes());
}

// The value of a CPU scale of check_scale_tensor: finite and > 0.
inline float check_scale_value(const at::Tensor& scale, const char* op, const char* name) {
  const float v = *scale.data_ptr<float>();  // read directly: item() would dispatch per call
  TORCH_CHECK(std::isfinite(v) && v > 0, op, ": ", name, " must be finite and > 0, got ", v);
  return v;
}

// An 8-bit integer type with its range: out_dtype int8 or uint8, zero_point and [qmin, qmax] in it.
inline void check_int8_range(at::ScalarType dtype, int64_t zero_point, int64_t qmin, int64_t qmax, const char* op,
                             const char* name) {
  TORCH_CHECK(dtype == at::kChar || dtype == at::kByte, op, ": ", name, " must be int8 or uint8, got ", dtype);
  check_output_range(dtype, zero_point, qmin, qmax, op);
}

// quantize_per_tensor: fp32 x with at least one dimension (rows along the last), a per-tensor scale,
// an int8 / uint8 out_dtype with its zero point and range.
inline void check_quantize_per_tensor(const at::Tensor& x, const at::Tensor& scale, int64_t zero_point, int64_t qmin,
                                      int64_t qmax, at::ScalarType out_dtype, const char* op) {
  check_dtype(x, at::kFloat, op, "x");
  TORCH_CHECK(x.dim() >= 1, op, ": x must have at least one dimension (rows along the last), got a 0-D tensor");
  check_scale_tensor(scale, op, "scale");
  check_int8_range(out_dtype, zero_point, qmin, qmax, op, "out_dtype");
}

inline void check_quantize_rows(const at::Tensor& x, int64_t qmax, const char* op) {
  check_dtype(x, at::kFloat, op, "x");
  check_dim(x, 2, op, "x");
  TORCH_CHECK(qmax >= 1 && qmax <= 127, op, ": qmax must be in [1, 127], got ", qmax);
}

inline void check_quantize_multiplier(const at::Tensor& real, const char* op) {
  TORCH_CHECK(at::isFloatingType(real.scalar_type()), op, ": real must be a floating tensor, got ", real.scalar_type());
}

// requantize: int32 acc; a per-channel multiplier needs acc's last dimension. Returns the channels.
inline c10::SymInt check_requantize(const at::Tensor& acc, const at::Tensor& m0, const at::Tensor& shift,
                                    int64_t zero_point, int64_t qmin, int64_t qmax, at::ScalarType out_dtype,
                                    c10::string_view rounding, const char* op) {
  check_dtype(acc, at::kInt, op, "acc");
  TORCH_CHECK(acc.dim() >= 1 || m0.sym_numel() == 1, op,
              ": per-channel m0/shift need acc with a channel (last) dimension, got a 0-D acc");
  const c10::SymInt channels = acc.dim() >= 1 ? acc.sym_size(-1) : c10::SymInt(1);
  check_multiplier(m0, shift, channels, op);
  check_output_range(out_dtype, zero_point, qmin, qmax, op);
  parse_rounding(std::string(rounding), op);
  return channels;
}

// One per-tensor multiplier of int8_add: int32 m0 / shift of one element each.
inline void check_add_multiplier(const at::Tensor& m0, const at::Tensor& shift, const char* m0_name,
                                 const char* shift_name, const char* op) {
  for (const auto& [t, name] : {std::pair<const at::Tensor&, const char*>{m0, m0_name}, {shift, shift_name}}) {
    check_multiplier_dtype(t, op, name);
    TORCH_CHECK(t.sym_numel() == 1, op, ": ", name, " must have one element (a per-tensor multiplier), got shape ",
                t.sym_sizes());
  }
}

// int8_add: a and b int8 / uint8 of one shape, zero points in their ranges, left_shift in [0, 22],
// the output range and the three multipliers' types and sizes (their values: the CPU glue).
inline void check_int8_add(const at::Tensor& a, int64_t a_zero_point, const at::Tensor& a_m0, const at::Tensor& a_shift,
                           const at::Tensor& b, int64_t b_zero_point, const at::Tensor& b_m0, const at::Tensor& b_shift,
                           const at::Tensor& out_m0, const at::Tensor& out_shift, int64_t out_zero_point, int64_t qmin,
                           int64_t qmax, at::ScalarType out_dtype, int64_t left_shift, const char* op) {
  check_int8_input(a, op, "a");
  check_int8_input(b, op, "b");
  TORCH_CHECK(a.sym_sizes() == b.sym_sizes(), op, ": a and b must have the same shape, got ", a.sym_sizes(), " and ",
              b.sym_sizes());
  check_zero_point_for(a, a_zero_point, op, "a_zero_point");
  check_zero_point_for(b, b_zero_point, op, "b_zero_point");
  TORCH_CHECK(left_shift >= 0 && left_shift <= 22, op,
              ": left_shift must be in [0, 22] (255 << left_shift must fit in int32), got ", left_shift);
  check_output_range(out_dtype, out_zero_point, qmin, qmax, op);
  check_add_multiplier(a_m0, a_shift, "a_m0", "a_shift", op);
  check_add_multiplier(b_m0, b_shift, "b_m0", "b_shift", op);
  check_add_multiplier(out_m0, out_shift, "out_m0", "out_shift", op);
}

// The geometry of an int8_conv2d call after its checks; sizes may be symbolic.
struct Int8ConvGeometry {
  bool x_signed = false;
  c10::SymInt batch, out_h, out_w;
  int64_t out_channels = 0, group_depth = 0;  // static: from the weight
  bool per_channel = false;
};

// int8_conv2d: x int8 / uint8 [N, C, H, W], w (check_int8_conv_weight) with C == C/groups * groups,
// stride / dilation >= 1, padding >= 0, an output of at least one pixel, the requantization
// epilogue, and w_packed (when given) a pack of this w's shape and groups.
inline Int8ConvGeometry check_int8_conv2d(const at::Tensor& x, int64_t x_zero_point, const at::Tensor& w,
                                          const std::optional<at::Tensor>& bias, const at::Tensor& m0,
                                          const at::Tensor& shift, int64_t out_zero_point, int64_t qmin, int64_t qmax,
                                          at::ScalarType out_dtype, at::IntArrayRef stride, at::IntArrayRef padding,
                                          at::IntArrayRef dilation, int64_t groups, c10::string_view rounding,
                                          const std::optional<at::Tensor>& w_packed, const char* op) {
  Int8ConvGeometry g;
  g.x_signed = check_int8_input(x, op, "x");
  check_dim(x, 4, op, "x");
  check_zero_point_for(x, x_zero_point, op, "x_zero_point");
  check_int8_conv_weight(w, groups, op);
  TORCH_CHECK(stride.size() == 2 && padding.size() == 2 && dilation.size() == 2, op,
              ": stride, padding and dilation must have 2 elements each");
  TORCH_CHECK(stride[0] >= 1 && stride[1] >= 1, op, ": stride must be >= 1, got ", stride);
  TORCH_CHECK(dilation[0] >= 1 && dilation[1] >= 1, op, ": dilation must be >= 1, got ", dilation);
  TORCH_CHECK(padding[0] >= 0 && padding[1] >= 0, op, ": padding must be >= 0, got ", padding);
  const c10::SymInt in_channels = x.sym_size(1);
  TORCH_CHECK(in_channels == w.sym_size(1) * groups, op, ": x has ", in_channels, " channels but w expects ",
              w.sym_size(1), " x groups=", groups, " = ", w.sym_size(1) * groups);
  const int64_t kh = concrete_size(w.sym_size(2)), kw = concrete_size(w.sym_size(3));
  const int64_t reach_h = dilation[0] * (kh - 1) + 1, reach_w = dilation[1] * (kw - 1) + 1;
  const c10::SymInt padded_h = x.sym_size(2) + 2 * padding[0], padded_w = x.sym_size(3) + 2 * padding[1];
  TORCH_CHECK(padded_h >= reach_h && padded_w >= reach_w, op, ": the output would be empty: input ", x.sym_size(2), "x",
              x.sym_size(3), " is smaller than the dilated kernel ", reach_h, "x", reach_w, " with padding ", padding);
  g.batch = x.sym_size(0);
  g.out_h = (padded_h - reach_h) / stride[0] + 1;
  g.out_w = (padded_w - reach_w) / stride[1] + 1;
  g.out_channels = concrete_size(w.sym_size(0));
  g.group_depth = concrete_size(w.sym_size(1)) * kh * kw;
  g.per_channel =
      check_requant_epilogue(m0, shift, g.out_channels, bias, out_zero_point, qmin, qmax, out_dtype, rounding, op);
  if (w_packed.has_value()) {
    check_dtype(*w_packed, at::kInt, op, "w_packed");
    PackedExpect expect;
    expect.n = g.out_channels;
    expect.n_from = "w";
    expect.k = g.group_depth;
    expect.k_from = "w: C/groups * KH * KW";
    expect.param = groups;
    check_packed(*w_packed, PackedFamily::kInt8Conv2d, expect, op, "w_packed");
  }
  return g;
}

}  // namespace ck::ops
