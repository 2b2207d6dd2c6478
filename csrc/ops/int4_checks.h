// Argument checks of the group-wise int4 ops shared by the CPU glue (cpu_int4.cpp) and the Meta
// kernels (meta.cpp): same checks, same messages. Sizes may be symbolic; the checks that read values
// (the int4 range of w_int4 / zero_points, finite positive scales, the pack's header) are the CPU
// glue's, and a pack without data is checked from its shape.
#pragma once

#include <ATen/ATen.h>
#include <c10/util/Exception.h>

#include <optional>
#include <string>
#include <tuple>

#include "../cpu/int4.h"
#include "checks.h"
#include "packed_checks.h"

namespace ck::ops {

inline void check_int4_group_size(int64_t group_size, const char* op) {
  TORCH_CHECK(int4_group_size_ok(group_size), op, ": group_size must be 32, 64, 128 or 256, got ", group_size);
}

// int4_pack: w_int4 int8 [N, K] (N, K > 0, K a multiple of group_size), scales fp32 and zero_points
// (when given) int8 of shape [N, K / group_size]. Returns (N, K, the pack's family parameter).
inline std::tuple<int64_t, int64_t, int64_t> check_int4_pack(const at::Tensor& w_int4, const at::Tensor& scales,
                                                             int64_t group_size,
                                                             const std::optional<at::Tensor>& zero_points,
                                                             const char* op) {
  check_int4_group_size(group_size, op);
  check_dtype(w_int4, at::kChar, op, "w_int4");
  check_dim(w_int4, 2, op, "w_int4");
  const int64_t n = concrete_size(w_int4.sym_size(0)), k = concrete_size(w_int4.sym_size(1));
  TORCH_CHECK(n > 0 && k > 0, op, ": w_int4 must have N > 0 rows and K > 0 columns, got shape ", w_int4.sym_sizes());
  TORCH_CHECK(k % group_size == 0, op, ": K=", k, " (w_int4's columns) must be a multiple of group_size=", group_size);
  const int64_t groups = k / group_size;
  check_dtype(scales, at::kFloat, op, "scales");
  TORCH_CHECK(scales.dim() == 2 && scales.sym_size(0) == n && scales.sym_size(1) == groups, op,
              ": scales must have shape [", n, ", ", groups, "] (N, K / group_size), got ", scales.sym_sizes());
  if (zero_points.has_value()) {
    check_dtype(*zero_points, at::kChar, op, "zero_points");
    TORCH_CHECK(zero_points->dim() == 2 && zero_points->sym_size(0) == n && zero_points->sym_size(1) == groups, op,
                ": zero_points must have shape [", n, ", ", groups, "] (N, K / group_size), got ",
                zero_points->sym_sizes());
  }
  return {n, k, group_size + (zero_points.has_value() ? packed::kInt4AsymmetricFlag : 0)};
}

// The pack of int4_linear without data: dtype, rank, layout, N from the rows after the header rows,
// and a row width that some int4 pack for K has (group size 32..256, with or without zero points;
// the header, read when the op runs, says which).
inline int64_t check_int4_pack_shape(const at::Tensor& w_packed, int64_t k, const char* op) {
  PackedExpect any;
  const PackedInfo info = check_packed_shape(w_packed, PackedFamily::kInt4, any, op, "w_packed");
  const int64_t words = concrete_size(w_packed.sym_size(1));
  bool fits = false;
  for (int64_t g : {32, 64, 128, 256}) {
    for (bool asymmetric : {false, true}) {
      fits = fits || (k % g == 0 && cpu::int4_words_per_row(k, g, asymmetric) == words);
    }
  }
  TORCH_CHECK(fits, op, ": w_packed has rows of ", words, " words, which no int4_pack for K=", k,
              " (from x) has (a pack for another K?)");
  return info.n;
}

// int4_unpack: w_packed an int4_pack of K = in_features (> 0, a multiple of group_size) in groups of
// group_size, symmetric or with zero points. The caller states K and the group size, so the outputs'
// sizes ([N, K], [N, K / group_size]) never depend on the header's values; the header (when there is
// data) must agree with them, a pack without data must have the row width of such a pack. Returns N.
inline int64_t check_int4_unpack(const at::Tensor& w_packed, int64_t in_features, int64_t group_size, const char* op) {
  check_int4_group_size(group_size, op);
  TORCH_CHECK(in_features > 0 && in_features % group_size == 0, op,
              ": in_features must be a positive multiple of group_size=", group_size, ", got ", in_features);
  if (w_packed.is_meta()) {
    PackedExpect any;
    const PackedInfo info = check_packed_shape(w_packed, PackedFamily::kInt4, any, op, "w_packed");
    const int64_t words = concrete_size(w_packed.sym_size(1));
    const int64_t symmetric_words = cpu::int4_words_per_row(in_features, group_size, false);
    const int64_t asymmetric_words = cpu::int4_words_per_row(in_features, group_size, true);
    TORCH_CHECK(words == symmetric_words || words == asymmetric_words, op, ": w_packed has rows of ", words,
                " words; an int4_pack for in_features=", in_features, ", group_size=", group_size, " has ",
                symmetric_words, " (symmetric) or ", asymmetric_words, " (with zero points)");
    return info.n;
  }
  PackedExpect expect;
  expect.k = in_features;
  expect.k_from = "in_features";
  const PackedInfo info = check_packed(w_packed, PackedFamily::kInt4, expect, op, "w_packed");
  TORCH_CHECK(info.param % packed::kInt4AsymmetricFlag == group_size, op, ": w_packed is ",
              describe_packed(info.family, info.n, info.k, info.param), ", expected group_size=", group_size);
  return info.n;
}

// int4_linear: activation "int8" / "fp32" (x float32) or "bf16" (x bfloat16), x [M, K] with K > 0,
// w_packed an int4_pack for that K (check_packed; from its shape without data), bias fp32 [N].
// Returns N; *info receives the header when there is one.
inline int64_t check_int4_linear(const at::Tensor& x, const at::Tensor& w_packed, const std::optional<at::Tensor>& bias,
                                 c10::string_view activation, const char* op, PackedInfo* info = nullptr) {
  const std::string act(activation);
  TORCH_CHECK(act == "int8" || act == "fp32" || act == "bf16", op,
              ": activation must be \"int8\" (w4a8), \"fp32\" or \"bf16\" (w4a16), got \"", act, "\"");
  const bool bf16 = act == "bf16";
  TORCH_CHECK(x.scalar_type() == (bf16 ? at::kBFloat16 : at::kFloat), op, ": x must be ", bf16 ? "bfloat16" : "float32",
              " for activation=\"", act, "\", got ", x.scalar_type());
  check_dim(x, 2, op, "x");
  TORCH_CHECK(x.sym_size(1) > 0, op, ": x must have K > 0 columns, got shape ", x.sym_sizes());
  const int64_t k = concrete_size(x.sym_size(1));
  int64_t n = 0;
  if (w_packed.is_meta()) {
    n = check_int4_pack_shape(w_packed, k, op);
  } else {
    PackedExpect expect;
    expect.k = k;
    expect.k_from = "x";
    const PackedInfo checked = check_packed(w_packed, PackedFamily::kInt4, expect, op, "w_packed");
    if (info != nullptr) *info = checked;
    n = checked.n;
  }
  check_bias(bias, at::kFloat, n, op);
  return n;
}

}  // namespace ck::ops
