#include "sparse24.h"

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstring>

#include "dispatch.h"
#include "int8_gemm.h"

namespace ck::cpu {

int64_t sparse24_check_meta(const uint8_t* meta, int64_t n, int64_t k) {
  const int64_t groups = k / 4, mcols = sparse24::meta_cols(k);
  for (int64_t r = 0; r < n; ++r) {
    const uint8_t* mr = meta + r * mcols;
    for (int64_t g = 0; g < groups; ++g) {
      if (!sparse24::valid_nibble(sparse24::nibble(mr, g))) return r * groups + g;
    }
    if (groups % 2 == 1 && (mr[mcols - 1] >> 4) != 0) return r * groups + groups - 1;
  }
  return -1;
}

// ---------------------------------------------------------------- fp32

Sparse24Plan sparse24_f32_plan(int64_t m, int64_t n) {
  Sparse24Plan plan;
  plan.row_tiles = std::max<int64_t>((m + kS24TileRows - 1) / kS24TileRows, 1);
  plan.panels = (n + kS24PanelCols - 1) / kS24PanelCols;
  return plan;
}

void sparse24_f32_pack(const float* values, const uint8_t* meta, int64_t n, int64_t k, float* out) {
  const int64_t half = k / 2, mcols = sparse24::meta_cols(k), block = sparse24_f32_block_floats(k);
  for (int64_t b = 0; b < (n + 7) / 8; ++b) {
    float* v = out + b * block;
    uint8_t* mb = reinterpret_cast<uint8_t*>(v + 8 * half);
    for (int64_t c = 0; c < 8; ++c) {
      const int64_t r = 8 * b + c;
      for (int64_t j = 0; j < half; ++j) v[j * 8 + c] = r < n ? values[r * half + j] : 0.0f;
      for (int64_t i = 0; i < mcols; ++i) {
        const bool odd_tail = i == mcols - 1 && (k / 4) % 2 == 1;
        mb[i * 8 + c] = r < n ? meta[r * mcols + i] : static_cast<uint8_t>(odd_tail ? 0x04 : 0x44);
      }
    }
  }
  int32_t trailer[2] = {static_cast<int32_t>(k), static_cast<int32_t>(n)};
  std::memcpy(out + (n + 7) / 8 * block, trailer, sizeof(trailer));
}

namespace {
// K and N from the two int32 after the packed data of a buffer of `elements` T, when
// size(N, K) == elements; else both 0.
template <typename T, typename Size>
void read_packed_shape(const T* packed, int64_t elements, Size size, int64_t* n, int64_t* k) {
  constexpr int64_t trailer_elements = 8 / sizeof(T);
  *n = *k = 0;
  if (elements < trailer_elements) return;
  int32_t trailer[2];
  std::memcpy(trailer, packed + elements - trailer_elements, sizeof(trailer));
  if (trailer[0] <= 0 || trailer[1] <= 0 || trailer[0] % 4 != 0) return;
  if (size(trailer[1], trailer[0]) != elements) return;
  *k = trailer[0];
  *n = trailer[1];
}
}  // namespace

void sparse24_f32_packed_shape(const float* packed, int64_t floats, int64_t* n, int64_t* k) {
  read_packed_shape(packed, floats, sparse24_f32_packed_floats, n, k);
}

void sparse24_f32_run_portable(const Sparse24F32Args& a, const Sparse24Plan& plan, int64_t task_begin,
                               int64_t task_end) {
  const int64_t half = a.k / 2, block = sparse24_f32_block_floats(a.k);
  for (int64_t t = task_begin; t < task_end; ++t) {
    int64_t m_begin = 0, m_end = 0, n_begin = 0, n_end = 0;
    plan.task_bounds(a, t, &m_begin, &m_end, &n_begin, &n_end);
    for (int64_t m = m_begin; m < m_end; ++m) {
      const float* xr = a.x + m * a.ldx;
      for (int64_t n = n_begin; n < n_end; ++n) {
        const float* v = a.packed + (n / 8) * block;
        const uint8_t* mb = reinterpret_cast<const uint8_t*>(v + 8 * half);
        const int64_t c = n % 8;
        float acc = 0.0f;
        for (int64_t j = 0; j < half; ++j) {
          const int64_t g = j / 2;
          const int nib = (mb[(g / 2) * 8 + c] >> (4 * (g % 2))) & 0xF;
          acc = std::fma(v[j * 8 + c], xr[4 * g + sparse24::position(nib, static_cast<int>(j % 2))], acc);
        }
        a.out[m * a.n + n] = a.bias != nullptr ? acc + a.bias[n] : acc;
      }
    }
  }
}

void sparse24_f32_run(const Sparse24F32Args& a, const Sparse24Plan& plan, int64_t task_begin, int64_t task_end) {
  sparse24_f32_tiers.active().run(a, plan, task_begin, task_end);
}

const Sparse24F32Kernels sparse24_f32_kernels_portable = {&sparse24_f32_run_portable};

constexpr TierTable<Sparse24F32Kernels> sparse24_f32_tiers{sparse24_f32_kernels_portable,
                                                           {
                                                               {Tier::kAvx2, &sparse24_f32_kernels_avx2},
                                                               {Tier::kAvx512Vnni, &sparse24_f32_kernels_avx512vnni},
                                                           }};

// ---------------------------------------------------------------- int8

void sparse24_int8_pack(const int8_t* values, const uint8_t* meta, int64_t n, int64_t k, int32_t* out) {
  const int64_t pairs = sparse24_int8_pairs(k), blocks = (n + 15) / 16, half = k / 2;
  const int64_t mcols = sparse24::meta_cols(k);
  int8_t* data = reinterpret_cast<int8_t*>(out);
  for (int64_t b = 0; b < blocks; ++b) {
    for (int64_t h = 0; h < pairs; ++h) {
      int8_t* dst = data + (b * pairs + h) * 80;
      for (int64_t i = 0; i < 16; ++i) {
        const int64_t r = 16 * b + i;
        for (int64_t s = 0; s < 4; ++s) {
          const int64_t j = 4 * h + s;  // stored value index
          dst[4 * i + s] = r < n && j < half ? values[r * half + j] : int8_t{0};
        }
        dst[64 + i] = static_cast<int8_t>(r < n ? meta[r * mcols + h] : 0);
      }
    }
  }
  int32_t* row_sum = out + blocks * pairs * 20;
  for (int64_t r = 0; r < n; ++r) {
    int32_t s = 0;
    for (int64_t j = 0; j < half; ++j) s += values[r * half + j];
    row_sum[r] = s;
  }
  row_sum[n] = static_cast<int32_t>(k);
  row_sum[n + 1] = static_cast<int32_t>(n);
}

PackedSparse24Int8 sparse24_int8_packed_view(const int32_t* packed, int64_t words) {
  PackedSparse24Int8 v;
  int64_t n = 0, k = 0;
  read_packed_shape(packed, words, sparse24_int8_packed_words, &n, &k);
  if (n == 0) return v;
  v.data = reinterpret_cast<const int8_t*>(packed);
  v.pairs = sparse24_int8_pairs(k);
  v.row_sum = packed + (n + 15) / 16 * v.pairs * 20;
  v.n = n;
  v.k = k;
  return v;
}

Sparse24Int8Plan sparse24_int8_plan(int64_t m, int64_t n, int64_t threads, int64_t k) {
  if (k > 0 && int8_gemm_uses_amx(m, n, k)) {
    const Int8GemmPlan gemm = int8_gemm_plan(m, n, threads, k);
    Sparse24Int8Plan plan;
    plan.panels = gemm.panels;
    plan.row_chunks = gemm.row_chunks;
    plan.chunk_rows = gemm.chunk_rows;
    plan.panel_cols = kInt8PanelCols;
    plan.amx = true;
    plan.chunk_major = gemm.chunk_major;
    return plan;
  }
  constexpr int64_t panel_cols = kS24I8BlockCols * kS24I8PanelBlocks;
  Sparse24Int8Plan plan;
  plan.panels = (n + panel_cols - 1) / panel_cols;
  const int64_t target_tasks = 4 * std::max<int64_t>(threads, 1);
  const int64_t tiles = std::max<int64_t>((m + kS24I8TileRows - 1) / kS24I8TileRows, 1);
  int64_t chunks = 1;
  if (plan.panels < target_tasks) chunks = std::min(tiles, (target_tasks + plan.panels - 1) / plan.panels);
  // Long row chunks keep one weight panel hot in L2 while many rows stream through it.
  const int64_t tiles_per_chunk = (tiles + chunks - 1) / chunks;
  plan.chunk_rows = tiles_per_chunk * kS24I8TileRows;
  plan.row_chunks = std::max<int64_t>((m + plan.chunk_rows - 1) / plan.chunk_rows, 1);
  return plan;
}

namespace {

template <typename XT>
void int8_portable_typed(const Sparse24Int8Args& a, const Sparse24Int8Plan& plan, int64_t task_begin,
                         int64_t task_end) {
  const XT* x = static_cast<const XT*>(a.x);
  const int64_t k = a.w.k, pairs = a.w.pairs;
  const RequantParams& p = a.requant;
  for (int64_t t = task_begin; t < task_end; ++t) {
    int64_t m_begin = 0, m_end = 0, n_begin = 0, n_end = 0;
    plan.task_bounds(a.m, a.w.n, t, &m_begin, &m_end, &n_begin, &n_end);
    for (int64_t m = m_begin; m < m_end; ++m) {
      const XT* xr = x + m * a.ldx;
      for (int64_t n = n_begin; n < n_end; ++n) {
        const int64_t b = n / 16, i = n % 16;
        int32_t acc = 0;
        for (int64_t h = 0; h < pairs; ++h) {
          const int8_t* blk = a.w.data + (b * pairs + h) * 80;
          const uint8_t nibbles = static_cast<uint8_t>(blk[64 + i]);
          for (int64_t s = 0; s < 4; ++s) {
            const int64_t kk = 8 * h + 4 * (s / 2) + ((nibbles >> (2 * s)) & 3);
            if (kk < k) acc += static_cast<int32_t>(xr[kk]) * static_cast<int32_t>(blk[4 * i + s]);
          }
        }
        uint32_t v =
            static_cast<uint32_t>(acc) - static_cast<uint32_t>(a.x_zero_point) * static_cast<uint32_t>(a.w.row_sum[n]);
        if (a.bias_i32 != nullptr) v += static_cast<uint32_t>(a.bias_i32[n]);
        const int64_t ch = p.per_channel ? n : 0;
        const int32_t y =
            Requantize(static_cast<int32_t>(v), p.m0[ch], p.shift[ch], p.zero_point, p.qmin, p.qmax, p.rounding);
        const int64_t o = m * a.w.n + n;
        if (p.out_type == OutType::kInt8) {
          static_cast<int8_t*>(a.out)[o] = static_cast<int8_t>(y);
        } else if (p.out_type == OutType::kUInt8) {
          static_cast<uint8_t*>(a.out)[o] = static_cast<uint8_t>(y);
        } else {
          static_cast<int32_t*>(a.out)[o] = y;
        }
      }
    }
  }
}

}  // namespace

void sparse24_int8_run_portable(const Sparse24Int8Args& a, const Sparse24Int8Plan& plan, int64_t task_begin,
                                int64_t task_end) {
  if (a.x_signed) {
    int8_portable_typed<int8_t>(a, plan, task_begin, task_end);
  } else {
    int8_portable_typed<uint8_t>(a, plan, task_begin, task_end);
  }
}

void sparse24_int8_run(const Sparse24Int8Args& a, const Sparse24Int8Plan& plan, int64_t task_begin, int64_t task_end) {
  sparse24_int8_tiers.kernels(enabled_tiers(plan.amx)).run(a, plan, task_begin, task_end);
}

const Sparse24Int8Kernels sparse24_int8_kernels_portable = {&sparse24_int8_run_portable};

constexpr TierTable<Sparse24Int8Kernels> sparse24_int8_tiers{
    sparse24_int8_kernels_portable,
    {
        {Tier::kAvx2, &sparse24_int8_kernels_avx2},
        {Tier::kAvx512Vnni, &sparse24_int8_kernels_avx512vnni},
        {Tier::kAvx512Vbmi, &sparse24_int8_kernels_avx512vbmi},
        {Tier::kAmx, &sparse24_int8_kernels_amx},
        {Tier::kAmxEmulated, &sparse24_int8_kernels_amx_emulated},
    }};

// ---------------------------------------------------------------- bf16

void sparse24_bf16_pack(const uint16_t* values, const uint8_t* meta, int64_t n, int64_t k, uint16_t* out) {
  const int64_t half = k / 2, mcols = sparse24::meta_cols(k), pairs = (k + 7) / 8, blocks = (n + 15) / 16;
  for (int64_t b = 0; b < blocks; ++b) {
    for (int64_t h = 0; h < pairs; ++h) {
      uint16_t* dst = out + (b * pairs + h) * 72;
      uint8_t* mb = reinterpret_cast<uint8_t*>(dst + 64);
      for (int64_t i = 0; i < 16; ++i) {
        const int64_t r = 16 * b + i;
        for (int64_t s = 0; s < 4; ++s) {  // s: slot of the pair (groups 2h, 2h + 1 x two values)
          const int64_t j = 4 * h + s;
          dst[(s / 2) * 32 + 2 * i + (s % 2)] = r < n && j < half ? values[r * half + j] : 0;
        }
        const bool odd_tail = h == mcols - 1 && (k / 4) % 2 == 1;
        mb[i] = r < n ? meta[r * mcols + h] : static_cast<uint8_t>(odd_tail ? 0x04 : 0x44);
      }
    }
  }
  int32_t trailer[2] = {static_cast<int32_t>(k), static_cast<int32_t>(n)};
  std::memcpy(out + blocks * pairs * 72, trailer, sizeof(trailer));
}

void sparse24_bf16_packed_shape(const uint16_t* packed, int64_t halves, int64_t* n, int64_t* k) {
  read_packed_shape(packed, halves, sparse24_bf16_packed_halves, n, k);
}

namespace {
// A denormal input read as 0 (DAZ), sign kept.
inline float flush_denormal(float f) { return std::fabs(f) < FLT_MIN ? std::copysign(0.0f, f) : f; }

// One step of vdpbf16ps: acc + a * b (a, b, acc not denormal) rounded to nearest even, and a tiny
// sum flushed to a zero of its sign (FTZ). x86 detects tininess after rounding with an unbounded
// exponent: a sum is tiny when, rounded to 24 bits as if the exponent had no lower limit, it is
// below 2^-126 in magnitude. For a result that gradual underflow rounds to a denormal this always
// holds; for one it rounds to exactly +-2^-126 it holds iff the exact sum is below 2^-126 - 2^-151
// in magnitude (2^-126 - 2^-151 itself ties and rounds to 2^-126). Measured on Zen 4 against the
// instruction, e.g. -2^-126 + 2^-150 -> -0 but -2^-126 + 2^-151 -> -2^-126.
inline float bf16_dot_step(float a, float b, float acc) {
  const float r = std::fma(a, b, acc);
  const float magnitude = std::fabs(r);
  if (!(magnitude <= FLT_MIN) || r == 0.0f) return r;  // normal above 2^-126, infinite, NaN or zero
  if (magnitude < FLT_MIN) return std::copysign(0.0f, r);
  // |r| == 2^-126: the exact sum is s + err (TwoSum in double; a * b is exact there).
  const double p = static_cast<double>(a) * b, s = acc + p, t = s - acc;
  const double err = (acc - (s - t)) + (p - t);
  const double below = std::fabs(s) - FLT_MIN;  // exact: s is within a factor of 2 of 2^-126
  const double err_outward = s > 0 ? err : -err;
  const double half_step = std::ldexp(1.0, -151);
  const bool tiny = below < -half_step || (below == -half_step && err_outward < 0);
  return tiny ? std::copysign(0.0f, r) : r;
}
}  // namespace

void sparse24_bf16_run_portable(const Sparse24Bf16Args& a, const Sparse24Bf16Plan& plan, int64_t task_begin,
                                int64_t task_end) {
  const int64_t pairs = (a.k + 7) / 8, groups = a.k / 4;
  for (int64_t t = task_begin; t < task_end; ++t) {
    int64_t m_begin = 0, m_end = 0, n_begin = 0, n_end = 0;
    plan.task_bounds(a.m, a.n, t, &m_begin, &m_end, &n_begin, &n_end);
    for (int64_t m = m_begin; m < m_end; ++m) {
      const uint16_t* xr = a.x + m * a.ldx;
      for (int64_t n = n_begin; n < n_end; ++n) {
        const uint16_t* block = a.packed + (n / 16) * pairs * 72;
        const int64_t i = n % 16;
        float acc = 0.0f;
        for (int64_t g = 0; g < groups; ++g) {
          const uint16_t* pair = block + (g / 2) * 72;
          const int nib = (reinterpret_cast<const uint8_t*>(pair + 64)[i] >> (4 * (g % 2))) & 0xF;
          const uint16_t* v = pair + (g % 2) * 32 + 2 * i;
          const float x0 = flush_denormal(bf16_to_float(xr[4 * g + sparse24::position(nib, 0)]));
          const float x1 = flush_denormal(bf16_to_float(xr[4 * g + sparse24::position(nib, 1)]));
          acc = bf16_dot_step(flush_denormal(bf16_to_float(v[1])), x1, acc);
          acc = bf16_dot_step(flush_denormal(bf16_to_float(v[0])), x0, acc);
        }
        a.out[m * a.n + n] = float_to_bf16(a.bias != nullptr ? acc + a.bias[n] : acc);
      }
    }
  }
}

const Sparse24Bf16Kernels sparse24_bf16_kernels_portable = {&sparse24_bf16_run_portable};

constexpr TierTable<Sparse24Bf16Kernels> sparse24_bf16_tiers{sparse24_bf16_kernels_portable,
                                                             {
                                                                 {Tier::kAvx2, &sparse24_bf16_kernels_avx2},
                                                                 {Tier::kAvx512Bf16, &sparse24_bf16_kernels_avx512bf16},
                                                             }};

const char* sparse24_bf16_path() { return tier_name(sparse24_bf16_tiers.select(enabled_tiers())); }

void sparse24_bf16_run(const Sparse24Bf16Args& a, const Sparse24Bf16Plan& plan, int64_t task_begin, int64_t task_end) {
  sparse24_bf16_tiers.active().run(a, plan, task_begin, task_end);
}

bool sparse24_bf16_uses_tiles(int64_t m) {
  return (enabled_tiers() & kTileTiers) != 0 && m >= kSparse24Bf16TileMinRows;
}

void sparse24_bf16_tiles_run(const Sparse24Bf16Args& a, const Int8GemmPlan& plan, int64_t task_begin,
                             int64_t task_end) {
  sparse24_bf16_tile_tiers.active().run(a, plan, task_begin, task_end);
}

constexpr TierTable<Sparse24Bf16TileKernels> sparse24_bf16_tile_tiers{
    sparse24_bf16_tile_kernels_amx_emulated,
    {
        {Tier::kAmx, &sparse24_bf16_tile_kernels_amx},
        {Tier::kAmxEmulated, &sparse24_bf16_tile_kernels_amx_emulated},
    }};

}  // namespace ck::cpu
