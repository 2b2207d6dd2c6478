// The Meta kernels: what torch.compile, torch.export and meta tensors run in place of an op. Each
// runs the op's own argument checks (the family's checks header, the same functions the CPU and
// CUDA glue call, so a traced program refuses exactly what the kernels refuse) and allocates an
// output of the op's shape, dtype and memory format. Sizes may be symbolic; weight sizes (and so N,
// K and packed shapes) are specialized to their values.
#include <ATen/ATen.h>
#include <torch/library.h>

#include <tuple>
#include <vector>

#include "codebook_checks.h"
#include "fake_quant_checks.h"
#include "int4_checks.h"
#include "int8_checks.h"
#include "packed_checks.h"
#include "sparse24_checks.h"

namespace ck::ops {
namespace {

at::Tensor empty_meta(c10::SymIntArrayRef sizes, const at::Tensor& like, at::ScalarType dtype,
                      at::MemoryFormat format = at::MemoryFormat::Contiguous) {
  return at::empty_symint(sizes, like.options().dtype(dtype).memory_format(format));
}

// ---------------------------------------------------------------- requantization

std::tuple<at::Tensor, at::Tensor> quantize_multiplier_meta(const at::Tensor& real) {
  check_quantize_multiplier(real, "quantize_multiplier");
  return {empty_meta(real.sym_sizes(), real, at::kInt), empty_meta(real.sym_sizes(), real, at::kInt)};
}

at::Tensor requantize_meta(const at::Tensor& acc, const at::Tensor& m0, const at::Tensor& shift, int64_t zero_point,
                           int64_t qmin, int64_t qmax, at::ScalarType out_dtype, c10::string_view rounding) {
  check_requantize(acc, m0, shift, zero_point, qmin, qmax, out_dtype, rounding, "requantize");
  return empty_meta(acc.sym_sizes(), acc, out_dtype);
}

at::Tensor int8_add_meta(const at::Tensor& a, int64_t a_zero_point, const at::Tensor& a_m0, const at::Tensor& a_shift,
                         const at::Tensor& b, int64_t b_zero_point, const at::Tensor& b_m0, const at::Tensor& b_shift,
                         const at::Tensor& out_m0, const at::Tensor& out_shift, int64_t out_zero_point, int64_t qmin,
                         int64_t qmax, at::ScalarType out_dtype, int64_t left_shift) {
  check_int8_add(a, a_zero_point, a_m0, a_shift, b, b_zero_point, b_m0, b_shift, out_m0, out_shift, out_zero_point,
                 qmin, qmax, out_dtype, left_shift, "int8_add");
  // The CPU kernel keeps a's layout when b shares it and a is dense; otherwise the output is contiguous.
  if (a.sym_strides() == b.sym_strides() && a.is_non_overlapping_and_dense()) {
    return at::empty_strided_symint(a.sym_sizes(), a.sym_strides(), a.options().dtype(out_dtype));
  }
  return empty_meta(a.sym_sizes(), a, out_dtype);
}

// ---------------------------------------------------------------- int8 GEMM, linear, conv

at::Tensor int8_pack_weight_meta(const at::Tensor& w) {
  constexpr const char* op = "int8_pack_weight";
  check_int8_weight(w, op);
  const std::vector<int64_t> shape =
      packed_shape(PackedFamily::kInt8, concrete_size(w.sym_size(0)), concrete_size(w.sym_size(1)), 0, op);
  return at::empty(shape, w.options().dtype(at::kInt));
}

at::Tensor int8_gemm_meta(const at::Tensor& a, const at::Tensor& b) {
  const Int8Operands o = check_int8_gemm_operands(a, 0, b, "int8_gemm");
  return empty_meta({a.sym_size(0), o.n}, a, at::kInt);
}

at::Tensor int8_linear_meta(const at::Tensor& x, int64_t x_zero_point, const at::Tensor& w,
                            const std::optional<at::Tensor>& bias, const at::Tensor& m0, const at::Tensor& shift,
                            int64_t out_zero_point, int64_t qmin, int64_t qmax, at::ScalarType out_dtype,
                            c10::string_view rounding) {
  constexpr const char* op = "int8_linear";
  const Int8Operands o = check_int8_gemm_operands(x, x_zero_point, w, op);
  check_requant_epilogue(m0, shift, o.n, bias, out_zero_point, qmin, qmax, out_dtype, rounding, op);
  return empty_meta({x.sym_size(0), o.n}, x, out_dtype);
}

at::Tensor int8_linear_float_meta(const at::Tensor& x, int64_t x_zero_point, const at::Tensor& w,
                                  const at::Tensor& x_scale, const at::Tensor& w_scale,
                                  const std::optional<at::Tensor>& bias) {
  constexpr const char* op = "int8_linear_float";
  const Int8Operands o = check_int8_gemm_operands(x, x_zero_point, w, op);
  check_float_epilogue(x_scale, w_scale, bias, x.sym_size(0), o.n, op);
  return empty_meta({x.sym_size(0), o.n}, x, at::kFloat);
}

at::Tensor int8_linear_dequant_meta(const at::Tensor& x, int64_t x_zero_point, const at::Tensor& w,
                                    const std::optional<at::Tensor>& bias, const at::Tensor& m0,
                                    const at::Tensor& shift, int64_t out_zero_point, int64_t qmin, int64_t qmax,
                                    at::ScalarType int_dtype, const at::Tensor& out_scale, c10::string_view rounding) {
  constexpr const char* op = "int8_linear_dequant";
  const Int8Operands o = check_int8_gemm_operands(x, x_zero_point, w, op);
  check_int8_range(int_dtype, out_zero_point, qmin, qmax, op, "int_dtype");
  check_requant_epilogue(m0, shift, o.n, bias, out_zero_point, qmin, qmax, int_dtype, rounding, op);
  check_scale_tensor(out_scale, op, "out_scale");
  return empty_meta({x.sym_size(0), o.n}, x, at::kFloat);
}

std::tuple<at::Tensor, at::Tensor> quantize_per_tensor_meta(const at::Tensor& x, const at::Tensor& scale,
                                                            int64_t zero_point, int64_t qmin, int64_t qmax,
                                                            at::ScalarType out_dtype) {
  check_quantize_per_tensor(x, scale, zero_point, qmin, qmax, out_dtype, "quantize_per_tensor");
  const c10::SymInt rows = x.sym_size(-1) == 0 ? c10::SymInt(0) : x.sym_numel() / x.sym_size(-1);
  return {empty_meta(x.sym_sizes(), x, out_dtype), empty_meta({rows}, x, at::kBool)};
}

std::tuple<at::Tensor, at::Tensor> quantize_rows_meta(const at::Tensor& x, int64_t qmax) {
  check_quantize_rows(x, qmax, "quantize_rows");
  return {empty_meta(x.sym_sizes(), x, at::kChar), empty_meta({x.sym_size(0)}, x, at::kFloat)};
}

at::Tensor int8_conv2d_pack_weight_meta(const at::Tensor& w, int64_t groups) {
  constexpr const char* op = "int8_conv2d_pack_weight";
  check_int8_conv_weight(w, groups, op);
  const int64_t depth = concrete_size(w.sym_size(1) * w.sym_size(2) * w.sym_size(3));
  const std::vector<int64_t> shape =
      packed_shape(PackedFamily::kInt8Conv2d, concrete_size(w.sym_size(0)), depth, groups, op);
  return at::empty(shape, w.options().dtype(at::kInt));
}

at::Tensor int8_conv2d_meta(const at::Tensor& x, int64_t x_zero_point, const at::Tensor& w,
                            const std::optional<at::Tensor>& bias, const at::Tensor& m0, const at::Tensor& shift,
                            int64_t out_zero_point, int64_t qmin, int64_t qmax, at::ScalarType out_dtype,
                            at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups,
                            c10::string_view rounding, const std::optional<at::Tensor>& w_packed) {
  const Int8ConvGeometry g =
      check_int8_conv2d(x, x_zero_point, w, bias, m0, shift, out_zero_point, qmin, qmax, out_dtype, stride, padding,
                        dilation, groups, rounding, w_packed, "int8_conv2d");
  return empty_meta({g.batch, g.out_channels, g.out_h, g.out_w}, x, out_dtype, at::MemoryFormat::ChannelsLast);
}

// ---------------------------------------------------------------- int4

at::Tensor int4_pack_meta(const at::Tensor& w_int4, const at::Tensor& scales, int64_t group_size,
                          const std::optional<at::Tensor>& zero_points) {
  constexpr const char* op = "int4_pack";
  const auto [n, k, param] = check_int4_pack(w_int4, scales, group_size, zero_points, op);
  return at::empty(packed_shape(PackedFamily::kInt4, n, k, param, op), w_int4.options().dtype(at::kInt));
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> int4_unpack_meta(const at::Tensor& w_packed, int64_t in_features,
                                                                int64_t group_size) {
  const int64_t n = check_int4_unpack(w_packed, in_features, group_size, "int4_unpack");
  const int64_t groups = in_features / group_size;
  const at::TensorOptions options = w_packed.options();
  return {at::empty({n, in_features}, options.dtype(at::kChar)), at::empty({n, groups}, options.dtype(at::kFloat)),
          at::empty({n, groups}, options.dtype(at::kChar))};
}

at::Tensor int4_linear_meta(const at::Tensor& x, const at::Tensor& w_packed, const std::optional<at::Tensor>& bias,
                            c10::string_view activation) {
  const int64_t n = check_int4_linear(x, w_packed, bias, activation, "int4_linear");
  return empty_meta({x.sym_size(0), n}, x, x.scalar_type());
}

// ---------------------------------------------------------------- codebook

at::Tensor codebook_pack_meta(const at::Tensor& idx, int64_t bits) {
  constexpr const char* op = "codebook_pack";
  check_codebook_idx(idx, bits, op);
  const std::vector<int64_t> shape =
      packed_shape(PackedFamily::kCodebook, concrete_size(idx.sym_size(0)), concrete_size(idx.sym_size(1)), bits, op);
  return at::empty(shape, idx.options().dtype(at::kInt));
}

at::Tensor codebook_decode_meta(const at::Tensor& packed, const at::Tensor& codebook, int64_t bits, int64_t k) {
  const PackedInfo info = check_codebook_decode(packed, codebook, bits, k, "codebook_decode");
  return at::empty({info.n, k}, codebook.options().dtype(at::kFloat));
}

at::Tensor codebook_unpack_meta(const at::Tensor& packed, int64_t bits, int64_t k) {
  const PackedInfo info = check_codebook_unpack(packed, bits, k, "codebook_unpack");
  return at::empty({info.n, k}, packed.options().dtype(at::kByte));
}

at::Tensor codebook_linear_meta(const at::Tensor& x, const at::Tensor& packed_idx, const at::Tensor& codebook,
                                int64_t bits, const std::optional<at::Tensor>& bias) {
  const PackedInfo info = check_codebook_linear(x, packed_idx, codebook, bits, bias, "codebook_linear");
  return empty_meta({x.sym_size(0), info.n}, x, x.scalar_type());
}

at::Tensor codebook_conv2d_meta(const at::Tensor& x, const at::Tensor& packed_idx, const at::Tensor& codebook,
                                int64_t bits, const std::optional<at::Tensor>& bias, at::IntArrayRef kernel_size,
                                at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation,
                                int64_t groups) {
  PackedInfo info;
  const CodebookConvShape s = check_codebook_conv2d(x, packed_idx, codebook, bits, bias, kernel_size, stride, padding,
                                                    dilation, groups, info, "codebook_conv2d");
  return empty_meta({s.batch, s.out_channels, s.ho, s.wo}, x, at::kFloat);
}

// ---------------------------------------------------------------- 2:4 sparse

std::tuple<at::Tensor, at::Tensor> sparse24_compress_meta(const at::Tensor& w) {
  check_sparse24_dense(w, "sparse24_compress");
  const c10::SymInt n = w.sym_size(0), k = w.sym_size(1);
  return {empty_meta({n, k / 2}, w, w.scalar_type()), empty_meta({n, (k + 7) / 8}, w, at::kByte)};
}

at::Tensor sparse24_decompress_meta(const at::Tensor& values, const at::Tensor& meta) {
  const c10::SymInt k = check_sparse24_compressed(values, meta, "sparse24_decompress");
  return empty_meta({values.sym_size(0), k}, values, values.scalar_type());
}

at::Tensor sparse24_pack_meta(const at::Tensor& values, const at::Tensor& meta, PackedFamily f, at::ScalarType dtype,
                              const char* op) {
  const auto [n, k] = check_sparse24_pack(values, meta, dtype, op);
  return at::empty(packed_shape(f, n, k, 0, op), values.options().dtype(packed_dtype(f)));
}

at::Tensor sparse24_f32_pack_meta(const at::Tensor& values, const at::Tensor& meta) {
  return sparse24_pack_meta(values, meta, PackedFamily::kSparse24F32, at::kFloat, "sparse24_f32_pack");
}

at::Tensor sparse24_bf16_pack_meta(const at::Tensor& values, const at::Tensor& meta) {
  return sparse24_pack_meta(values, meta, PackedFamily::kSparse24Bf16, at::kBFloat16, "sparse24_bf16_pack");
}

at::Tensor sparse24_int8_pack_meta(const at::Tensor& values, const at::Tensor& meta) {
  return sparse24_pack_meta(values, meta, PackedFamily::kSparse24Int8, at::kChar, "sparse24_int8_pack");
}

at::Tensor sparse24_linear_meta(const at::Tensor& x, const at::Tensor& values, const at::Tensor& meta,
                                const std::optional<at::Tensor>& bias) {
  const int64_t n = check_sparse24_linear(x, values, meta, bias, "sparse24_linear");
  return empty_meta({x.sym_size(0), n}, x, x.scalar_type());
}

at::Tensor sparse24_int8_linear_meta(const at::Tensor& x, int64_t x_zero_point, const at::Tensor& values,
                                     const at::Tensor& meta, const std::optional<at::Tensor>& bias,
                                     const at::Tensor& m0, const at::Tensor& shift, int64_t out_zero_point,
                                     int64_t qmin, int64_t qmax, at::ScalarType out_dtype, c10::string_view rounding) {
  constexpr const char* op = "sparse24_int8_linear";
  check_dim(x, 2, op, "x");
  const int64_t n = check_sparse24_int8(x, x_zero_point, x.sym_size(1), "x", values, meta, bias, m0, shift,
                                        out_zero_point, qmin, qmax, out_dtype, rounding, op);
  return empty_meta({x.sym_size(0), n}, x, out_dtype);
}

at::Tensor sparse24_conv2d_meta(const at::Tensor& x, const at::Tensor& values, const at::Tensor& meta,
                                const std::optional<at::Tensor>& bias, at::IntArrayRef kernel_size,
                                at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation) {
  constexpr const char* op = "sparse24_conv2d";
  check_dtype(x, at::kFloat, op, "x");
  const Sparse24ConvShape s = check_sparse24_conv(x, kernel_size, stride, padding, dilation, op);
  const int64_t n = check_sparse24_weight(values, meta, PackedFamily::kSparse24F32, at::kFloat, s.k,
                                          "the conv (kh * kw * in_channels)",
                                          "float32 [N, K/2] or sparse24_f32_pack's packed tensor", op);
  check_bias(bias, at::kFloat, n, op);
  return empty_meta({s.batch, n, s.out_h, s.out_w}, x, at::kFloat, at::MemoryFormat::ChannelsLast);
}

at::Tensor sparse24_int8_conv2d_meta(const at::Tensor& x, int64_t x_zero_point, const at::Tensor& values,
                                     const at::Tensor& meta, const std::optional<at::Tensor>& bias,
                                     const at::Tensor& m0, const at::Tensor& shift, int64_t out_zero_point,
                                     int64_t qmin, int64_t qmax, at::ScalarType out_dtype, at::IntArrayRef kernel_size,
                                     at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation,
                                     c10::string_view rounding) {
  constexpr const char* op = "sparse24_int8_conv2d";
  const Sparse24ConvShape s = check_sparse24_conv(x, kernel_size, stride, padding, dilation, op);
  const int64_t n = check_sparse24_int8(x, x_zero_point, s.k, "the conv (kh * kw * in_channels)", values, meta, bias,
                                        m0, shift, out_zero_point, qmin, qmax, out_dtype, rounding, op);
  return empty_meta({s.batch, n, s.out_h, s.out_w}, x, out_dtype, at::MemoryFormat::ChannelsLast);
}

// ---------------------------------------------------------------- fake-quant

at::Tensor fake_quant_meta(const at::Tensor& x, const at::Tensor& scale, const at::Tensor& zero_point, int64_t qmin,
                           int64_t qmax, std::optional<int64_t> axis, const std::optional<at::Tensor>& mask,
                           std::optional<double> grad_factor) {
  constexpr const char* op = "fake_quant";
  check_grad_factor(grad_factor, op);
  check_fake_quant(x, scale, zero_point, qmin, qmax, axis, mask, op);
  return empty_meta(x.sym_sizes(), x, x.scalar_type());
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> fake_quant_backward_meta(
    const at::Tensor& grad, const at::Tensor& x, const at::Tensor& scale, const at::Tensor& zero_point, int64_t qmin,
    int64_t qmax, std::optional<int64_t> axis, const std::optional<at::Tensor>& mask, std::optional<double> grad_factor,
    bool /*scale_grad*/, bool /*zero_point_grad*/) {
  constexpr const char* op = "fake_quant_backward";
  check_grad_factor(grad_factor, op);
  check_fake_quant(x, scale, zero_point, qmin, qmax, axis, mask, op);
  check_fake_quant_grad(grad, x, op);
  const at::ScalarType zp_grad_dtype =
      at::isFloatingType(zero_point.scalar_type()) ? zero_point.scalar_type() : at::kFloat;
  return {empty_meta(x.sym_sizes(), x, x.scalar_type()), empty_meta(scale.sym_sizes(), scale, scale.scalar_type()),
          empty_meta(zero_point.sym_sizes(), zero_point, zp_grad_dtype)};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> fake_quant_observe_meta(const at::Tensor& x, at::Tensor& running_min,
                                                                       at::Tensor& running_max, double momentum,
                                                                       int64_t qmin, int64_t qmax, bool /*symmetric*/,
                                                                       std::optional<int64_t> axis,
                                                                       const std::optional<at::Tensor>& mask) {
  check_fake_quant_observe(x, running_min, running_max, momentum, qmin, qmax, axis, mask, "fake_quant_observe");
  // scale and zero point in running_min's shape (0-D per tensor), as the CPU op returns them
  return {empty_meta(x.sym_sizes(), x, x.scalar_type()), empty_meta(running_min.sym_sizes(), x, at::kFloat),
          empty_meta(running_min.sym_sizes(), x, at::kInt)};
}

}  // namespace
}  // namespace ck::ops

TORCH_LIBRARY_IMPL(compress_kernels, Meta, m) {
  m.impl("quantize_multiplier", &ck::ops::quantize_multiplier_meta);
  m.impl("requantize", &ck::ops::requantize_meta);
  m.impl("int8_add", &ck::ops::int8_add_meta);
  m.impl("int8_pack_weight", &ck::ops::int8_pack_weight_meta);
  m.impl("int8_gemm", &ck::ops::int8_gemm_meta);
  m.impl("int8_linear", &ck::ops::int8_linear_meta);
  m.impl("int8_linear_float", &ck::ops::int8_linear_float_meta);
  m.impl("int8_linear_dequant", &ck::ops::int8_linear_dequant_meta);
  m.impl("quantize_per_tensor", &ck::ops::quantize_per_tensor_meta);
  m.impl("quantize_rows", &ck::ops::quantize_rows_meta);
  m.impl("int8_conv2d_pack_weight", &ck::ops::int8_conv2d_pack_weight_meta);
  m.impl("int8_conv2d", &ck::ops::int8_conv2d_meta);
  m.impl("int4_pack", &ck::ops::int4_pack_meta);
  m.impl("int4_unpack", &ck::ops::int4_unpack_meta);
  m.impl("int4_linear", &ck::ops::int4_linear_meta);
  m.impl("codebook_pack", &ck::ops::codebook_pack_meta);
  m.impl("codebook_unpack", &ck::ops::codebook_unpack_meta);
  m.impl("codebook_decode", &ck::ops::codebook_decode_meta);
  m.impl("codebook_linear", &ck::ops::codebook_linear_meta);
  m.impl("codebook_conv2d", &ck::ops::codebook_conv2d_meta);
  m.impl("sparse24_compress", &ck::ops::sparse24_compress_meta);
  m.impl("sparse24_decompress", &ck::ops::sparse24_decompress_meta);
  m.impl("sparse24_f32_pack", &ck::ops::sparse24_f32_pack_meta);
  m.impl("sparse24_bf16_pack", &ck::ops::sparse24_bf16_pack_meta);
  m.impl("sparse24_int8_pack", &ck::ops::sparse24_int8_pack_meta);
  m.impl("sparse24_linear", &ck::ops::sparse24_linear_meta);
  m.impl("sparse24_int8_linear", &ck::ops::sparse24_int8_linear_meta);
  m.impl("sparse24_conv2d", &ck::ops::sparse24_conv2d_meta);
  m.impl("sparse24_int8_conv2d", &ck::ops::sparse24_int8_conv2d_meta);
  m.impl("fake_quant", &ck::ops::fake_quant_meta);
  m.impl("fake_quant_backward", &ck::ops::fake_quant_backward_meta);
  m.impl("fake_quant_observe", &ck::ops::fake_quant_observe_meta);
}
