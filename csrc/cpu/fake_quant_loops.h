// Included by fake_quant.cpp, fake_quant_avx2.cpp and fake_quant_avx512vnni.cpp only (the vector
// tiers after their `#pragma GCC target`).
// The loops of the fake-quant kernels over the work units of fake_quant.h's FqPlan, written once over
// the element operations V of one tier (1 element of the portable kernels, 8 fp32 lanes of AVX2, 16 of
// AVX-512), so that every tier walks the units in the same order and accumulates the LSQ partial sums
// the same way, which is what makes them equal bit for bit: a by-spans unit into 16 fp64 lanes (element
// k of the unit into lane k % 16), the lanes then added in order 0..15; a by-rows unit into its
// per-position sums, row after row. Everything here has internal linkage, so one tier's instantiation
// can never stand in for another's at link time.
//
// V provides (a step covers n <= kWidth elements from element index i; a step of fewer than kWidth
// elements is the tail of a span or row, whose missing lanes are neither stored nor add anything but
// +0.0, which leaves every sum as it is):
//   kWidth                     elements per step
//   Lanes                      qparams as the step uses them: broadcast(params, channel) for a channel,
//                              positions(params, pos, n) for positions pos..pos+n-1
//   forward_step<D>(args, k, i, n)           y of n elements: quantize, zero the dropped ones, store
//   Sums                                     a step's LSQ contributions, zero where not kept
//   backward_step<D>(args, k, i, n, sums)    grad_x of n elements, and their Sums when sums is true
//   SpanSums                   the 16 fp64 lanes of a by-spans unit, zero when made: add(offset, c) adds
//                              the step at unit offset `offset` (a multiple of kWidth), store(s, z)
//                              writes lanes 0..15 out
//   add_to_positions(ps, pz, p, n, c)        ps[p + t] += c's scale sum of element t, pz likewise
#pragma once

#include <algorithm>
#include <cstdint>

#include "fake_quant.h"

namespace ck::cpu {
namespace {

template <class V, FqDtype D>
void forward_units(const FqArgs& a, int64_t begin, int64_t end) {
  const FqPlan& plan = a.plan;
  if (plan.by_spans) {
    for (int64_t u = begin; u < end; ++u) {
      const FqPlan::SpanUnit unit = plan.span_unit(a.layout, u);
      const typename V::Lanes k = V::broadcast(a.params, unit.channel);
      for (int64_t i = unit.begin; i < unit.end; i += V::kWidth) {
        V::template forward_step<D>(a, k, i, std::min<int64_t>(V::kWidth, unit.end - i));
      }
    }
    return;
  }
  for (int64_t u = begin; u < end; ++u) {
    const FqPlan::RowUnit unit = plan.row_unit(u);
    for (int64_t r = unit.row_begin; r < unit.row_end; ++r) {
      for (int64_t p = unit.pos_begin; p < unit.pos_end; p += V::kWidth) {
        const int64_t n = std::min<int64_t>(V::kWidth, unit.pos_end - p);
        V::template forward_step<D>(a, V::positions(a.params, p, n), r * plan.row_len + p, n);
      }
    }
  }
}

template <class V, FqDtype D>
void backward_units(const FqArgs& a, int64_t begin, int64_t end) {
  const FqPlan& plan = a.plan;
  const bool sums = a.partial_scale != nullptr;
  if (plan.by_spans) {
    for (int64_t u = begin; u < end; ++u) {
      const FqPlan::SpanUnit unit = plan.span_unit(a.layout, u);
      const typename V::Lanes k = V::broadcast(a.params, unit.channel);
      typename V::SpanSums lanes;
      for (int64_t i = unit.begin; i < unit.end; i += V::kWidth) {
        const typename V::Sums c =
            V::template backward_step<D>(a, k, i, std::min<int64_t>(V::kWidth, unit.end - i), sums);
        if (sums) lanes.add(i - unit.begin, c);
      }
      if (sums) {
        alignas(64) double ls[16], lz[16];
        lanes.store(ls, lz);
        double ts = 0, tz = 0;
        for (int lane = 0; lane < 16; ++lane) {
          ts += ls[lane];
          tz += lz[lane];
        }
        a.partial_scale[u] = ts;
        a.partial_zero_point[u] = tz;
      }
    }
    return;
  }
  for (int64_t u = begin; u < end; ++u) {
    const FqPlan::RowUnit unit = plan.row_unit(u);
    const int64_t p0 = unit.pos_begin, p1 = unit.pos_end;
    double* ps = sums ? a.partial_scale + unit.group * plan.row_len : nullptr;
    double* pz = sums ? a.partial_zero_point + unit.group * plan.row_len : nullptr;
    if (sums) {
      std::fill(ps + p0, ps + p1, 0.0);
      std::fill(pz + p0, pz + p1, 0.0);
    }
    // rows outer (memory order), per-position sums accumulated over the rows in row order, as the
    // portable loop adds them
    for (int64_t r = unit.row_begin; r < unit.row_end; ++r) {
      for (int64_t p = p0; p < p1; p += V::kWidth) {
        const int64_t n = std::min<int64_t>(V::kWidth, p1 - p);
        const typename V::Sums c =
            V::template backward_step<D>(a, V::positions(a.params, p, n), r * plan.row_len + p, n, sums);
        if (sums) V::add_to_positions(ps, pz, p, n, c);
      }
    }
  }
}

// The kernels of a vector tier: fp32, bf16 and fp16 on V; float64 on the portable kernels.
template <class V, bool kBackward, FqDtype D>
void vector_tier_run(const FqArgs& a, int64_t begin, int64_t end) {
  if constexpr (kBackward) {
    backward_units<V, D>(a, begin, end);
  } else {
    forward_units<V, D>(a, begin, end);
  }
}

template <class V, bool kBackward>
void vector_tier_kernel(const FqArgs& a, int64_t begin, int64_t end) {
  switch (a.dtype) {
    case FqDtype::kFloat32:
      return vector_tier_run<V, kBackward, FqDtype::kFloat32>(a, begin, end);
    case FqDtype::kBFloat16:
      return vector_tier_run<V, kBackward, FqDtype::kBFloat16>(a, begin, end);
    case FqDtype::kFloat16:
      return vector_tier_run<V, kBackward, FqDtype::kFloat16>(a, begin, end);
    default:
      return kBackward ? fake_quant_backward_portable(a, begin, end) : fake_quant_forward_portable(a, begin, end);
  }
}

template <class V>
constexpr FakeQuantKernels vector_tier_kernels() {
  return {&vector_tier_kernel<V, false>, &vector_tier_kernel<V, true>};
}

}  // namespace
}  // namespace ck::cpu
