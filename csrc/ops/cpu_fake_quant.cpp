// CPU glue of the fused fake-quant ops: argument checks, qparam preparation, threading, the fixed-order
// reduction of the LSQ partial sums and the EMA min/max observer. Kernels: csrc/cpu/fake_quant*.cpp.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <cfloat>
#include <cmath>
#include <optional>
#include <tuple>
#include <vector>

#include "../cpu/fake_quant.h"
#include "checks.h"
#include "fake_quant_checks.h"

namespace ck::ops {
namespace {

struct Prepared {
  at::Tensor x;  // contiguous
  at::Tensor mask;  // contiguous bool, or undefined
  std::vector<float> scale, inv_scale, zero_point;  // per channel / position, plan.param_len entries
  std::vector<double> scale64, inv_scale64, zero_point64;
  std::vector<double> channel_scale;  // per channel, fp64 (the value the kernel uses, widened)
  int64_t channels = 1;
  cpu::FqArgs args;
};

// x's dtype (checked by check_fake_quant_x) for the kernels.
cpu::FqDtype fq_dtype(const at::Tensor& x) {
  switch (x.scalar_type()) {
    case at::kBFloat16:
      return cpu::FqDtype::kBFloat16;
    case at::kHalf:
      return cpu::FqDtype::kFloat16;
    case at::kDouble:
      return cpu::FqDtype::kFloat64;
    default:
      return cpu::FqDtype::kFloat32;
  }
}

cpu::FqLayout layout_of(const at::Tensor& x, int64_t axis) {
  cpu::FqLayout l;
  if (axis < 0 || x.size(axis) == 1) {
    l.inner = x.numel();
    return l;
  }
  for (int64_t d = 0; d < axis; ++d) l.outer *= x.size(d);
  l.channels = x.size(axis);
  for (int64_t d = axis + 1; d < x.dim(); ++d) l.inner *= x.size(d);
  return l;
}

// A mask checked by check_fake_quant_mask as contiguous bool; a non-bool one must hold 0 / 1.
at::Tensor prepare_mask(const std::optional<at::Tensor>& mask, const char* op) {
  if (!mask.has_value()) return at::Tensor();
  const at::Tensor& m = *mask;
  if (m.scalar_type() == at::kBool) return m.contiguous();
  const at::Tensor kept = m.ne(0);
  TORCH_CHECK(at::logical_or(m.eq(0), m.eq(1)).all().item<bool>(), op, ": a non-bool mask must hold only 0 and 1");
  return kept.contiguous();
}

// Checks every argument and fills the kernel arguments (except x / grad / out pointers' buffers).
Prepared prepare(const char* op, const at::Tensor& x, const at::Tensor& scale, const at::Tensor& zero_point,
                 int64_t qmin, int64_t qmax, std::optional<int64_t> axis_opt, const std::optional<at::Tensor>& mask) {
  const int64_t axis = check_fake_quant(x, scale, zero_point, qmin, qmax, axis_opt, mask, op);
  const cpu::FqDtype dtype = fq_dtype(x);
  const int64_t channels = axis < 0 ? 1 : x.size(axis);

  Prepared p;
  p.x = x.contiguous();
  p.mask = prepare_mask(mask, op);
  p.channels = channels;
  const bool wide = dtype == cpu::FqDtype::kFloat64;
  const at::Tensor s64 = scale.detach().to(at::kCPU, at::kDouble).contiguous().view({-1});
  const at::Tensor z64 = zero_point.detach().to(at::kCPU, at::kDouble).contiguous().view({-1});
  const double* sp = s64.data_ptr<double>();
  const double* zp = z64.data_ptr<double>();
  std::vector<float> cs(channels), ci(channels), cz(channels);
  std::vector<double> cs64(channels), ci64(channels), cz64(channels);
  p.channel_scale.resize(channels);
  for (int64_t c = 0; c < channels; ++c) {
    const double s = sp[c];
    TORCH_CHECK(std::isfinite(s) && s > 0, op, ": scale must be finite and > 0, got ", s, " at channel ", c);
    const float sf = static_cast<float>(s);
    const float inv = 1.0f / sf;
    TORCH_CHECK(wide || (std::isfinite(sf) && sf > 0 && std::isfinite(inv)), op,
                ": scale must be representable in fp32 with a finite reciprocal, got ", s, " at channel ", c);
    const double z = std::nearbyint(zp[c]);  // floating (learnable) zero points round half to even
    TORCH_CHECK(z >= static_cast<double>(qmin) && z <= static_cast<double>(qmax), op,
                ": zero_point must lie in [qmin, qmax] = [", qmin, ", ", qmax, "], got ", zp[c], " at channel ", c);
    cs[c] = sf, ci[c] = inv, cz[c] = static_cast<float>(z);
    cs64[c] = s, ci64[c] = 1.0 / s, cz64[c] = z;
    p.channel_scale[c] = wide ? s : static_cast<double>(sf);
  }

  cpu::FqArgs& a = p.args;
  a.dtype = dtype;
  a.layout = layout_of(p.x, axis);
  a.plan = cpu::fake_quant_plan(a.layout);
  // One entry per channel (by spans) or per position of a row (by rows: channel = position / inner).
  const int64_t n = std::max<int64_t>(a.plan.param_len, 1);
  const int64_t per = a.plan.by_spans ? 1 : a.layout.inner;
  const bool per_tensor_layout = a.layout.channels == 1;
  for (auto* v : {&p.scale, &p.inv_scale, &p.zero_point}) v->resize(n);
  for (auto* v : {&p.scale64, &p.inv_scale64, &p.zero_point64}) v->resize(n);
  for (int64_t i = 0; i < n; ++i) {
    const int64_t c = per_tensor_layout ? 0 : i / per;
    p.scale[i] = cs[c], p.inv_scale[i] = ci[c], p.zero_point[i] = cz[c];
    p.scale64[i] = cs64[c], p.inv_scale64[i] = ci64[c], p.zero_point64[i] = cz64[c];
  }
  a.params.scale = p.scale.data();
  a.params.inv_scale = p.inv_scale.data();
  a.params.zero_point = p.zero_point.data();
  a.params.scale64 = p.scale64.data();
  a.params.inv_scale64 = p.inv_scale64.data();
  a.params.zero_point64 = p.zero_point64.data();
  a.params.qmin = static_cast<float>(qmin);
  a.params.qmax = static_cast<float>(qmax);
  a.x = p.x.data_ptr();
  a.mask = p.mask.defined() ? reinterpret_cast<const uint8_t*>(p.mask.data_ptr<bool>()) : nullptr;
  return p;
}

// Units per at::parallel_for task: ~64K elements, so small tensors stay on one thread.
int64_t grain_units(const cpu::FqArgs& a) {
  const int64_t numel = a.layout.outer * a.layout.channels * a.layout.inner;
  const int64_t per_unit = std::max<int64_t>(1, numel / std::max<int64_t>(a.plan.units, 1));
  return std::max<int64_t>(1, 65536 / per_unit);
}

at::Tensor run_forward(Prepared& p) {
  at::Tensor y = at::empty_like(p.x);
  p.args.out = y.data_ptr();
  const cpu::FqArgs& a = p.args;
  at::parallel_for(0, a.plan.units, grain_units(a),
                   [&](int64_t begin, int64_t end) { cpu::fake_quant_forward(a, begin, end); });
  return y;
}

at::Tensor fake_quant_cpu(const at::Tensor& x, const at::Tensor& scale, const at::Tensor& zero_point, int64_t qmin,
                          int64_t qmax, std::optional<int64_t> axis, const std::optional<at::Tensor>& mask,
                          std::optional<double> grad_factor) {
  constexpr const char* op = "fake_quant";
  check_grad_factor(grad_factor, op);
  Prepared p = prepare(op, x, scale, zero_point, qmin, qmax, axis, mask);
  return run_forward(p).view(x.sizes());
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> fake_quant_backward_cpu(
    const at::Tensor& grad, const at::Tensor& x, const at::Tensor& scale, const at::Tensor& zero_point, int64_t qmin,
    int64_t qmax, std::optional<int64_t> axis, const std::optional<at::Tensor>& mask, std::optional<double> grad_factor,
    bool scale_grad, bool zero_point_grad) {
  constexpr const char* op = "fake_quant_backward";
  check_grad_factor(grad_factor, op);
  Prepared p = prepare(op, x, scale, zero_point, qmin, qmax, axis, mask);
  check_fake_quant_grad(grad, x, op);
  const at::Tensor g = grad.contiguous();
  at::Tensor grad_x = at::empty_like(p.x);
  cpu::FqArgs& a = p.args;
  a.grad_y = g.data_ptr();
  a.out = grad_x.data_ptr();
  const bool sums = scale_grad || zero_point_grad;
  at::Tensor partial;
  if (sums && a.plan.units > 0) {
    partial = at::empty({2, std::max<int64_t>(a.plan.partial_len, 1)}, x.options().dtype(at::kDouble));
    a.partial_scale = partial.data_ptr<double>();
    a.partial_zero_point = a.partial_scale + partial.size(1);
  }
  at::parallel_for(0, a.plan.units, grain_units(a),
                   [&](int64_t begin, int64_t end) { cpu::fake_quant_backward(a, begin, end); });

  const at::ScalarType zp_grad_dtype =
      at::isFloatingType(zero_point.scalar_type()) ? zero_point.scalar_type() : at::kFloat;
  at::Tensor grad_scale = at::zeros(scale.sizes(), scale.options().dtype(scale.scalar_type()));
  at::Tensor grad_zero_point = at::zeros(zero_point.sizes(), zero_point.options().dtype(zp_grad_dtype));
  if (sums && a.plan.units > 0) {
    const int64_t channels = p.channels;
    std::vector<double> sum_s(channels), sum_z(channels);
    const cpu::FqLayout& l = a.layout;
    // A channel-1 per-channel call runs with the per-tensor layout; its sums are channel 0's.
    std::vector<double> ls(l.channels), lz(l.channels);
    cpu::fake_quant_reduce_partials(l, a.plan, a.partial_scale, ls.data());
    cpu::fake_quant_reduce_partials(l, a.plan, a.partial_zero_point, lz.data());
    for (int64_t c = 0; c < channels; ++c)
      sum_s[c] = ls[l.channels == 1 ? 0 : c], sum_z[c] = lz[l.channels == 1 ? 0 : c];
    // LSQ gradient scale g = 1 / sqrt(n * Qp): n = elements sharing the scale (numel per tensor,
    // numel / channels per channel), Qp = qmax (qmax - qmin when qmax <= 0).
    const double n = std::max<double>(1.0, static_cast<double>(x.numel()) / static_cast<double>(channels));
    const double qp = qmax > 0 ? static_cast<double>(qmax) : static_cast<double>(qmax - qmin);
    const double factor = grad_factor.has_value() ? *grad_factor : 1.0 / std::sqrt(n * qp);
    const at::Tensor gs = at::empty({channels}, x.options().dtype(at::kDouble));
    const at::Tensor gz = at::empty({channels}, x.options().dtype(at::kDouble));
    for (int64_t c = 0; c < channels; ++c) {
      gs.data_ptr<double>()[c] = factor * sum_s[c];
      gz.data_ptr<double>()[c] = -p.channel_scale[c] * factor * sum_z[c];
    }
    if (scale_grad) grad_scale = gs.to(scale.scalar_type()).view(scale.sizes());
    if (zero_point_grad) grad_zero_point = gz.to(zp_grad_dtype).view(zero_point.sizes());
  }
  return {grad_x.view(x.sizes()), grad_scale, grad_zero_point};
}

// EMA min/max observer + fake quant. running_min / running_max are updated in place:
// uninitialized entries (running_min = +inf or running_max = -inf, their initial values) take the
// batch's min / max, others r += momentum * (batch - r) in fp32. qparams from the updated range, as
// torch.ao.quantization's MinMaxObserver computes them in fp32 (the range is widened to include 0):
//   asymmetric: scale = max((max - min) / (qmax - qmin), eps), zero_point = clamp(qmin - round(min / scale), qmin,
//   qmax) symmetric:  scale = max(max(-min, max) / ((qmax - qmin) / 2), eps), zero_point = 0 when qmin < 0,
//               else (qmin + qmax + 1) / 2 (128 for [0, 255])
// with eps = FLT_EPSILON and round half to even.
std::tuple<at::Tensor, at::Tensor, at::Tensor> fake_quant_observe_cpu(const at::Tensor& x, at::Tensor& running_min,
                                                                      at::Tensor& running_max, double momentum,
                                                                      int64_t qmin, int64_t qmax, bool symmetric,
                                                                      std::optional<int64_t> axis_opt,
                                                                      const std::optional<at::Tensor>& mask) {
  constexpr const char* op = "fake_quant_observe";
  const int64_t channels =
      check_fake_quant_observe(x, running_min, running_max, momentum, qmin, qmax, axis_opt, mask, op).expect_int();
  const int64_t axis = fake_quant_axis(x, axis_opt, op);
  at::Tensor batch_min, batch_max;
  if (axis < 0) {
    std::tie(batch_min, batch_max) = at::aminmax(x);
  } else {
    const cpu::FqLayout l = layout_of(x, axis);
    const at::Tensor x3 = x.contiguous().view({l.outer, channels, -1});
    // amin and amax separately: ATen's aminmax along a dimension is ~15x slower than either one.
    const at::Tensor rows = x3.transpose(0, 1).reshape({channels, -1});
    batch_min = at::amin(rows, 1);
    batch_max = at::amax(rows, 1);
  }
  const at::Tensor bmin = batch_min.to(at::kFloat).contiguous().view({-1});
  const at::Tensor bmax = batch_max.to(at::kFloat).contiguous().view({-1});
  float* rmin = running_min.data_ptr<float>();
  float* rmax = running_max.data_ptr<float>();
  const float m = static_cast<float>(momentum);
  at::Tensor scale = at::empty({channels}, x.options().dtype(at::kFloat));
  at::Tensor zero_point = at::empty({channels}, x.options().dtype(at::kInt));
  const float levels = static_cast<float>(qmax - qmin);
  for (int64_t c = 0; c < channels; ++c) {
    const float lo = bmin.data_ptr<float>()[c], hi = bmax.data_ptr<float>()[c];
    TORCH_CHECK(std::isfinite(lo) && std::isfinite(hi), op, ": x must be finite to be observed, got min ", lo,
                " and max ", hi, " at channel ", c);
    if (rmin[c] == INFINITY || rmax[c] == -INFINITY) {
      rmin[c] = lo, rmax[c] = hi;
    } else {
      rmin[c] = rmin[c] + m * (lo - rmin[c]);
      rmax[c] = rmax[c] + m * (hi - rmax[c]);
    }
    const float min_neg = std::min(rmin[c], 0.0f), max_pos = std::max(rmax[c], 0.0f);
    float s;
    int32_t z;
    if (symmetric) {
      s = std::max(std::max(-min_neg, max_pos) / (levels / 2.0f), FLT_EPSILON);
      z = qmin < 0 ? 0 : static_cast<int32_t>((qmin + qmax + 1) / 2);
    } else {
      s = std::max((max_pos - min_neg) / levels, FLT_EPSILON);
      const float zf = static_cast<float>(qmin) - std::nearbyint(min_neg / s);
      z = static_cast<int32_t>(std::min<float>(std::max<float>(zf, qmin), qmax));
    }
    scale.data_ptr<float>()[c] = s;
    zero_point.data_ptr<int32_t>()[c] = z;
  }
  Prepared p = prepare(op, x, scale, zero_point, qmin, qmax, axis_opt, mask);
  at::Tensor y = run_forward(p).view(x.sizes());
  const auto shape = running_min.sizes();
  return {y, scale.view(shape), zero_point.view(shape)};
}

}  // namespace
}  // namespace ck::ops

TORCH_LIBRARY_IMPL(compress_kernels, CPU, m) {
  m.impl("fake_quant", &ck::ops::fake_quant_cpu);
  m.impl("fake_quant_backward", &ck::ops::fake_quant_backward_cpu);
  m.impl("fake_quant_observe", &ck::ops::fake_quant_observe_cpu);
}
