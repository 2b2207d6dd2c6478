// Argument checks of the 2:4 sparse ops shared by the CPU glue (cpu_sparse24.cpp) and the Meta
// kernels (meta.cpp): same checks, same messages. Sizes may be symbolic; the checks that read
// values (the 2:4 pattern of a dense weight, metadata nibbles, packed headers and trailers) are the
// CPU glue's, or skipped on tensors without data. Device checks stay in the glue.
#pragma once

#include <ATen/ATen.h>
#include <c10/util/Exception.h>

#include <optional>
#include <tuple>

#include "checks.h"
#include "ck/sparse24.h"
#include "int8_checks.h"
#include "packed_checks.h"

namespace ck::ops {

inline void check_sparse24_k(const c10::SymInt& k, const char* op) {
  TORCH_CHECK(k > 0 && k % 4 == 0, op, ": K (the reduction dimension, kh * kw * in_channels for a conv) must be a ",
              "positive multiple of 4 for 2:4 sparsity, got K=", k);
}

// sparse24_compress's w: 2-D with K a positive multiple of 4.
inline void check_sparse24_dense(const at::Tensor& w, const char* op) {
  check_dim(w, 2, op, "w");
  check_sparse24_k(w.sym_size(1), op);
}

// values [N, K/2] and meta uint8 [N, ceil(K/8)]; returns K.
inline c10::SymInt check_sparse24_compressed(const at::Tensor& values, const at::Tensor& meta, const char* op) {
  check_dim(values, 2, op, "values");
  check_dim(meta, 2, op, "meta");
  check_dtype(meta, at::kByte, op, "meta");
  const c10::SymInt n = values.sym_size(0), k = 2 * values.sym_size(1);
  check_sparse24_k(k, op);
  const c10::SymInt meta_cols = (k + 7) / 8;
  TORCH_CHECK(meta.sym_size(0) == n && meta.sym_size(1) == meta_cols, op, ": meta must have shape [", n, ", ",
              meta_cols, "] for values of shape ", values.sym_sizes(), ", got ", meta.sym_sizes());
  return k;
}

// A pack op's values of `dtype` [N >= 1, K/2] and meta; returns (N, K).
inline std::tuple<int64_t, int64_t> check_sparse24_pack(const at::Tensor& values, const at::Tensor& meta,
                                                        at::ScalarType dtype, const char* op) {
  check_dtype(values, dtype, op, "values");
  const int64_t k = concrete_size(check_sparse24_compressed(values, meta, op));
  const int64_t n = concrete_size(values.sym_size(0));
  TORCH_CHECK(n > 0, op, ": values must have at least one row, got shape ", values.sym_sizes());
  if (dtype == at::kChar) check_depth(k, op);
  return {n, k};
}

// A packed weight of N x K (from its header) belongs to meta and to inputs of x_k values.
inline void check_sparse24_packed_matches(const char* op, const at::Tensor& meta, int64_t n, int64_t k,
                                          const c10::SymInt& x_k, const char* k_name) {
  TORCH_CHECK(meta.dim() == 2 && meta.sym_size(0) == n && meta.sym_size(1) == sparse24::meta_cols(k), op,
              ": meta of shape ", meta.sym_sizes(), " does not belong to the packed weight (N=", n, ", K=", k, ")");
  TORCH_CHECK(x_k == k, op, ": K mismatch: ", k_name, " has K=", x_k, " but the weight holds K=", k);
}

// The weight of a 2:4 op whose input rows hold x_k values: a 1-D pack of family f (validated by
// check_packed, then its N and K against meta's shape and x_k) or values [N, K/2] of
// `values_dtype` with meta (packed for the call by the glue). Returns N; *packed says which form.
inline int64_t check_sparse24_weight(const at::Tensor& values, const at::Tensor& meta, PackedFamily f,
                                     at::ScalarType values_dtype, const c10::SymInt& x_k, const char* k_name,
                                     const char* values_hint, const char* op, PackedInfo* info = nullptr) {
  if (values.dim() == 1) {
    PackedExpect expect;
    if (values.is_meta()) {  // no header to read: N from meta, K from x
      TORCH_CHECK(meta.dim() == 2, op, ": meta must be 2-D, got shape ", meta.sym_sizes());
      expect.n = concrete_size(meta.sym_size(0));
      expect.n_from = "meta";
      expect.k = concrete_size(x_k);
      expect.k_from = k_name;
    }
    const PackedInfo checked = check_packed(values, f, expect, op, "values");
    check_sparse24_packed_matches(op, meta, checked.n, checked.k, x_k, k_name);
    if (info != nullptr) *info = checked;
    return checked.n;
  }
  TORCH_CHECK(values.scalar_type() == values_dtype, op, ": values must be ", values_hint, ", got ",
              values.scalar_type(), " of shape ", values.sym_sizes());
  const auto [n, k] = check_sparse24_pack(values, meta, values_dtype, op);
  TORCH_CHECK(x_k == k, op, ": K mismatch: ", k_name, " has K=", x_k, " but the weight holds K=", k);
  return n;
}

// The geometry of a groups = 1 2:4 conv of x [N, C, H, W]; batch and spatial sizes may be symbolic.
struct Sparse24ConvShape {
  c10::SymInt batch, h, w, out_h, out_w;
  int64_t channels = 0, k = 0;  // k = kh * kw * C, the weight's reduction depth
};

inline Sparse24ConvShape check_sparse24_conv(const at::Tensor& x, at::IntArrayRef kernel_size, at::IntArrayRef stride,
                                             at::IntArrayRef padding, at::IntArrayRef dilation, const char* op) {
  check_dim(x, 4, op, "x");
  for (const auto& [name, v, lo] : {std::tuple<const char*, at::IntArrayRef, int64_t>{"kernel_size", kernel_size, 1},
                                    {"stride", stride, 1},
                                    {"padding", padding, 0},
                                    {"dilation", dilation, 1}}) {
    TORCH_CHECK(v.size() == 2 && v[0] >= lo && v[1] >= lo, op, ": ", name, " must be two integers >= ", lo, ", got ",
                v);
  }
  Sparse24ConvShape s;
  s.batch = x.sym_size(0);
  s.channels = concrete_size(x.sym_size(1));
  s.h = x.sym_size(2);
  s.w = x.sym_size(3);
  const int64_t span_h = dilation[0] * (kernel_size[0] - 1) + 1, span_w = dilation[1] * (kernel_size[1] - 1) + 1;
  TORCH_CHECK(s.h + 2 * padding[0] >= span_h && s.w + 2 * padding[1] >= span_w, op, ": the kernel (", kernel_size[0],
              "x", kernel_size[1], ", dilation ", dilation, ") does not fit the padded input of ", x.sym_sizes());
  s.out_h = (s.h + 2 * padding[0] - span_h) / stride[0] + 1;
  s.out_w = (s.w + 2 * padding[1] - span_w) / stride[1] + 1;
  s.k = kernel_size[0] * kernel_size[1] * s.channels;
  return s;
}

// sparse24_linear: x fp32 (values fp32 [N, K/2] or sparse24_f32_pack's) or bf16 (values bf16 or
// sparse24_bf16_pack's; bias bf16 or fp32) [M, K]; returns N.
inline int64_t check_sparse24_linear(const at::Tensor& x, const at::Tensor& values, const at::Tensor& meta,
                                     const std::optional<at::Tensor>& bias, const char* op,
                                     PackedInfo* info = nullptr) {
  check_dim(x, 2, op, "x");
  int64_t n = 0;
  if (x.scalar_type() == at::kBFloat16) {
    n = check_sparse24_weight(values, meta, PackedFamily::kSparse24Bf16, at::kBFloat16, x.sym_size(1), "x",
                              "bf16 [N, K/2] or sparse24_bf16_pack's packed tensor (with bf16 x)", op, info);
    if (bias.has_value()) {
      TORCH_CHECK(bias->scalar_type() == at::kBFloat16 || bias->scalar_type() == at::kFloat, op,
                  ": with bf16 x, bias must be bf16 or fp32, got ", bias->scalar_type());
      TORCH_CHECK(bias->dim() == 1 && bias->sym_size(0) == n, op, ": bias must have shape [", n, "], got ",
                  bias->sym_sizes());
    }
    return n;
  }
  TORCH_CHECK(x.scalar_type() == at::kFloat, op, ": x must be float32 or bfloat16 on the CPU, got ", x.scalar_type());
  n = check_sparse24_weight(values, meta, PackedFamily::kSparse24F32, at::kFloat, x.sym_size(1), "x",
                            "float32 [N, K/2] or sparse24_f32_pack's packed tensor", op, info);
  check_bias(bias, at::kFloat, n, op);
  return n;
}

inline constexpr const char* kSparse24Int8ValuesHint =
    "int8 [N, K/2] or an int32 packed weight from sparse24_int8_pack";

// The int8 2:4 ops' x (int8 / uint8 with its zero point), weight (x_k values per row) and fused
// requantization; returns N.
inline int64_t check_sparse24_int8(const at::Tensor& x, int64_t x_zero_point, const c10::SymInt& x_k,
                                   const char* k_name, const at::Tensor& values, const at::Tensor& meta,
                                   const std::optional<at::Tensor>& bias, const at::Tensor& m0, const at::Tensor& shift,
                                   int64_t out_zero_point, int64_t qmin, int64_t qmax, at::ScalarType out_dtype,
                                   c10::string_view rounding, const char* op, PackedInfo* info = nullptr) {
  check_int8_input(x, op, "x");
  check_zero_point_for(x, x_zero_point, op, "x_zero_point");
  const int64_t n = check_sparse24_weight(values, meta, PackedFamily::kSparse24Int8, at::kChar, x_k, k_name,
                                          kSparse24Int8ValuesHint, op, info);
  check_depth(x_k, op);
  check_requant_epilogue(m0, shift, n, bias, out_zero_point, qmin, qmax, out_dtype, rounding, op);
  return n;
}

}  // namespace ck::ops
