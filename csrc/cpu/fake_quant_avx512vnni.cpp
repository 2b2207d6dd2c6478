// AVX-512 fake-quant kernels: fp32, bf16 and fp16 storage, all arithmetic in fp32 registers (bf16 /
// fp16 are widened on load and rounded to nearest even on store, in registers). Bit-identical to
// fake_quant.cpp: the same operation order per element, the same 16-lane fp64 accumulation of the
// LSQ partial sums (lane = element offset % 16 within a unit), the same bf16 / fp16 rounding
// (including canonical NaNs). float64 inputs use the portable path. The loops over the work units are
// fake_quant_loops.h's, shared with the portable and AVX2 kernels; this file holds the 16-lane operations.
#include <algorithm>

#include "fake_quant.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq")
// GCC 12 reports its own intrinsics' _mm512_undefined_* placeholders as uninitialized.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#include <immintrin.h>

#include "avx512_lane_mask-inl.h"
#include "bf16_avx512-inl.h"
#include "fake_quant_loops.h"

namespace ck::cpu {
namespace {

template <FqDtype D>
inline __m512 load(const void* base, int64_t i, __mmask16 m);
template <>
inline __m512 load<FqDtype::kFloat32>(const void* base, int64_t i, __mmask16 m) {
  return _mm512_maskz_loadu_ps(m, static_cast<const float*>(base) + i);
}
template <>
inline __m512 load<FqDtype::kBFloat16>(const void* base, int64_t i, __mmask16 m) {
  const __m256i h = _mm256_maskz_loadu_epi16(m, static_cast<const uint16_t*>(base) + i);
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}
template <>
inline __m512 load<FqDtype::kFloat16>(const void* base, int64_t i, __mmask16 m) {
  return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, static_cast<const uint16_t*>(base) + i));
}

template <FqDtype D>
inline void store(void* base, int64_t i, __m512 v, __mmask16 m);
template <>
inline void store<FqDtype::kFloat32>(void* base, int64_t i, __m512 v, __mmask16 m) {
  _mm512_mask_storeu_ps(static_cast<float*>(base) + i, m, v);
}
// float_to_bf16 on 16 lanes.
template <>
inline void store<FqDtype::kBFloat16>(void* base, int64_t i, __m512 v, __mmask16 m) {
  store_bf16_lanes(static_cast<uint16_t*>(base) + i, v, m);
}
// vcvtps2ph rounds to nearest even like float_to_fp16; NaNs are made canonical (sign | 0x7E00) as
// float_to_fp16 does, instead of keeping the payload.
template <>
inline void store<FqDtype::kFloat16>(void* base, int64_t i, __m512 v, __mmask16 m) {
  __m256i h = _mm512_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  const __m512i sign = _mm512_and_si512(_mm512_srli_epi32(_mm512_castps_si512(v), 16), _mm512_set1_epi32(0x8000));
  const __m256i nan_bits = _mm512_cvtepi32_epi16(_mm512_or_si512(sign, _mm512_set1_epi32(0x7E00)));
  h = _mm256_mask_mov_epi16(h, _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q), nan_bits);
  _mm256_mask_storeu_epi16(static_cast<uint16_t*>(base) + i, m, h);
}

inline __mmask16 kept_lanes(const uint8_t* mask, int64_t i, __mmask16 m) {
  if (mask == nullptr) return m;
  const __m128i b = _mm_maskz_loadu_epi8(m, mask + i);
  return _mm_test_epi8_mask(b, b) & m;
}

struct Lanes {
  __m512 s, inv, z, lo, hi, lo_minus_z, hi_minus_z;
};

inline Lanes broadcast(const FqParams& p, int64_t c) {
  const float z = p.zero_point[c];
  return {_mm512_set1_ps(p.scale[c]), _mm512_set1_ps(p.inv_scale[c]), _mm512_set1_ps(z),         _mm512_set1_ps(p.qmin),
          _mm512_set1_ps(p.qmax),     _mm512_set1_ps(p.qmin - z),     _mm512_set1_ps(p.qmax - z)};
}

inline Lanes gather(const FqParams& p, int64_t pos, __mmask16 m) {
  Lanes k;
  k.s = _mm512_maskz_loadu_ps(m, p.scale + pos);
  k.inv = _mm512_maskz_loadu_ps(m, p.inv_scale + pos);
  k.z = _mm512_maskz_loadu_ps(m, p.zero_point + pos);
  k.lo = _mm512_set1_ps(p.qmin);
  k.hi = _mm512_set1_ps(p.qmax);
  k.lo_minus_z = _mm512_sub_ps(k.lo, k.z);
  k.hi_minus_z = _mm512_sub_ps(k.hi, k.z);
  return k;
}

struct Element {
  __m512 v, r, y;
  __mmask16 inside, below;
};

// The order of fake_quant.cpp's quantize(): max(lo, q) keeps a NaN q, like `q < lo ? lo : q`.
inline Element quantize(__m512 x, const Lanes& k) {
  Element e;
  e.v = _mm512_mul_ps(x, k.inv);
  e.r = _mm512_roundscale_ps(e.v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  const __m512 q = _mm512_add_ps(e.r, k.z);
  const __m512 c = _mm512_min_ps(k.hi, _mm512_max_ps(k.lo, q));
  e.y = _mm512_mul_ps(_mm512_sub_ps(c, k.z), k.s);
  e.inside = _mm512_cmp_ps_mask(q, k.lo, _CMP_GE_OQ) & _mm512_cmp_ps_mask(q, k.hi, _CMP_LE_OQ);
  e.below = _mm512_cmp_ps_mask(q, k.lo, _CMP_LT_OQ);
  return e;
}

inline __m512 scale_derivative(const Element& e, const Lanes& k) {
  __m512 d = _mm512_mask_mov_ps(k.hi_minus_z, e.below, k.lo_minus_z);
  return _mm512_mask_mov_ps(d, e.inside, _mm512_sub_ps(e.r, e.v));
}

inline __m512d low_pd(__m512 v) { return _mm512_cvtps_pd(_mm512_castps512_ps256(v)); }
inline __m512d high_pd(__m512 v) { return _mm512_cvtps_pd(_mm512_extractf32x8_ps(v, 1)); }

// The 16-lane operations of fake_quant_loops.h: tails are masked loads and stores.
struct Avx512Ops {
  static constexpr int64_t kWidth = 16;
  using Lanes = ck::cpu::Lanes;
  static Lanes broadcast(const FqParams& p, int64_t c) { return ck::cpu::broadcast(p, c); }
  static Lanes positions(const FqParams& p, int64_t pos, int64_t n) { return gather(p, pos, lane_mask(n)); }

  template <FqDtype D>
  static void forward_step(const FqArgs& a, const Lanes& k, int64_t i, int64_t n) {
    const __mmask16 m = lane_mask(n);
    const Element e = quantize(load<D>(a.x, i, m), k);
    store<D>(a.out, i, _mm512_maskz_mov_ps(kept_lanes(a.mask, i, m), e.y), m);
  }

  struct Sums {
    __m512 s, z;
  };
  template <FqDtype D>
  static Sums backward_step(const FqArgs& a, const Lanes& k, int64_t i, int64_t n, bool sums) {
    const __mmask16 m = lane_mask(n);
    const __mmask16 kept = kept_lanes(a.mask, i, m);
    const Element e = quantize(load<D>(a.x, i, m), k);
    const __m512 gy = load<D>(a.grad_y, i, m);
    store<D>(a.out, i, _mm512_maskz_mov_ps(kept & e.inside, gy), m);
    if (!sums) return {_mm512_setzero_ps(), _mm512_setzero_ps()};
    return {_mm512_maskz_mul_ps(kept, scale_derivative(e, k), gy),
            _mm512_maskz_mov_ps(kept & static_cast<__mmask16>(~e.inside), gy)};
  }

  // fp64 lanes 0-7 and 8-15 (every step starts at a multiple of 16).
  struct SpanSums {
    __m512d s_lo, s_hi, z_lo, z_hi;
    // user-provided: an implicit constructor would not be compiled for this file's target
    SpanSums()
        : s_lo(_mm512_setzero_pd()), s_hi(_mm512_setzero_pd()), z_lo(_mm512_setzero_pd()), z_hi(_mm512_setzero_pd()) {}
    void add(int64_t /*offset*/, const Sums& c) {
      s_lo = _mm512_add_pd(s_lo, low_pd(c.s));
      s_hi = _mm512_add_pd(s_hi, high_pd(c.s));
      z_lo = _mm512_add_pd(z_lo, low_pd(c.z));
      z_hi = _mm512_add_pd(z_hi, high_pd(c.z));
    }
    void store(double* ls, double* lz) const {
      _mm512_store_pd(ls, s_lo);
      _mm512_store_pd(ls + 8, s_hi);
      _mm512_store_pd(lz, z_lo);
      _mm512_store_pd(lz + 8, z_hi);
    }
  };

  static void add_to_positions(double* ps, double* pz, int64_t p, int64_t n, const Sums& c) {
    const __mmask16 m = lane_mask(n);
    const __mmask8 m_lo = static_cast<__mmask8>(m), m_hi = static_cast<__mmask8>(m >> 8);
    _mm512_mask_storeu_pd(ps + p, m_lo, _mm512_add_pd(_mm512_maskz_loadu_pd(m_lo, ps + p), low_pd(c.s)));
    _mm512_mask_storeu_pd(ps + p + 8, m_hi, _mm512_add_pd(_mm512_maskz_loadu_pd(m_hi, ps + p + 8), high_pd(c.s)));
    _mm512_mask_storeu_pd(pz + p, m_lo, _mm512_add_pd(_mm512_maskz_loadu_pd(m_lo, pz + p), low_pd(c.z)));
    _mm512_mask_storeu_pd(pz + p + 8, m_hi, _mm512_add_pd(_mm512_maskz_loadu_pd(m_hi, pz + p + 8), high_pd(c.z)));
  }
};

}  // namespace

const FakeQuantKernels fake_quant_kernels_avx512vnni = vector_tier_kernels<Avx512Ops>();

}  // namespace ck::cpu
#else
namespace ck::cpu {
const FakeQuantKernels fake_quant_kernels_avx512vnni = {&fake_quant_forward_portable, &fake_quant_backward_portable};
}  // namespace ck::cpu
#endif
