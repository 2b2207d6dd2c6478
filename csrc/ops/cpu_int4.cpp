// CPU glue of the group-wise int4 ops: int4_pack / int4_unpack and int4_linear (w4a8 with dynamic
// int8 activations, w4a16 with fp32 or bf16 activations). Kernels and payload layout:
// csrc/cpu/int4.h; header: ck/packed_header.h.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <string>

#include "../cpu/int4.h"
#include "../cpu/int8_gemm.h"
#include "checks.h"
#include "int4_checks.h"
#include "packed_checks.h"

namespace ck::ops {
namespace {

// Values of an integer tensor within [lo, hi]; names the first one outside.
void check_int_range(const at::Tensor& t, int64_t lo, int64_t hi, const char* op, const char* name) {
  if (t.numel() == 0) return;
  const at::Tensor bad = (t < lo).logical_or(t > hi);
  if (bad.any().item<bool>()) {
    const int64_t at_index = bad.reshape(-1).nonzero()[0].item<int64_t>();
    const int64_t cols = t.size(1);
    TORCH_CHECK(false, op, ": ", name, " must hold int4 values in [", lo, ", ", hi, "], got ",
                t.reshape(-1)[at_index].item<int64_t>(), " at [", at_index / cols, ", ", at_index % cols, "]");
  }
}

at::Tensor int4_pack_cpu(const at::Tensor& w_int4, const at::Tensor& scales, int64_t group_size,
                         const std::optional<at::Tensor>& zero_points) {
  constexpr const char* op = "int4_pack";
  const auto [n, k, param] = check_int4_pack(w_int4, scales, group_size, zero_points, op);
  check_cpu(w_int4, op, "w_int4");
  check_cpu(scales, op, "scales");
  const int64_t groups = k / group_size;
  const at::Tensor bad_scale = scales.isfinite().logical_not().logical_or(scales <= 0);
  if (bad_scale.any().item<bool>()) {
    const int64_t i = bad_scale.reshape(-1).nonzero()[0].item<int64_t>();
    TORCH_CHECK(false, op, ": scales must be finite and > 0, got ", scales.reshape(-1)[i].item<float>(), " at [",
                i / groups, ", ", i % groups, "]");
  }
  check_int_range(w_int4, -8, 7, op, "w_int4");
  at::Tensor zp;
  if (zero_points.has_value()) {
    check_cpu(*zero_points, op, "zero_points");
    check_int_range(*zero_points, -8, 7, op, "zero_points");
    zp = zero_points->contiguous();
  }
  at::Tensor packed = new_packed(PackedFamily::kInt4, n, k, param, w_int4.options(), op);
  const at::Tensor q = w_int4.contiguous(), s = scales.contiguous();
  uint32_t* payload = reinterpret_cast<uint32_t*>(packed.data_ptr<int32_t>() +
                                                  packed_header_elements(PackedFamily::kInt4, packed.size(1)));
  cpu::int4_pack(q.data_ptr<int8_t>(), s.data_ptr<float>(), zp.defined() ? zp.data_ptr<int8_t>() : nullptr, n, k,
                 group_size, payload);
  return packed;
}

cpu::Int4Weight weight_view(const at::Tensor& packed, const char* op, int64_t k, const char* k_from) {
  check_cpu(packed, op, "w_packed");
  PackedExpect expect;
  expect.k = k;
  expect.k_from = k_from;
  const PackedInfo info = check_packed(packed, PackedFamily::kInt4, expect, op, "w_packed");
  cpu::Int4Weight w;
  w.payload = reinterpret_cast<const uint32_t*>(packed_payload<int32_t>(packed, info));
  w.n = info.n;
  w.k = info.k;
  w.group_size = info.param % packed::kInt4AsymmetricFlag;
  w.asymmetric = info.param >= packed::kInt4AsymmetricFlag;
  return w;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> int4_unpack_cpu(const at::Tensor& w_packed, int64_t in_features,
                                                               int64_t group_size) {
  constexpr const char* op = "int4_unpack";
  check_cpu(w_packed, op, "w_packed");
  check_int4_unpack(w_packed, in_features, group_size, op);
  const cpu::Int4Weight w = weight_view(w_packed, op, in_features, "in_features");
  const at::TensorOptions options = w_packed.options();
  at::Tensor q = at::empty({w.n, w.k}, options.dtype(at::kChar));
  at::Tensor scales = at::empty({w.n, w.groups()}, options.dtype(at::kFloat));
  at::Tensor zero_points = at::zeros({w.n, w.groups()}, options.dtype(at::kChar));
  cpu::int4_unpack(w, q.data_ptr<int8_t>(), scales.data_ptr<float>(), zero_points.data_ptr<int8_t>());
  return {q, scales, zero_points};
}

// Runs `body(block_begin, block_end)` over the weight's row blocks; a small problem (below ~1M
// multiply-adds, where waking the other threads costs more than it saves) on the calling thread.
template <typename Body>
void run_blocks(const cpu::Int4Weight& w, int64_t m, const Body& body) {
  if (m == 0) return;
  const int64_t work = m * w.n * w.k;
  const int64_t grain = work < (int64_t{1} << 20) ? w.blocks() : 1;
  at::parallel_for(0, w.blocks(), grain, body);
}

at::Tensor int4_linear_cpu(const at::Tensor& x, const at::Tensor& w_packed, const std::optional<at::Tensor>& bias,
                           c10::string_view activation) {
  constexpr const char* op = "int4_linear";
  check_cpu(x, op, "x");
  check_cpu(w_packed, op, "w_packed");
  check_int4_linear(x, w_packed, bias, activation, op);
  const std::string act(activation);
  const bool bf16 = act == "bf16";
  const cpu::Int4Weight w = weight_view(w_packed, op, x.size(1), "x");
  const int64_t m = x.size(0), k = w.k, groups = w.groups();
  at::Tensor bias_holder;
  const float* bias_ptr = nullptr;
  if (bias.has_value()) {
    check_cpu(*bias, op, "bias");
    bias_holder = bias->contiguous();
    bias_ptr = bias_holder.data_ptr<float>();
  }
  const at::Tensor xc = x.contiguous();
  if (act == "int8") {
    at::Tensor q = at::empty({m, k}, x.options().dtype(at::kChar));
    at::Tensor x_scale = at::empty({m}, x.options());
    at::Tensor sums = at::empty({m, groups}, x.options().dtype(at::kInt));
    const float* xp = xc.data_ptr<float>();
    int8_t* qp = q.data_ptr<int8_t>();
    float* sp = x_scale.data_ptr<float>();
    int32_t* gp = sums.data_ptr<int32_t>();
    const int64_t grain = std::max<int64_t>(1, 16384 / k);
    at::parallel_for(0, m, grain, [&](int64_t begin, int64_t end) {
      cpu::quantize_rows(xp, m, k, begin, end, -127, 127, qp, sp);
      cpu::int4_group_sums(qp, k, w.group_size, begin, end, gp);
    });
    at::Tensor out = at::empty({m, w.n}, x.options());
    cpu::Int4W4a8Args args;
    args.w = w;
    args.xq = qp;
    args.x_scale = sp;
    args.x_group_sum = gp;
    args.m = m;
    args.bias = bias_ptr;
    args.out = out.data_ptr<float>();
    run_blocks(w, m, [&](int64_t begin, int64_t end) { cpu::int4_w4a8_run(args, begin, end); });
    return out;
  }
  // bf16 x: widened exactly to fp32 for the fp32 kernel, the output rounded to bf16 (nearest even).
  // On the Xeons measured (benchmarks/bench_int4.py) the fp32 FMA kernel with the 16-entry vpermps
  // decode beat a vdpbf16ps kernel on bf16 weight pairs decoded with vpermw by 20-25% at M = 1..64;
  // from 16 rows up, a CPU with AMX runs bf16 x on the tiles instead (the kernel reads x_bf16).
  const at::Tensor xf = bf16 ? xc.to(at::kFloat) : xc;
  at::Tensor sums;
  if (w.asymmetric) {
    sums = at::empty({m, groups}, x.options().dtype(at::kFloat));
    cpu::int4_group_sums_float(xf.data_ptr<float>(), k, w.group_size, 0, m, sums.data_ptr<float>());
  }
  at::Tensor out = at::empty({m, w.n}, x.options().dtype(at::kFloat));
  cpu::Int4FloatArgs args;
  args.w = w;
  args.x = xf.data_ptr<float>();
  if (bf16) args.x_bf16 = reinterpret_cast<const uint16_t*>(xc.data_ptr<at::BFloat16>());
  args.x_group_sum = sums.defined() ? sums.data_ptr<float>() : nullptr;
  args.m = m;
  args.bias = bias_ptr;
  args.out = out.data_ptr<float>();
  run_blocks(w, m, [&](int64_t begin, int64_t end) { cpu::int4_f32_run(args, begin, end); });
  return bf16 ? out.to(at::kBFloat16) : out;
}

}  // namespace
}  // namespace ck::ops

TORCH_LIBRARY_IMPL(compress_kernels, CPU, m) {
  m.impl("int4_pack", &ck::ops::int4_pack_cpu);
  m.impl("int4_unpack", &ck::ops::int4_unpack_cpu);
  m.impl("int4_linear", &ck::ops::int4_linear_cpu);
}
