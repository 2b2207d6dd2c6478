// Portable fake-quant kernels, the work plan and the partial-sum reduction; see fake_quant.h for the
// exact semantics. The AVX-512 and AVX2 tiers (fake_quant_avx512vnni.cpp, fake_quant_avx2.cpp) must equal this one bit
// for bit, so the order of every floating-point operation here is part of the contract: in particular the LSQ partial
// sums of a by-spans unit are accumulated in 16 fp64 lanes (element k of the unit into lane k % 16) and the lanes are
// then added in order 0..15, which is what 16-wide SIMD does. The loops over the work units are
// fake_quant_loops.h's, shared with those tiers; this file holds the one-element operations.
#include "fake_quant.h"

#include <algorithm>
#include <cmath>

#include "dispatch.h"
#include "fake_quant_loops.h"

namespace ck::cpu {
namespace {

template <FqDtype D>
struct Storage;
template <>
struct Storage<FqDtype::kFloat32> {
  using type = float;
  using compute = float;
  static float load(float v) { return v; }
  static float store(float v) { return v; }
};
template <>
struct Storage<FqDtype::kFloat64> {
  using type = double;
  using compute = double;
  static double load(double v) { return v; }
  static double store(double v) { return v; }
};
template <>
struct Storage<FqDtype::kBFloat16> {
  using type = uint16_t;
  using compute = float;
  static float load(uint16_t v) { return bf16_to_float(v); }
  static uint16_t store(float v) { return float_to_bf16(v); }
};
template <>
struct Storage<FqDtype::kFloat16> {
  using type = uint16_t;
  using compute = float;
  static float load(uint16_t v) { return fp16_to_float(v); }
  static uint16_t store(float v) { return float_to_fp16(v); }
};

// qparams of one channel / position in the compute type.
template <class C>
struct Q {
  C s, inv, z, lo, hi, lo_minus_z, hi_minus_z;
};

template <class C>
Q<C> qparams_at(const FqParams& p, int64_t i);
template <>
Q<float> qparams_at<float>(const FqParams& p, int64_t i) {
  const float z = p.zero_point[i];
  return {p.scale[i], p.inv_scale[i], z, p.qmin, p.qmax, p.qmin - z, p.qmax - z};
}
template <>
Q<double> qparams_at<double>(const FqParams& p, int64_t i) {
  const double z = p.zero_point64[i];
  const double lo = p.qmin, hi = p.qmax;
  return {p.scale64[i], p.inv_scale64[i], z, lo, hi, lo - z, hi - z};
}

// The forward of one element, in the exact operation order of fake_quant.h.
template <class C>
struct Element {
  C v, r, q, y;
  bool inside, below;
};

template <class C>
inline Element<C> quantize(C x, const Q<C>& k) {
  Element<C> e;
  e.v = x * k.inv;
  e.r = std::nearbyint(e.v);
  e.q = e.r + k.z;
  C c = e.q < k.lo ? k.lo : e.q;  // NaN stays NaN (as max(lo, q) with the second operand kept)
  c = c > k.hi ? k.hi : c;
  e.y = (c - k.z) * k.s;
  e.inside = e.q >= k.lo && e.q <= k.hi;
  e.below = e.q < k.lo;
  return e;
}

// dy/ds of one element (before the gradient scale): qmax - z, replaced by qmin - z below the range,
// replaced by r - v inside it (a NaN q counts as above).
template <class C>
inline C scale_derivative(const Element<C>& e, const Q<C>& k) {
  C d = k.hi_minus_z;
  if (e.below) d = k.lo_minus_z;
  if (e.inside) d = e.r - e.v;
  return d;
}

// The one-element operations of fake_quant_loops.h, in the compute type of D.
template <FqDtype D>
struct ScalarOps {
  using S = Storage<D>;
  using T = typename S::type;
  using C = typename S::compute;
  static constexpr int64_t kWidth = 1;
  using Lanes = Q<C>;
  static Lanes broadcast(const FqParams& p, int64_t c) { return qparams_at<C>(p, c); }
  static Lanes positions(const FqParams& p, int64_t pos, int64_t /*n*/) { return qparams_at<C>(p, pos); }

  template <FqDtype>
  static void forward_step(const FqArgs& a, const Lanes& k, int64_t i, int64_t /*n*/) {
    const C out = quantize<C>(S::load(static_cast<const T*>(a.x)[i]), k).y;
    static_cast<T*>(a.out)[i] = S::store((a.mask == nullptr || a.mask[i]) ? out : C(0));
  }

  // The contributions of one element; a dropped element or, for z, one inside the range gives +0.0,
  // which leaves a sum that starts at +0.0 exactly as skipping it would.
  struct Sums {
    double s, z;
  };
  template <FqDtype>
  static Sums backward_step(const FqArgs& a, const Lanes& k, int64_t i, int64_t /*n*/, bool sums) {
    const bool kept = a.mask == nullptr || a.mask[i];
    const Element<C> e = quantize<C>(S::load(static_cast<const T*>(a.x)[i]), k);
    const C g = S::load(static_cast<const T*>(a.grad_y)[i]);
    static_cast<T*>(a.out)[i] = S::store(kept && e.inside ? g : C(0));
    if (!sums || !kept) return {0.0, 0.0};
    return {static_cast<double>(scale_derivative<C>(e, k) * g), e.inside ? 0.0 : static_cast<double>(g)};
  }

  struct SpanSums {
    double s[16] = {0}, z[16] = {0};
    void add(int64_t offset, const Sums& c) {
      s[offset & 15] += c.s;
      z[offset & 15] += c.z;
    }
    void store(double* ls, double* lz) const {
      std::copy(s, s + 16, ls);
      std::copy(z, z + 16, lz);
    }
  };

  static void add_to_positions(double* ps, double* pz, int64_t p, int64_t /*n*/, const Sums& c) {
    ps[p] += c.s;
    pz[p] += c.z;
  }
};

template <FqDtype D>
void forward_impl(const FqArgs& a, int64_t begin, int64_t end) {
  forward_units<ScalarOps<D>, D>(a, begin, end);
}

template <FqDtype D>
void backward_impl(const FqArgs& a, int64_t begin, int64_t end) {
  backward_units<ScalarOps<D>, D>(a, begin, end);
}

}  // namespace

FqPlan fake_quant_plan(const FqLayout& l) {
  FqPlan p;
  const int64_t numel = l.outer * l.channels * l.inner;
  if (numel == 0) return p;
  if (l.inner >= FqPlan::kMinSpan || (l.channels == 1 && l.outer == 1)) {
    p.by_spans = true;
    p.blocks_per_span = (l.inner + FqPlan::kBlock - 1) / FqPlan::kBlock;
    p.units = l.outer * l.channels * p.blocks_per_span;
    p.partial_len = p.units;
    p.param_len = l.channels;
    return p;
  }
  p.by_spans = false;
  p.rows = l.outer;
  p.row_len = l.channels * l.inner;
  p.column_chunks = (p.row_len + FqPlan::kColumnChunk - 1) / FqPlan::kColumnChunk;
  // Enough row groups for parallelism when rows are short, bounded so that the per-group partial
  // sums stay small (<= 2^20 positions in all).
  int64_t groups = std::min<int64_t>(p.rows / 16, (int64_t{1} << 20) / p.row_len);
  groups = std::max<int64_t>(1, std::min<int64_t>(groups, 64));
  p.rows_per_group = (p.rows + groups - 1) / groups;
  p.groups = (p.rows + p.rows_per_group - 1) / p.rows_per_group;
  p.units = p.groups * p.column_chunks;
  p.partial_len = p.groups * p.row_len;
  p.param_len = p.row_len;
  return p;
}

void fake_quant_reduce_partials(const FqLayout& l, const FqPlan& plan, const double* partial, double* out) {
  std::fill(out, out + l.channels, 0.0);
  if (plan.units == 0) return;
  if (plan.by_spans) {
    for (int64_t u = 0; u < plan.units; ++u) out[(u / plan.blocks_per_span) % l.channels] += partial[u];
    return;
  }
  for (int64_t p = 0; p < plan.row_len; ++p) {
    double s = 0;
    for (int64_t g = 0; g < plan.groups; ++g) s += partial[g * plan.row_len + p];
    out[p / l.inner] += s;
  }
}

void fake_quant_forward_portable(const FqArgs& a, int64_t begin, int64_t end) {
  switch (a.dtype) {
    case FqDtype::kFloat32:
      return forward_impl<FqDtype::kFloat32>(a, begin, end);
    case FqDtype::kBFloat16:
      return forward_impl<FqDtype::kBFloat16>(a, begin, end);
    case FqDtype::kFloat16:
      return forward_impl<FqDtype::kFloat16>(a, begin, end);
    case FqDtype::kFloat64:
      return forward_impl<FqDtype::kFloat64>(a, begin, end);
  }
}

void fake_quant_backward_portable(const FqArgs& a, int64_t begin, int64_t end) {
  switch (a.dtype) {
    case FqDtype::kFloat32:
      return backward_impl<FqDtype::kFloat32>(a, begin, end);
    case FqDtype::kBFloat16:
      return backward_impl<FqDtype::kBFloat16>(a, begin, end);
    case FqDtype::kFloat16:
      return backward_impl<FqDtype::kFloat16>(a, begin, end);
    case FqDtype::kFloat64:
      return backward_impl<FqDtype::kFloat64>(a, begin, end);
  }
}

void fake_quant_forward(const FqArgs& a, int64_t begin, int64_t end) {
  fake_quant_tiers.active().forward(a, begin, end);
}

void fake_quant_backward(const FqArgs& a, int64_t begin, int64_t end) {
  fake_quant_tiers.active().backward(a, begin, end);
}

const FakeQuantKernels fake_quant_kernels_portable = {&fake_quant_forward_portable, &fake_quant_backward_portable};

constexpr TierTable<FakeQuantKernels> fake_quant_tiers{fake_quant_kernels_portable,
                                                       {
                                                           {Tier::kAvx2, &fake_quant_kernels_avx2},
                                                           {Tier::kAvx512Vnni, &fake_quant_kernels_avx512vnni},
                                                       }};

}  // namespace ck::cpu
