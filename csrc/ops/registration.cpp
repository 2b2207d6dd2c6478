// The one place where every op's schema is declared. Implementations register per backend in
// cpu_*.cpp / cuda_*.cpp beside this file (cpu_isa.cpp: the CPU path control ops); fake (meta)
// kernels and autograd live beside their wrappers in compress_kernels/ops/ (one module per family).
#include <Python.h>
#include <torch/library.h>

// `import compress_kernels._C` loads this library, which runs the registrations below.
PyMODINIT_FUNC PyInit__C(void) {
  static PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C", "compress_kernels native ops", -1, nullptr};
  return PyModule_Create(&module_def);
}

TORCH_LIBRARY(compress_kernels, m) {
  // ---- fixed-point requantization (csrc/include/ck/fixedpoint.h) ----
  m.def("quantize_multiplier(Tensor real) -> (Tensor, Tensor)");
  m.def(
      "requantize(Tensor acc, Tensor m0, Tensor shift, int zero_point, int qmin, int qmax, "
      "ScalarType out_dtype, str rounding=\"double\") -> Tensor");

  m.def(
      "int8_add(Tensor a, int a_zero_point, Tensor a_m0, Tensor a_shift, Tensor b, int b_zero_point, Tensor b_m0, "
      "Tensor b_shift, Tensor out_m0, Tensor out_shift, int out_zero_point, int qmin, int qmax, ScalarType out_dtype, "
      "int left_shift=20) -> Tensor");

  // ---- int8 GEMM / linear ----
  m.def("int8_pack_weight(Tensor w) -> Tensor");
  m.def("int8_gemm(Tensor a, Tensor b) -> Tensor");
  m.def(
      "int8_linear(Tensor x, int x_zero_point, Tensor w, Tensor? bias, Tensor m0, Tensor shift, "
      "int out_zero_point, int qmin, int qmax, ScalarType out_dtype, str rounding=\"double\") -> Tensor");
  m.def(
      "int8_linear_float(Tensor x, int x_zero_point, Tensor w, Tensor x_scale, Tensor w_scale, "
      "Tensor? bias) -> Tensor");
  m.def(
      "int8_linear_dequant(Tensor x, int x_zero_point, Tensor w, Tensor? bias, Tensor m0, Tensor shift, "
      "int out_zero_point, int qmin, int qmax, ScalarType int_dtype, Tensor out_scale, str rounding=\"double\") -> "
      "Tensor");
  m.def("quantize_rows(Tensor x, int qmax=127) -> (Tensor, Tensor)");
  m.def(
      "quantize_per_tensor(Tensor x, Tensor scale, int zero_point, int qmin, int qmax, ScalarType out_dtype) -> "
      "(Tensor, Tensor)");

  // ---- int8 conv2d ----
  m.def("int8_conv2d_pack_weight(Tensor w, int groups=1) -> Tensor");
  m.def(
      "int8_conv2d(Tensor x, int x_zero_point, Tensor w, Tensor? bias, Tensor m0, Tensor shift, "
      "int out_zero_point, int qmin, int qmax, ScalarType out_dtype, int[2] stride=1, int[2] padding=0, "
      "int[2] dilation=1, int groups=1, str rounding=\"double\", Tensor? w_packed=None) -> Tensor");

  // ---- k-means codebook lookup ----
  m.def("codebook_pack(Tensor idx, int bits) -> Tensor");
  m.def("codebook_unpack(Tensor packed_idx, int bits, int k) -> Tensor");
  m.def("codebook_decode(Tensor packed_idx, Tensor codebook, int bits, int k) -> Tensor");
  m.def("codebook_linear(Tensor x, Tensor packed_idx, Tensor codebook, int bits, Tensor? bias) -> Tensor");
  m.def(
      "codebook_conv2d(Tensor x, Tensor packed_idx, Tensor codebook, int bits, Tensor? bias, "
      "int[2] kernel_size, int[2] stride=1, int[2] padding=0, int[2] dilation=1, int groups=1) -> Tensor");

  // ---- group-wise int4 weights (csrc/cpu/int4.h) ----
  m.def("int4_pack(Tensor w_int4, Tensor scales, int group_size, Tensor? zero_points=None) -> Tensor");
  m.def("int4_unpack(Tensor w_packed, int in_features, int group_size) -> (Tensor, Tensor, Tensor)");
  m.def("int4_linear(Tensor x, Tensor w_packed, Tensor? bias, str activation=\"int8\") -> Tensor");

  // ---- 2:4 semi-structured sparsity ----
  m.def("sparse24_compress(Tensor w) -> (Tensor, Tensor)");
  m.def("sparse24_decompress(Tensor values, Tensor meta) -> Tensor");
  m.def("sparse24_f32_pack(Tensor values, Tensor meta) -> Tensor");
  m.def("sparse24_bf16_pack(Tensor values, Tensor meta) -> Tensor");
  m.def("sparse24_linear(Tensor x, Tensor values, Tensor meta, Tensor? bias) -> Tensor");
  m.def(
      "sparse24_conv2d(Tensor x, Tensor values, Tensor meta, Tensor? bias, int[2] kernel_size, int[2] stride, "
      "int[2] padding, int[2] dilation) -> Tensor");
  m.def("sparse24_int8_pack(Tensor values, Tensor meta) -> Tensor");
  m.def(
      "sparse24_int8_linear(Tensor x, int x_zero_point, Tensor values, Tensor meta, Tensor? bias, Tensor m0, "
      "Tensor shift, int out_zero_point, int qmin, int qmax, ScalarType out_dtype, str rounding=\"double\") -> Tensor");
  m.def(
      "sparse24_int8_conv2d(Tensor x, int x_zero_point, Tensor values, Tensor meta, Tensor? bias, Tensor m0, "
      "Tensor shift, int out_zero_point, int qmin, int qmax, ScalarType out_dtype, int[2] kernel_size, "
      "int[2] stride, int[2] padding, int[2] dilation, str rounding=\"double\") -> Tensor");

  // ---- fused fake-quant ----
  m.def(
      "fake_quant(Tensor x, Tensor scale, Tensor zero_point, int qmin, int qmax, int? axis=None, "
      "Tensor? mask=None, float? grad_factor=None) -> Tensor");
  m.def(
      "fake_quant_backward(Tensor grad, Tensor x, Tensor scale, Tensor zero_point, int qmin, int qmax, "
      "int? axis, Tensor? mask, float? grad_factor, bool scale_grad, bool zero_point_grad) "
      "-> (Tensor, Tensor, Tensor)");
  m.def(
      "fake_quant_observe(Tensor x, Tensor(a!) running_min, Tensor(b!) running_max, float momentum, int qmin, "
      "int qmax, bool symmetric=False, int? axis=None, Tensor? mask=None) -> (Tensor, Tensor, Tensor)");

  // ---- packed weights (csrc/include/ck/packed_header.h): the shape a pack op returns for N x K
  // (param: bits for codebook_pack, groups for int8_conv2d_pack_weight, group_size (+ 65536 with zero
  // points) for int4_pack, else 0), and N back from a 2-D pack's shape; family is the pack op's name ----
  m.def("packed_shape(str family, int n, int k, int param) -> int[]");
  m.def("packed_n(str family, int[] shape) -> int");

  // ---- testing / benchmarking control: query or force the CPU ISA path ----
  m.def("_cpu_isa(str isa=\"\") -> str");
  m.def("_cpu_bf16_path() -> str");
  m.def("_cpu_isa_report() -> str");
  m.def("_cpu_kernel_tiers() -> str[]");
  m.def("_amx_peak(str kind, float seconds) -> float");
}
