// CPU implementations of the int8 GEMM / linear, requantize, int8_add and quantize_rows ops:
// argument checks, output allocation, threading. The kernels themselves are torch-free (csrc/cpu/).
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <limits>
#include <tuple>

#include "../cpu/int8_gemm.h"
#include "../cpu/requantize.h"
#include "checks.h"
#include "int8_checks.h"
#include "packed_checks.h"

namespace ck::ops {
namespace {

using cpu::OutType;

std::tuple<at::Tensor, at::Tensor> quantize_multiplier_cpu(const at::Tensor& real) {
  constexpr const char* op = "quantize_multiplier";
  check_quantize_multiplier(real, op);
  const at::Tensor r = real.to(at::kDouble).contiguous();
  at::Tensor m0 = at::empty(real.sizes(), real.options().dtype(at::kInt));
  at::Tensor shift = at::empty(real.sizes(), real.options().dtype(at::kInt));
  const double* rp = r.data_ptr<double>();
  int32_t* mp = m0.data_ptr<int32_t>();
  int32_t* sp = shift.data_ptr<int32_t>();
  for (int64_t i = 0; i < r.numel(); ++i) {
    TORCH_CHECK(QuantizeMultiplier(rp[i], &mp[i], &sp[i]), op,
                ": real multipliers must be finite, >= 0 and < 2^30, got ", rp[i], " at index ", i);
  }
  return {m0, shift};
}

at::Tensor requantize_cpu(const at::Tensor& acc, const at::Tensor& m0, const at::Tensor& shift, int64_t zero_point,
                          int64_t qmin, int64_t qmax, at::ScalarType out_dtype, c10::string_view rounding) {
  constexpr const char* op = "requantize";
  check_cpu(acc, op, "acc");
  const int64_t channels =
      check_requantize(acc, m0, shift, zero_point, qmin, qmax, out_dtype, rounding, op).expect_int();
  const bool per_channel = m0.numel() > 1;
  const at::Tensor m0c = m0.contiguous(), shiftc = shift.contiguous();
  const cpu::RequantParams p =
      requant_params(m0c, shiftc, per_channel, zero_point, qmin, qmax, out_dtype, rounding, op);
  at::Tensor out = at::empty(acc.sizes(), acc.options().dtype(out_dtype));
  if (acc.numel() == 0) return out;
  const at::Tensor a = acc.contiguous();
  const int64_t cols = channels, rows = a.numel() / cols;
  const int32_t* ap = a.data_ptr<int32_t>();
  void* op_out = out.data_ptr();
  const int64_t grain = std::max<int64_t>(1, 32768 / std::max<int64_t>(cols, 1));
  at::parallel_for(0, rows, grain,
                   [&](int64_t begin, int64_t end) { cpu::requantize_rows(ap, cols, cols, begin, end, p, op_out); });
  return out;
}

// One per-tensor multiplier of int8_add (checked by check_add_multiplier; here its values: m0 >= 0,
// shift in range) as the requantization parameters that read it (double rounding, the default).
cpu::RequantParams add_multiplier(const at::Tensor& m0, const at::Tensor& shift, const char* m0_name,
                                  const char* shift_name, const char* op) {
  check_cpu(m0, op, m0_name);
  check_cpu(shift, op, shift_name);
  cpu::RequantParams p;
  p.m0 = m0.data_ptr<int32_t>();  // read directly: item() would dispatch per call
  p.shift = shift.data_ptr<int32_t>();
  TORCH_CHECK(*p.m0 >= 0, op, ": ", m0_name, " must be >= 0 (a quantized multiplier in [2^30, 2^31) or 0), got ",
              *p.m0);
  TORCH_CHECK(*p.shift >= kMinShift && *p.shift <= kMaxShift, op, ": ", shift_name, " must be in [", kMinShift, ", ",
              kMaxShift, "], got ", *p.shift);
  return p;
}

at::Tensor int8_add_cpu(const at::Tensor& a, int64_t a_zero_point, const at::Tensor& a_m0, const at::Tensor& a_shift,
                        const at::Tensor& b, int64_t b_zero_point, const at::Tensor& b_m0, const at::Tensor& b_shift,
                        const at::Tensor& out_m0, const at::Tensor& out_shift, int64_t out_zero_point, int64_t qmin,
                        int64_t qmax, at::ScalarType out_dtype, int64_t left_shift) {
  constexpr const char* op = "int8_add";
  check_int8_add(a, a_zero_point, a_m0, a_shift, b, b_zero_point, b_m0, b_shift, out_m0, out_shift, out_zero_point,
                 qmin, qmax, out_dtype, left_shift, op);
  check_cpu(a, op, "a");
  check_cpu(b, op, "b");
  cpu::Int8AddParams p;
  p.a_signed = a.scalar_type() == at::kChar;
  p.b_signed = b.scalar_type() == at::kChar;
  const int32_t int32_min = std::numeric_limits<int32_t>::min(), int32_max = std::numeric_limits<int32_t>::max();
  p.a = add_multiplier(a_m0, a_shift, "a_m0", "a_shift", op);
  p.b = add_multiplier(b_m0, b_shift, "b_m0", "b_shift", op);
  p.out = add_multiplier(out_m0, out_shift, "out_m0", "out_shift", op);
  for (cpu::RequantParams* q : {&p.a, &p.b}) {  // int32 intermediates
    q->qmin = int32_min, q->qmax = int32_max, q->zero_point = 0, q->out_type = cpu::OutType::kInt32;
  }
  p.out.zero_point = static_cast<int32_t>(out_zero_point);
  p.out.qmin = static_cast<int32_t>(qmin), p.out.qmax = static_cast<int32_t>(qmax);
  p.out.out_type = out_dtype == at::kChar   ? cpu::OutType::kInt8
                   : out_dtype == at::kByte ? cpu::OutType::kUInt8
                                            : cpu::OutType::kInt32;
  p.a_zero_point = static_cast<int32_t>(a_zero_point), p.b_zero_point = static_cast<int32_t>(b_zero_point);
  p.left_shift = static_cast<int>(left_shift);
  // Elementwise in storage order when a and b share one dense layout (channels_last activations
  // stay channels_last, no copy); otherwise on contiguous copies.
  const bool same_layout = a.strides() == b.strides() && a.is_non_overlapping_and_dense();
  const at::Tensor ac = same_layout ? a : a.contiguous(), bc = same_layout ? b : b.contiguous();
  at::Tensor out = at::empty_strided(ac.sizes(), ac.strides(), ac.options().dtype(out_dtype));
  const int64_t n = ac.numel();
  if (n == 0) return out;
  at::parallel_for(0, n, 16384, [&](int64_t begin, int64_t end) {
    cpu::int8_add_range(ac.data_ptr(), bc.data_ptr(), p, begin, end, out.data_ptr());
  });
  return out;
}

at::Tensor pack_weight(const at::Tensor& w, const char* op) {
  check_int8_weight(w, op);
  check_cpu(w, op, "w");
  const at::Tensor wc = w.stride(1) == 1 ? w : w.contiguous();
  at::Tensor packed = new_packed(PackedFamily::kInt8, w.size(0), w.size(1), 0, w.options(), op);
  const int64_t header = packed_header_elements(PackedFamily::kInt8, packed.size(1));
  cpu::int8_pack_weight(wc.data_ptr<int8_t>(), wc.size(0), wc.size(1), wc.stride(0),
                        packed.data_ptr<int32_t>() + header);
  return packed;
}

at::Tensor int8_pack_weight_cpu(const at::Tensor& w) { return pack_weight(w, "int8_pack_weight"); }

// The packed weight the kernels read: w itself (a pack, checked) or a raw int8 [N, K] weight
// packed for this call.
struct WeightView {
  at::Tensor holder;
  cpu::PackedInt8Weight view;
};

// Shared front half of the int8 GEMM ops: checks x and w (check_int8_gemm_operands), fills the
// operand part of the args.
WeightView prepare_operands(const at::Tensor& x, int64_t x_zero_point, const at::Tensor& w, at::Tensor& x_holder,
                            cpu::Int8GemmArgs& args, const char* op) {
  check_cpu(x, op, "x");
  check_cpu(w, op, "w");
  Int8Operands o = check_int8_gemm_operands(x, x_zero_point, w, op);
  const bool is_signed = o.x_signed;
  WeightView wv;
  wv.holder = o.w_packed ? w : pack_weight(w, op);
  if (!o.w_packed) {
    PackedExpect expect;
    expect.k = x.size(1);
    o.packed = check_packed(wv.holder, PackedFamily::kInt8, expect, op, "w");
  }
  wv.view = cpu::int8_packed_view(packed_payload<int32_t>(wv.holder, o.packed), o.packed.n, wv.holder.size(1));
  TORCH_CHECK(wv.view.k == x.size(1), op, ": K mismatch: x has K=", x.size(1),
              " but the packed w was built for K=", wv.view.k);
  x_holder = x.stride(1) == 1 && x.stride(0) >= x.size(1) ? x : x.contiguous();
  args.x = x_holder.data_ptr();
  args.x_signed = is_signed;
  args.m = x.size(0);
  args.ldx = x_holder.size(0) > 1 ? x_holder.stride(0) : x.size(1);
  args.x_zero_point = static_cast<int32_t>(x_zero_point);
  args.w = wv.view;
  return wv;
}

void run_gemm(const cpu::Int8GemmArgs& args) {
  if (args.m == 0) return;
  const cpu::Int8GemmPlan plan = cpu::int8_gemm_plan(args.m, args.w.n, at::get_num_threads(), args.w.k);
  at::parallel_for(0, plan.tasks(), 1, [&](int64_t begin, int64_t end) { cpu::int8_gemm_run(args, plan, begin, end); });
}

at::Tensor int8_gemm_cpu(const at::Tensor& a, const at::Tensor& b) {
  cpu::Int8GemmArgs args;
  at::Tensor a_holder;
  const WeightView wv = prepare_operands(a, 0, b, a_holder, args, "int8_gemm");
  at::Tensor out = at::empty({a.size(0), wv.view.n}, a.options().dtype(at::kInt));
  args.kind = cpu::EpilogueKind::kInt32;
  args.out = out.data_ptr();
  run_gemm(args);
  return out;
}

// A checked bias (check_bias) as a contiguous pointer, or nullptr.
template <typename T>
const T* optional_bias(const std::optional<at::Tensor>& bias, at::Tensor& holder, const char* op) {
  if (!bias.has_value()) return nullptr;
  check_cpu(*bias, op, "bias");
  holder = bias->contiguous();
  return holder.data_ptr<T>();
}

// int8_linear and int8_linear_dequant: the requantizing GEMM, its output int_dtype or, with out_scale,
// dequantized to fp32 in the same epilogue (OutType::kFloat32).
at::Tensor requantized_linear(const at::Tensor& x, int64_t x_zero_point, const at::Tensor& w,
                              const std::optional<at::Tensor>& bias, const at::Tensor& m0, const at::Tensor& shift,
                              int64_t out_zero_point, int64_t qmin, int64_t qmax, at::ScalarType int_dtype,
                              const at::Tensor* out_scale, c10::string_view rounding, const char* op) {
  cpu::Int8GemmArgs args;
  at::Tensor x_holder, bias_holder;
  const WeightView wv = prepare_operands(x, x_zero_point, w, x_holder, args, op);
  const int64_t n = wv.view.n;
  check_cpu(m0, op, "m0");
  check_cpu(shift, op, "shift");
  if (out_scale != nullptr) {
    check_cpu(*out_scale, op, "out_scale");
    check_int8_range(int_dtype, out_zero_point, qmin, qmax, op, "int_dtype");
  }
  const bool per_channel =
      check_requant_epilogue(m0, shift, n, bias, out_zero_point, qmin, qmax, int_dtype, rounding, op);
  args.bias_i32 = optional_bias<int32_t>(bias, bias_holder, op);
  const at::Tensor m0c = m0.contiguous(), shiftc = shift.contiguous();
  args.kind = cpu::EpilogueKind::kRequantize;
  args.requant = requant_params(m0c, shiftc, per_channel, out_zero_point, qmin, qmax, int_dtype, rounding, op);
  if (out_scale != nullptr) {
    check_scale_tensor(*out_scale, op, "out_scale");
    args.requant.out_type = OutType::kFloat32;
    args.requant.dequant_scale = check_scale_value(*out_scale, op, "out_scale");
  }
  at::Tensor out = at::empty({x.size(0), n}, x.options().dtype(out_scale != nullptr ? at::kFloat : int_dtype));
  args.out = out.data_ptr();
  run_gemm(args);
  return out;
}

at::Tensor int8_linear_cpu(const at::Tensor& x, int64_t x_zero_point, const at::Tensor& w,
                           const std::optional<at::Tensor>& bias, const at::Tensor& m0, const at::Tensor& shift,
                           int64_t out_zero_point, int64_t qmin, int64_t qmax, at::ScalarType out_dtype,
                           c10::string_view rounding) {
  return requantized_linear(x, x_zero_point, w, bias, m0, shift, out_zero_point, qmin, qmax, out_dtype, nullptr,
                            rounding, "int8_linear");
}

at::Tensor int8_linear_dequant_cpu(const at::Tensor& x, int64_t x_zero_point, const at::Tensor& w,
                                   const std::optional<at::Tensor>& bias, const at::Tensor& m0, const at::Tensor& shift,
                                   int64_t out_zero_point, int64_t qmin, int64_t qmax, at::ScalarType int_dtype,
                                   const at::Tensor& out_scale, c10::string_view rounding) {
  return requantized_linear(x, x_zero_point, w, bias, m0, shift, out_zero_point, qmin, qmax, int_dtype, &out_scale,
                            rounding, "int8_linear_dequant");
}

at::Tensor int8_linear_float_cpu(const at::Tensor& x, int64_t x_zero_point, const at::Tensor& w,
                                 const at::Tensor& x_scale, const at::Tensor& w_scale,
                                 const std::optional<at::Tensor>& bias) {
  constexpr const char* op = "int8_linear_float";
  cpu::Int8GemmArgs args;
  at::Tensor x_holder;
  const WeightView wv = prepare_operands(x, x_zero_point, w, x_holder, args, op);
  const int64_t m = x.size(0), n = wv.view.n;
  check_float_epilogue(x_scale, w_scale, bias, m, n, op);
  check_cpu(x_scale, op, "x_scale");
  check_cpu(w_scale, op, "w_scale");
  const at::Tensor xs = x_scale.contiguous(), ws = w_scale.contiguous();
  at::Tensor bias_holder;
  args.bias_f = optional_bias<float>(bias, bias_holder, op);
  args.kind = cpu::EpilogueKind::kFloat;
  args.x_scale = xs.data_ptr<float>();
  args.x_scale_per_row = xs.numel() > 1;
  args.w_scale = ws.data_ptr<float>();
  args.w_scale_per_channel = ws.numel() > 1;
  at::Tensor out = at::empty({m, n}, x.options().dtype(at::kFloat));
  args.out = out.data_ptr();
  run_gemm(args);
  return out;
}

std::tuple<at::Tensor, at::Tensor> quantize_rows_cpu(const at::Tensor& x, int64_t qmax) {
  constexpr const char* op = "quantize_rows";
  check_quantize_rows(x, qmax, op);
  check_cpu(x, op, "x");
  const at::Tensor xc = x.contiguous();
  const int64_t rows = x.size(0), cols = x.size(1);
  at::Tensor q = at::empty({rows, cols}, x.options().dtype(at::kChar));
  at::Tensor scale = at::empty({rows}, x.options());
  const float* xp = xc.data_ptr<float>();
  int8_t* qp = q.data_ptr<int8_t>();
  float* sp = scale.data_ptr<float>();
  const int64_t grain = std::max<int64_t>(1, 16384 / std::max<int64_t>(cols, 1));
  at::parallel_for(0, rows, grain, [&](int64_t begin, int64_t end) {
    cpu::quantize_rows(xp, rows, cols, begin, end, -static_cast<int32_t>(qmax), static_cast<int32_t>(qmax), qp, sp);
  });
  return {q, scale};
}

std::tuple<at::Tensor, at::Tensor> quantize_per_tensor_cpu(const at::Tensor& x, const at::Tensor& scale,
                                                           int64_t zero_point, int64_t qmin, int64_t qmax,
                                                           at::ScalarType out_dtype) {
  constexpr const char* op = "quantize_per_tensor";
  check_quantize_per_tensor(x, scale, zero_point, qmin, qmax, out_dtype, op);
  check_cpu(x, op, "x");
  check_cpu(scale, op, "scale");
  cpu::QuantizePerTensorParams p;
  p.scale = check_scale_value(scale, op, "scale");
  p.zero_point = static_cast<int32_t>(zero_point);
  p.qmin = static_cast<int32_t>(qmin);
  p.qmax = static_cast<int32_t>(qmax);
  p.out_signed = out_dtype == at::kChar;
  const at::Tensor xc = x.contiguous();
  const int64_t cols = x.size(-1), rows = cols > 0 ? x.numel() / cols : 0;
  at::Tensor q = at::empty(x.sizes(), x.options().dtype(out_dtype));
  at::Tensor nonfinite = at::zeros({rows}, x.options().dtype(at::kBool));
  if (rows == 0 || cols == 0) return {q, nonfinite};
  const float* xp = xc.data_ptr<float>();
  void* qp = q.data_ptr();
  bool* np = nonfinite.data_ptr<bool>();
  const int64_t grain = std::max<int64_t>(1, 32768 / cols);
  at::parallel_for(0, rows, grain,
                   [&](int64_t begin, int64_t end) { cpu::quantize_per_tensor(xp, cols, begin, end, p, qp, np); });
  return {q, nonfinite};
}

}  // namespace
}  // namespace ck::ops

TORCH_LIBRARY_IMPL(compress_kernels, CPU, m) {
  m.impl("quantize_multiplier", &ck::ops::quantize_multiplier_cpu);
  m.impl("requantize", &ck::ops::requantize_cpu);
  m.impl("int8_pack_weight", &ck::ops::int8_pack_weight_cpu);
  m.impl("int8_gemm", &ck::ops::int8_gemm_cpu);
  m.impl("int8_linear", &ck::ops::int8_linear_cpu);
  m.impl("int8_linear_float", &ck::ops::int8_linear_float_cpu);
  m.impl("int8_linear_dequant", &ck::ops::int8_linear_dequant_cpu);
  m.impl("quantize_per_tensor", &ck::ops::quantize_per_tensor_cpu);
  m.impl("quantize_rows", &ck::ops::quantize_rows_cpu);
  m.impl("int8_add", &ck::ops::int8_add_cpu);
}
