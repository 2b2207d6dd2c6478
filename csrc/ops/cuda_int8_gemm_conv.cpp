// CUDA implementations of the int8 family (requantize, int8 GEMM / linear, quantize_rows, int8
// conv2d): argument checks (shared with the CPU glue and the Meta kernels through int8_checks.h), output allocation,
// the current stream, then the torch-free launchers of csrc/cuda/int8_*.cu.
//
// Differences from the CPU glue, all to avoid a device-to-host copy (a stream synchronization) per
// call:
//  - m0 / shift may be CPU tensors (their values are checked, a per-tensor multiplier is passed by
//    value and a per-channel one is copied to the device) or tensors on x's device (shape and dtype
//    checked; their values are not read back: the kernels clamp shift into [-31, 30], so a bad value
//    gives a wrong result, never undefined behavior). Modules keep them on the device.
//  - Exception: a packed weight carries the header of ck/packed_header.h, validated like on the CPU
//    (packed_checks.h, same messages); its 32 header bytes are copied to the host per call, one
//    device-to-host copy that waits for the work already queued on the current stream. The K
//    trailer of the payload is not read back. Pack ops copy the header in (host-to-device).
#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <algorithm>
#include <optional>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "../cuda/int8_gemm.cuh"
#include "checks.h"
#include "int8_checks.h"
#include "packed_checks.h"

namespace ck::ops {
namespace {

using cuda::Int8Epilogue;
using cuda::Int8EpilogueParams;
using cuda::Int8OutType;

void check_launch(cudaError_t status, const char* op) {
  TORCH_CHECK(status == cudaSuccess, op, ": CUDA launch failed: ", cudaGetErrorString(status));
}

// t must live on x's CUDA device.
void check_device_of(const at::Tensor& t, const at::Tensor& x, const char* op, const char* name) {
  check_same_device(t, x, op, name);
}

Int8OutType out_type_of(at::ScalarType dtype) {
  return dtype == at::kChar ? Int8OutType::kInt8 : dtype == at::kByte ? Int8OutType::kUInt8 : Int8OutType::kInt32;
}

// Fills the kRequantize part of ep from op arguments the shared checks passed (check_requantize /
// check_requant_epilogue: dtype, sizes, values of CPU multipliers, output range). `holders` keeps
// device copies alive until the launch is queued.
void set_requant(Int8EpilogueParams& ep, const at::Tensor& m0, const at::Tensor& shift, int64_t zero_point,
                 int64_t qmin, int64_t qmax, at::ScalarType out_dtype, c10::string_view rounding, const at::Tensor& x,
                 std::vector<at::Tensor>& holders, const char* op) {
  TORCH_CHECK(m0.device().is_cpu() || m0.device() == x.device(), op, ": m0 must be a CPU tensor or on ", x.device(),
              " like x, got ", m0.device());
  TORCH_CHECK(shift.device().is_cpu() || shift.device() == x.device(), op, ": shift must be a CPU tensor or on ",
              x.device(), " like x, got ", shift.device());
  const bool per_channel = m0.numel() > 1;
  ep.kind = Int8Epilogue::kRequantize;
  ep.out_type = out_type_of(out_dtype);
  ep.per_channel = per_channel;
  ep.zero_point = static_cast<int32_t>(zero_point);
  ep.qmin = static_cast<int32_t>(qmin);
  ep.qmax = static_cast<int32_t>(qmax);
  ep.rounding = parse_rounding(std::string(rounding), op);
  if (!per_channel && m0.device().is_cpu() && shift.device().is_cpu()) {
    ep.m0_scalar = *m0.data_ptr<int32_t>();  // one int32 element (checked): read it in place
    ep.shift_scalar = *shift.data_ptr<int32_t>();
    return;
  }
  holders.push_back(m0.to(x.device()).contiguous());
  ep.m0 = holders.back().data_ptr<int32_t>();
  holders.push_back(shift.to(x.device()).contiguous());
  ep.shift = holders.back().data_ptr<int32_t>();
}

const int32_t* bias_i32_for(const std::optional<at::Tensor>& bias, const at::Tensor& x,
                            std::vector<at::Tensor>& holders, const char* op) {
  if (!bias.has_value()) return nullptr;
  check_device_of(*bias, x, op, "bias");
  holders.push_back(bias->contiguous());
  return holders.back().data_ptr<int32_t>();
}

// ---------------------------------------------------------------- requantize / quantize_rows

at::Tensor requantize_cuda(const at::Tensor& acc, const at::Tensor& m0, const at::Tensor& shift, int64_t zero_point,
                           int64_t qmin, int64_t qmax, at::ScalarType out_dtype, c10::string_view rounding) {
  constexpr const char* op = "requantize";
  const int64_t channels =
      check_requantize(acc, m0, shift, zero_point, qmin, qmax, out_dtype, rounding, op).expect_int();
  TORCH_CHECK(acc.is_cuda(), op, ": acc must be a CUDA tensor here, got ", acc.device());
  const c10::cuda::CUDAGuard guard(acc.device());
  Int8EpilogueParams ep;
  std::vector<at::Tensor> holders;
  set_requant(ep, m0, shift, zero_point, qmin, qmax, out_dtype, rounding, acc, holders, op);
  at::Tensor out = at::empty(acc.sizes(), acc.options().dtype(out_dtype));
  if (acc.numel() == 0) return out;
  const at::Tensor a = acc.contiguous();
  const int64_t cols = std::max<int64_t>(channels, 1), rows = a.numel() / cols;
  check_launch(
      cuda::int8_requantize(a.data_ptr<int32_t>(), rows, cols, ep, out.data_ptr(), at::cuda::getCurrentCUDAStream()),
      op);
  return out;
}

std::tuple<at::Tensor, at::Tensor> quantize_rows_cuda(const at::Tensor& x, int64_t qmax) {
  constexpr const char* op = "quantize_rows";
  check_quantize_rows(x, qmax, op);
  const c10::cuda::CUDAGuard guard(x.device());
  const at::Tensor xc = x.contiguous();
  at::Tensor q = at::empty({x.size(0), x.size(1)}, x.options().dtype(at::kChar));
  at::Tensor scale = at::empty({x.size(0)}, x.options());
  check_launch(cuda::int8_quantize_rows(xc.data_ptr<float>(), x.size(0), x.size(1), -static_cast<int32_t>(qmax),
                                        static_cast<int32_t>(qmax), q.data_ptr<int8_t>(), scale.data_ptr<float>(),
                                        at::cuda::getCurrentCUDAStream()),
               op);
  return {q, scale};
}

// ---------------------------------------------------------------- int8 GEMM / linear

// w [rows, k] int8 (any row stride) -> a pack of `family` (int8_pack_weight, or with groups > 1
// possible int8_conv2d_pack_weight, which packs each block of rows / groups rows separately):
// the header rows, then the payload the CPU writes.
at::Tensor pack_rows(const at::Tensor& w, PackedFamily family, int64_t groups, const char* op) {
  const bool rows_ok = w.stride(1) == 1 && (w.size(0) == 1 || w.stride(0) >= w.size(1));
  const at::Tensor wc = rows_ok ? w : w.contiguous();
  const int64_t ldw = wc.size(0) == 1 ? wc.size(1) : wc.stride(0);
  const int64_t param = family == PackedFamily::kInt8Conv2d ? groups : 0;
  at::Tensor packed = new_packed(family, w.size(0), w.size(1), param, w.options(), op);
  int32_t* payload = packed.data_ptr<int32_t>() + packed_header_elements(family, packed.size(1));
  check_launch(cuda::int8_pack_weight(wc.data_ptr<int8_t>(), wc.size(0), wc.size(1), ldw, groups, payload,
                                      at::cuda::getCurrentCUDAStream()),
               op);
  return packed;
}

at::Tensor pack_weight(const at::Tensor& w, const char* op) {
  check_int8_weight(w, op);
  const c10::cuda::CUDAGuard guard(w.device());
  return pack_rows(w, PackedFamily::kInt8, 1, op);
}

at::Tensor int8_pack_weight_cuda(const at::Tensor& w) { return pack_weight(w, "int8_pack_weight"); }

// The ops dispatch to CUDA when any tensor argument is on CUDA; x must be.
void check_x_on_cuda(const at::Tensor& x, const char* op) {
  TORCH_CHECK(x.is_cuda(), op, ": x must be a CUDA tensor here, got ", x.device());
}

// Shared front half of the GEMM ops: checks x and w, fills the operand part of p.
at::Tensor prepare_operands(const at::Tensor& x, int64_t x_zero_point, const at::Tensor& w, at::Tensor& x_holder,
                            cuda::Int8GemmParams& p, const char* op) {
  check_device_of(w, x, op, "w");
  // x and w (the header of a pack read back to the host: see the top of this file)
  const Int8Operands o = check_int8_gemm_operands(x, x_zero_point, w, op);
  const bool is_signed = o.x_signed;
  const at::Tensor packed = o.w_packed ? w : pack_weight(w, op);
  const PackedInfo info = o.w_packed ? o.packed : check_packed(packed, PackedFamily::kInt8, PackedExpect{}, op, "w");
  x_holder = x.stride(1) == 1 && (x.size(0) <= 1 || x.stride(0) >= x.size(1)) ? x : x.contiguous();
  p.a = x_holder.data_ptr();
  p.a_signed = is_signed;
  p.m = x.size(0);
  p.lda = x_holder.size(0) > 1 ? x_holder.stride(0) : x.size(1);
  p.a_zero_point = static_cast<int32_t>(x_zero_point);
  p.w_packed = packed_payload<int32_t>(packed, info);
  p.n = info.n;
  p.k = x.size(1);
  return packed;
}

at::Tensor int8_gemm_cuda(const at::Tensor& a, const at::Tensor& b) {
  constexpr const char* op = "int8_gemm";
  check_x_on_cuda(a, op);
  const c10::cuda::CUDAGuard guard(a.device());
  cuda::Int8GemmParams p;
  at::Tensor a_holder;
  const at::Tensor packed = prepare_operands(a, 0, b, a_holder, p, op);
  at::Tensor out = at::empty({a.size(0), p.n}, a.options().dtype(at::kInt));
  p.epilogue.kind = Int8Epilogue::kInt32;
  p.epilogue.out_type = Int8OutType::kInt32;
  p.out = out.data_ptr();
  p.ldo = p.n;
  check_launch(cuda::int8_gemm(p, at::cuda::getCurrentCUDAStream()), op);
  return out;
}

at::Tensor int8_linear_cuda(const at::Tensor& x, int64_t x_zero_point, const at::Tensor& w,
                            const std::optional<at::Tensor>& bias, const at::Tensor& m0, const at::Tensor& shift,
                            int64_t out_zero_point, int64_t qmin, int64_t qmax, at::ScalarType out_dtype,
                            c10::string_view rounding) {
  constexpr const char* op = "int8_linear";
  check_x_on_cuda(x, op);
  const c10::cuda::CUDAGuard guard(x.device());
  cuda::Int8GemmParams p;
  at::Tensor x_holder;
  std::vector<at::Tensor> holders;
  const at::Tensor packed = prepare_operands(x, x_zero_point, w, x_holder, p, op);
  check_requant_epilogue(m0, shift, p.n, bias, out_zero_point, qmin, qmax, out_dtype, rounding, op);
  set_requant(p.epilogue, m0, shift, out_zero_point, qmin, qmax, out_dtype, rounding, x, holders, op);
  p.epilogue.bias_i32 = bias_i32_for(bias, x, holders, op);
  at::Tensor out = at::empty({x.size(0), p.n}, x.options().dtype(out_dtype));
  p.out = out.data_ptr();
  p.ldo = p.n;
  check_launch(cuda::int8_gemm(p, at::cuda::getCurrentCUDAStream()), op);
  return out;
}

at::Tensor int8_linear_float_cuda(const at::Tensor& x, int64_t x_zero_point, const at::Tensor& w,
                                  const at::Tensor& x_scale, const at::Tensor& w_scale,
                                  const std::optional<at::Tensor>& bias) {
  constexpr const char* op = "int8_linear_float";
  check_x_on_cuda(x, op);
  const c10::cuda::CUDAGuard guard(x.device());
  cuda::Int8GemmParams p;
  at::Tensor x_holder;
  const at::Tensor packed = prepare_operands(x, x_zero_point, w, x_holder, p, op);
  const int64_t m = x.size(0), n = p.n;
  check_float_epilogue(x_scale, w_scale, bias, m, n, op);
  check_device_of(x_scale, x, op, "x_scale");
  check_device_of(w_scale, x, op, "w_scale");
  const at::Tensor xs = x_scale.contiguous(), ws = w_scale.contiguous();
  at::Tensor bias_holder;
  if (bias.has_value()) {
    check_device_of(*bias, x, op, "bias");
    bias_holder = bias->contiguous();
    p.epilogue.bias_f = bias_holder.data_ptr<float>();
  }
  p.epilogue.kind = Int8Epilogue::kFloat;
  p.epilogue.out_type = Int8OutType::kFloat32;
  p.epilogue.x_scale = xs.data_ptr<float>();
  p.epilogue.x_scale_per_row = xs.numel() > 1;
  p.epilogue.w_scale = ws.data_ptr<float>();
  p.epilogue.w_scale_per_channel = ws.numel() > 1;
  at::Tensor out = at::empty({m, n}, x.options().dtype(at::kFloat));
  p.out = out.data_ptr();
  p.ldo = n;
  check_launch(cuda::int8_gemm(p, at::cuda::getCurrentCUDAStream()), op);
  return out;
}

// ---------------------------------------------------------------- int8 conv2d

// Same bytes as the CPU int8_conv2d_pack_weight: per group, w permuted to (o, kh, kw, c) and packed.
at::Tensor pack_conv_weight(const at::Tensor& w, int64_t groups, const char* op) {
  const int64_t oc = w.size(0), depth = w.size(1) * w.size(2) * w.size(3);
  const at::Tensor rows = w.permute({0, 2, 3, 1}).contiguous().reshape({oc, depth});
  return pack_rows(rows, PackedFamily::kInt8Conv2d, groups, op);
}

at::Tensor int8_conv2d_pack_weight_cuda(const at::Tensor& w, int64_t groups) {
  constexpr const char* op = "int8_conv2d_pack_weight";
  check_int8_conv_weight(w, groups, op);
  const c10::cuda::CUDAGuard guard(w.device());  // w is the only tensor: the dispatcher chose CUDA for it
  return pack_conv_weight(w, groups, op);
}

at::Tensor int8_conv2d_cuda(const at::Tensor& x, int64_t x_zero_point, const at::Tensor& w,
                            const std::optional<at::Tensor>& bias, const at::Tensor& m0, const at::Tensor& shift,
                            int64_t out_zero_point, int64_t qmin, int64_t qmax, at::ScalarType out_dtype,
                            at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups,
                            c10::string_view rounding, const std::optional<at::Tensor>& w_packed) {
  constexpr const char* op = "int8_conv2d";
  check_x_on_cuda(x, op);
  const c10::cuda::CUDAGuard guard(x.device());
  check_device_of(w, x, op, "w");
  if (w_packed.has_value()) check_device_of(*w_packed, x, op, "w_packed");
  // Every argument check, shared with the CPU glue and the Meta kernel (a w_packed header is read
  // back to the host even where the depthwise kernel reads w instead, so that a pack that does not
  // belong to w is never silently accepted).
  const Int8ConvGeometry geometry =
      check_int8_conv2d(x, x_zero_point, w, bias, m0, shift, out_zero_point, qmin, qmax, out_dtype, stride, padding,
                        dilation, groups, rounding, w_packed, op);
  const bool x_signed = geometry.x_signed;
  cuda::Int8ConvParams p;
  p.x_signed = x_signed;
  p.x_zero_point = static_cast<int32_t>(x_zero_point);
  p.batch = x.size(0), p.in_channels = x.size(1), p.height = x.size(2), p.width = x.size(3);
  p.out_channels = w.size(0), p.kernel_h = w.size(2), p.kernel_w = w.size(3);
  p.stride_h = stride[0], p.stride_w = stride[1], p.pad_h = padding[0], p.pad_w = padding[1];
  p.dilation_h = dilation[0], p.dilation_w = dilation[1], p.groups = groups;
  // CUDA-only limit: the kernels index one image plane and the channels with 32-bit integers.
  TORCH_CHECK(p.height * p.width <= INT32_MAX && p.in_channels <= INT32_MAX, op, ": an input plane of ", p.height, "x",
              p.width, " with ", p.in_channels,
              " channels is too large for the CUDA kernel (H * W and C must be < 2^31)");
  const int64_t oc = p.out_channels;
  std::vector<at::Tensor> holders;
  set_requant(p.epilogue, m0, shift, out_zero_point, qmin, qmax, out_dtype, rounding, x, holders, op);
  p.epilogue.bias_i32 = bias_i32_for(bias, x, holders, op);
  at::Tensor out = at::empty({p.batch, oc, p.out_h(), p.out_w()},
                             x.options().dtype(out_dtype).memory_format(at::MemoryFormat::ChannelsLast));
  if (p.batch == 0) return out;
  const at::Tensor xc = x.contiguous(at::MemoryFormat::ChannelsLast);
  p.x = xc.data_ptr();
  p.out = out.data_ptr();
  at::Tensor weight;
  if (groups == p.in_channels && oc == groups) {  // depthwise: direct kernel on w [C, KH * KW]
    weight = w.reshape({oc, p.kernel_h * p.kernel_w}).contiguous();
    p.w_depthwise = weight.data_ptr<int8_t>();
  } else if (w_packed.has_value()) {
    weight = *w_packed;
    p.w_packed = weight.data_ptr<int32_t>() + packed_header_elements(PackedFamily::kInt8Conv2d, weight.size(1));
  } else {
    weight = pack_conv_weight(w, groups, op);
    p.w_packed = weight.data_ptr<int32_t>() + packed_header_elements(PackedFamily::kInt8Conv2d, weight.size(1));
  }
  check_launch(cuda::int8_conv2d(p, at::cuda::getCurrentCUDAStream()), op);
  return out;
}

}  // namespace
}  // namespace ck::ops

TORCH_LIBRARY_IMPL(compress_kernels, CUDA, m) {
  m.impl("requantize", &ck::ops::requantize_cuda);
  m.impl("int8_pack_weight", &ck::ops::int8_pack_weight_cuda);
  m.impl("int8_gemm", &ck::ops::int8_gemm_cuda);
  m.impl("int8_linear", &ck::ops::int8_linear_cuda);
  m.impl("int8_linear_float", &ck::ops::int8_linear_float_cuda);
  m.impl("quantize_rows", &ck::ops::quantize_rows_cuda);
  m.impl("int8_conv2d_pack_weight", &ck::ops::int8_conv2d_pack_weight_cuda);
  m.impl("int8_conv2d", &ck::ops::int8_conv2d_cuda);
}
