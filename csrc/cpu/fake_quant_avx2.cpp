// AVX2 + FMA + F16C fake-quant kernels (CPUs without AVX-512: Intel Haswell+, AMD Zen 1-3): fp32, bf16
// and fp16 storage, all arithmetic in fp32 registers, 8 lanes. Bit-identical to fake_quant.cpp: the
// same operation order per element (x * (1/s), round half to even with vroundps, + z, clamp, - z, * s;
// no contraction: the multiply and add are separate instructions), the same 16-lane fp64 accumulation
// of the LSQ partial sums (element k of a unit into lane k % 16: two 8-wide steps fill lanes 0-7 and
// 8-15), the same bf16 / fp16 rounding including canonical NaNs. Tails shorter than 8 elements run the
// same vector code on a zero-padded copy whose extra lanes are masked out (they add +0.0 to no sum
// that is read). float64 inputs use the portable path. The loops over the work units are
// fake_quant_loops.h's, shared with the portable and AVX-512 kernels; this file holds the 8-lane operations.
#include <algorithm>
#include <cstring>

#include "fake_quant.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#pragma GCC target("avx2,fma,f16c")
#include <immintrin.h>

#include "fake_quant_loops.h"

namespace ck::cpu {
namespace {

template <FqDtype D>
struct Io;
template <>
struct Io<FqDtype::kFloat32> {
  using T = float;
  static __m256 load(const float* p) { return _mm256_loadu_ps(p); }
  static void store(float* p, __m256 v) { _mm256_storeu_ps(p, v); }
};

// 8 x uint32 (each <= 0xFFFF) -> 8 x uint16. packus works within 128-bit halves, so the two
// halves' low quadwords are brought together afterwards.
inline __m128i narrow_u32_to_u16(__m256i r) {
  const __m256i packed = _mm256_packus_epi32(r, r);
  return _mm256_castsi256_si128(_mm256_permute4x64_epi64(packed, 0x08));
}

template <>
struct Io<FqDtype::kBFloat16> {
  using T = uint16_t;
  static __m256 load(const uint16_t* p) {
    const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
  }
  // Round to nearest even as float_to_bf16: (u + 0x7FFF + ((u >> 16) & 1)) >> 16, NaN -> 0x7FC0.
  static void store(uint16_t* p, __m256 v) {
    const __m256i u = _mm256_castps_si256(v);
    const __m256i bias =
        _mm256_add_epi32(_mm256_and_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(1)), _mm256_set1_epi32(0x7FFF));
    __m256i r = _mm256_srli_epi32(_mm256_add_epi32(u, bias), 16);
    const __m256i nan = _mm256_castps_si256(_mm256_cmp_ps(v, v, _CMP_UNORD_Q));
    r = _mm256_blendv_epi8(r, _mm256_set1_epi32(0x7FC0), nan);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(p), narrow_u32_to_u16(r));
  }
};

template <>
struct Io<FqDtype::kFloat16> {
  using T = uint16_t;
  static __m256 load(const uint16_t* p) {
    return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  }
  // vcvtps2ph rounds to nearest even like float_to_fp16; NaNs are made canonical (sign | 0x7E00).
  static void store(uint16_t* p, __m256 v) {
    __m128i h = _mm256_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    const __m256i sign = _mm256_and_si256(_mm256_srli_epi32(_mm256_castps_si256(v), 16), _mm256_set1_epi32(0x8000));
    const __m128i nan_bits = narrow_u32_to_u16(_mm256_or_si256(sign, _mm256_set1_epi32(0x7E00)));
    const __m128i nan =
        narrow_u32_to_u16(_mm256_srli_epi32(_mm256_castps_si256(_mm256_cmp_ps(v, v, _CMP_UNORD_Q)), 16));
    h = _mm_blendv_epi8(h, nan_bits, nan);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(p), h);
  }
};

// All-ones lanes where mask[i] != 0 (every lane when there is no mask).
inline __m256 kept_lanes(const uint8_t* mask) {
  if (mask == nullptr) return _mm256_castsi256_ps(_mm256_set1_epi32(-1));
  int64_t bytes;
  std::memcpy(&bytes, mask, 8);
  const __m256i b = _mm256_cvtepu8_epi32(_mm_cvtsi64_si128(bytes));
  return _mm256_castsi256_ps(_mm256_cmpgt_epi32(b, _mm256_setzero_si256()));
}

struct Lanes {
  __m256 s, inv, z, lo, hi, lo_minus_z, hi_minus_z;
};

inline Lanes broadcast(const FqParams& p, int64_t c) {
  const float z = p.zero_point[c];
  return {_mm256_set1_ps(p.scale[c]), _mm256_set1_ps(p.inv_scale[c]), _mm256_set1_ps(z),         _mm256_set1_ps(p.qmin),
          _mm256_set1_ps(p.qmax),     _mm256_set1_ps(p.qmin - z),     _mm256_set1_ps(p.qmax - z)};
}

// qparams of the 8 positions p..p+7 (padded with scale 1, zero point 0 past the n valid ones).
inline Lanes position_lanes(const FqParams& p, int64_t pos, int64_t n) {
  Lanes k;
  if (n == 8) {
    k.s = _mm256_loadu_ps(p.scale + pos);
    k.inv = _mm256_loadu_ps(p.inv_scale + pos);
    k.z = _mm256_loadu_ps(p.zero_point + pos);
  } else {
    alignas(32) float s[8] = {1, 1, 1, 1, 1, 1, 1, 1}, inv[8] = {1, 1, 1, 1, 1, 1, 1, 1}, z[8] = {0};
    std::memcpy(s, p.scale + pos, n * sizeof(float));
    std::memcpy(inv, p.inv_scale + pos, n * sizeof(float));
    std::memcpy(z, p.zero_point + pos, n * sizeof(float));
    k.s = _mm256_load_ps(s);
    k.inv = _mm256_load_ps(inv);
    k.z = _mm256_load_ps(z);
  }
  k.lo = _mm256_set1_ps(p.qmin);
  k.hi = _mm256_set1_ps(p.qmax);
  k.lo_minus_z = _mm256_sub_ps(k.lo, k.z);
  k.hi_minus_z = _mm256_sub_ps(k.hi, k.z);
  return k;
}

struct Element {
  __m256 v, r, y, inside, below;
};

// The order of fake_quant.cpp's quantize(). vmaxps / vminps return the second operand when either is
// NaN, so max(lo, q) and min(hi, c) keep a NaN q, like `q < lo ? lo : q`.
inline Element quantize(__m256 x, const Lanes& k) {
  Element e;
  e.v = _mm256_mul_ps(x, k.inv);
  e.r = _mm256_round_ps(e.v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  const __m256 q = _mm256_add_ps(e.r, k.z);
  const __m256 c = _mm256_min_ps(k.hi, _mm256_max_ps(k.lo, q));
  e.y = _mm256_mul_ps(_mm256_sub_ps(c, k.z), k.s);
  e.inside = _mm256_and_ps(_mm256_cmp_ps(q, k.lo, _CMP_GE_OQ), _mm256_cmp_ps(q, k.hi, _CMP_LE_OQ));
  e.below = _mm256_cmp_ps(q, k.lo, _CMP_LT_OQ);
  return e;
}

inline __m256 scale_derivative(const Element& e, const Lanes& k) {
  const __m256 d = _mm256_blendv_ps(k.hi_minus_z, k.lo_minus_z, e.below);
  return _mm256_blendv_ps(d, _mm256_sub_ps(e.r, e.v), e.inside);
}

inline __m256d low_pd(__m256 v) { return _mm256_cvtps_pd(_mm256_castps256_ps128(v)); }
inline __m256d high_pd(__m256 v) { return _mm256_cvtps_pd(_mm256_extractf128_ps(v, 1)); }

// The operands of 8 elements: the real arrays, or zero-padded copies of the last n < 8 elements
// (padded mask bytes are 0, so padded lanes are never kept).
template <class T>
struct Window {
  const T* x;
  const T* gy;
  const uint8_t* mask;
  T* out;
  alignas(32) T x_buf[8];
  alignas(32) T gy_buf[8];
  alignas(32) T out_buf[8];
  uint8_t mask_buf[8];
  int64_t n;

  Window(const T* x_, const T* gy_, const uint8_t* mask_, T* out_, int64_t i, int64_t n_) : n(n_) {
    if (n == 8) {
      x = x_ + i;
      gy = gy_ != nullptr ? gy_ + i : nullptr;
      mask = mask_ != nullptr ? mask_ + i : nullptr;
      out = out_ + i;
      return;
    }
    std::memset(x_buf, 0, sizeof(x_buf));
    std::memset(gy_buf, 0, sizeof(gy_buf));
    std::memset(mask_buf, 0, sizeof(mask_buf));
    std::memcpy(x_buf, x_ + i, n * sizeof(T));
    if (gy_ != nullptr) std::memcpy(gy_buf, gy_ + i, n * sizeof(T));
    if (mask_ != nullptr) {
      std::memcpy(mask_buf, mask_ + i, n);
    } else {
      std::memset(mask_buf, 1, n);
    }
    x = x_buf;
    gy = gy_buf;
    mask = mask_buf;
    out = out_buf;
  }
  void finish(T* out_, int64_t i) const {
    if (n < 8) std::memcpy(out_ + i, out_buf, n * sizeof(T));
  }
};

// The 8-lane operations of fake_quant_loops.h.
struct Avx2Ops {
  static constexpr int64_t kWidth = 8;
  using Lanes = ck::cpu::Lanes;
  static Lanes broadcast(const FqParams& p, int64_t c) { return ck::cpu::broadcast(p, c); }
  static Lanes positions(const FqParams& p, int64_t pos, int64_t n) { return position_lanes(p, pos, n); }

  template <FqDtype D>
  static void forward_step(const FqArgs& a, const Lanes& k, int64_t i, int64_t n) {
    using IO = Io<D>;
    using T = typename IO::T;
    T* y = static_cast<T*>(a.out);
    const Window<T> w(static_cast<const T*>(a.x), nullptr, a.mask, y, i, n);
    const Element e = quantize(IO::load(w.x), k);
    IO::store(w.out, _mm256_and_ps(kept_lanes(w.mask), e.y));
    w.finish(y, i);
  }

  struct Sums {
    __m256 s, z;
  };
  template <FqDtype D>
  static Sums backward_step(const FqArgs& a, const Lanes& k, int64_t i, int64_t n, bool sums) {
    using IO = Io<D>;
    using T = typename IO::T;
    T* dx = static_cast<T*>(a.out);
    const Window<T> w(static_cast<const T*>(a.x), static_cast<const T*>(a.grad_y), a.mask, dx, i, n);
    const __m256 kept = kept_lanes(w.mask);
    const Element e = quantize(IO::load(w.x), k);
    const __m256 gy = IO::load(w.gy);
    IO::store(w.out, _mm256_and_ps(_mm256_and_ps(kept, e.inside), gy));
    w.finish(dx, i);
    if (!sums) return {_mm256_setzero_ps(), _mm256_setzero_ps()};
    return {_mm256_and_ps(kept, _mm256_mul_ps(scale_derivative(e, k), gy)),
            _mm256_and_ps(_mm256_andnot_ps(e.inside, kept), gy)};
  }

  // fp64 lanes 0-3, 4-7, 8-11, 12-15: a step at offset 0 mod 16 fills the first two, at 8 mod 16
  // the last two.
  struct SpanSums {
    __m256d s[4], z[4];
    // user-provided: an implicit constructor would not be compiled for this file's target
    SpanSums() {
      for (int q = 0; q < 4; ++q) s[q] = z[q] = _mm256_setzero_pd();
    }
    void add(int64_t offset, const Sums& c) {
      const int q = (offset & 8) ? 2 : 0;
      s[q] = _mm256_add_pd(s[q], low_pd(c.s));
      s[q + 1] = _mm256_add_pd(s[q + 1], high_pd(c.s));
      z[q] = _mm256_add_pd(z[q], low_pd(c.z));
      z[q + 1] = _mm256_add_pd(z[q + 1], high_pd(c.z));
    }
    void store(double* ls, double* lz) const {
      for (int q = 0; q < 4; ++q) {
        _mm256_store_pd(ls + 4 * q, s[q]);
        _mm256_store_pd(lz + 4 * q, z[q]);
      }
    }
  };

  static void add_to_positions(double* ps, double* pz, int64_t p, int64_t n, const Sums& c) {
    if (n == 8) {
      _mm256_storeu_pd(ps + p, _mm256_add_pd(_mm256_loadu_pd(ps + p), low_pd(c.s)));
      _mm256_storeu_pd(ps + p + 4, _mm256_add_pd(_mm256_loadu_pd(ps + p + 4), high_pd(c.s)));
      _mm256_storeu_pd(pz + p, _mm256_add_pd(_mm256_loadu_pd(pz + p), low_pd(c.z)));
      _mm256_storeu_pd(pz + p + 4, _mm256_add_pd(_mm256_loadu_pd(pz + p + 4), high_pd(c.z)));
      return;
    }
    alignas(32) double ls[8], lz[8];
    _mm256_store_pd(ls, low_pd(c.s));
    _mm256_store_pd(ls + 4, high_pd(c.s));
    _mm256_store_pd(lz, low_pd(c.z));
    _mm256_store_pd(lz + 4, high_pd(c.z));
    for (int64_t t = 0; t < n; ++t) {
      ps[p + t] += ls[t];
      pz[p + t] += lz[t];
    }
  }
};

}  // namespace

const FakeQuantKernels fake_quant_kernels_avx2 = vector_tier_kernels<Avx2Ops>();

}  // namespace ck::cpu
#else
namespace ck::cpu {
const FakeQuantKernels fake_quant_kernels_avx2 = {&fake_quant_forward_portable, &fake_quant_backward_portable};
}  // namespace ck::cpu
#endif
