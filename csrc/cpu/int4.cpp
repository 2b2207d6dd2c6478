#include "int4.h"

#include <cstring>
#include <vector>

#include "dispatch.h"

namespace ck::cpu {

namespace {

float word_as_float(uint32_t word) {
  float f;
  std::memcpy(&f, &word, sizeof f);
  return f;
}

uint32_t float_as_word(float f) {
  uint32_t word;
  std::memcpy(&word, &f, sizeof word);
  return word;
}

}  // namespace

void int4_pack(const int8_t* q, const float* scales, const int8_t* zero_points, int64_t n, int64_t k,
               int64_t group_size, uint32_t* payload) {
  Int4Weight w;
  w.n = n;
  w.k = k;
  w.group_size = group_size;
  w.asymmetric = zero_points != nullptr;
  const int64_t chunks = group_size / 8, groups = w.groups();
  for (int64_t block = 0; block < w.blocks(); ++block) {
    const int64_t rows = w.block_rows(block);
    for (int64_t g = 0; g < groups; ++g) {
      uint32_t* out = payload + w.group_offset(block, g);
      for (int64_t r = 0; r < rows; ++r) {
        const int64_t row = block * kInt4BlockRows + r;
        const int8_t* qr = q + row * k + g * group_size;
        for (int64_t c = 0; c < chunks; ++c) {
          uint32_t word = 0;
          for (int j = 0; j < 4; ++j) {
            const uint32_t lo = static_cast<uint32_t>(qr[8 * c + j] + 8),
                           hi = static_cast<uint32_t>(qr[8 * c + 4 + j] + 8);
            word |= (lo | hi << 4) << (8 * j);
          }
          out[c * rows + r] = word;
        }
        out[chunks * rows + r] = float_as_word(scales[row * groups + g]);
        if (w.asymmetric) out[(chunks + 1) * rows + r] = static_cast<uint32_t>(zero_points[row * groups + g] + 8);
      }
    }
  }
}

void int4_unpack(const Int4Weight& w, int8_t* q, float* scales, int8_t* zero_points) {
  const int64_t chunks = w.group_size / 8, groups = w.groups();
  for (int64_t block = 0; block < w.blocks(); ++block) {
    const int64_t rows = w.block_rows(block);
    for (int64_t g = 0; g < groups; ++g) {
      const uint32_t* gp = w.group(block, g);
      for (int64_t r = 0; r < rows; ++r) {
        const int64_t row = block * kInt4BlockRows + r;
        int8_t* qr = q + row * w.k + g * w.group_size;
        for (int64_t c = 0; c < chunks; ++c) {
          const uint32_t word = gp[c * rows + r];
          for (int j = 0; j < 4; ++j) {
            qr[8 * c + j] = static_cast<int8_t>(static_cast<int>((word >> (8 * j)) & 15u) - 8);
            qr[8 * c + 4 + j] = static_cast<int8_t>(static_cast<int>((word >> (8 * j + 4)) & 15u) - 8);
          }
        }
        scales[row * groups + g] = word_as_float(gp[chunks * rows + r]);
        if (w.asymmetric && zero_points != nullptr) {
          zero_points[row * groups + g] = static_cast<int8_t>(static_cast<int32_t>(gp[(chunks + 1) * rows + r]) - 8);
        }
      }
    }
  }
}

void int4_group_sums(const int8_t* xq, int64_t k, int64_t group_size, int64_t row_begin, int64_t row_end,
                     int32_t* sums) {
  const int64_t groups = k / group_size;
  for (int64_t m = row_begin; m < row_end; ++m) {
    for (int64_t g = 0; g < groups; ++g) {
      int32_t s = 0;
      for (int64_t i = 0; i < group_size; ++i) s += xq[m * k + g * group_size + i];
      sums[m * groups + g] = s;
    }
  }
}

void int4_group_sums_float(const float* x, int64_t k, int64_t group_size, int64_t row_begin, int64_t row_end,
                           float* sums) {
  const int64_t groups = k / group_size;
  for (int64_t m = row_begin; m < row_end; ++m) {
    for (int64_t g = 0; g < groups; ++g) {
      float s = 0.0f;
      for (int64_t i = 0; i < group_size; ++i) s = s + x[m * k + g * group_size + i];
      sums[m * groups + g] = s;
    }
  }
}

namespace {

void w4a8_run_portable(const Int4W4a8Args& a, int64_t block_begin, int64_t block_end) {
  const Int4Weight& w = a.w;
  const int64_t chunks = w.group_size / 8, groups = w.groups();
  for (int64_t block = block_begin; block < block_end; ++block) {
    const int64_t rows = w.block_rows(block);
    for (int64_t r = 0; r < rows; ++r) {
      const int64_t n = block * kInt4BlockRows + r;
      for (int64_t m = 0; m < a.m; ++m) {
        float acc = 0.0f;
        for (int64_t g = 0; g < groups; ++g) {
          const uint32_t* gp = w.group(block, g);
          const int8_t* xg = a.xq + m * w.k + g * w.group_size;
          int32_t d = 0;
          for (int64_t c = 0; c < chunks; ++c) {
            const uint32_t word = gp[c * rows + r];
            for (int j = 0; j < 4; ++j) {
              d += static_cast<int32_t>((word >> (8 * j)) & 15u) * xg[8 * c + j];
              d += static_cast<int32_t>((word >> (8 * j + 4)) & 15u) * xg[8 * c + 4 + j];
            }
          }
          const int32_t offset = w.asymmetric ? static_cast<int32_t>(gp[(chunks + 1) * rows + r]) : 8;
          d -= offset * a.x_group_sum[m * groups + g];
          acc = acc + static_cast<float>(d) * word_as_float(gp[chunks * rows + r]);
        }
        float y = acc * a.x_scale[m];
        if (a.bias != nullptr) y = y + a.bias[n];
        a.out[m * w.n + n] = y;
      }
    }
  }
}

// w4a16: one output at a time, k in order.
void float_run_portable(const Int4FloatArgs& a, int64_t block_begin, int64_t block_end) {
  const Int4Weight& w = a.w;
  const int64_t chunks = w.group_size / 8, groups = w.groups();
  for (int64_t block = block_begin; block < block_end; ++block) {
    const int64_t rows = w.block_rows(block);
    for (int64_t r = 0; r < rows; ++r) {
      const int64_t n = block * kInt4BlockRows + r;
      for (int64_t m = 0; m < a.m; ++m) {
        float acc = 0.0f;
        for (int64_t g = 0; g < groups; ++g) {
          const uint32_t* gp = w.group(block, g);
          const int64_t k0 = m * w.k + g * w.group_size;
          float part = 0.0f;
          for (int64_t c = 0; c < chunks; ++c) {
            const uint32_t word = gp[c * rows + r];
            for (int j = 0; j < 8; ++j) {
              const int shift = j < 4 ? 8 * j : 8 * (j - 4) + 4;
              const float wv = static_cast<float>(static_cast<int32_t>((word >> shift) & 15u) - 8);
              part = part + a.x[k0 + 8 * c + j] * wv;
            }
          }
          if (w.asymmetric) {
            const float z = static_cast<float>(static_cast<int32_t>(gp[(chunks + 1) * rows + r]) - 8);
            part = part - z * a.x_group_sum[m * groups + g];
          }
          acc = acc + part * word_as_float(gp[chunks * rows + r]);
        }
        if (a.bias != nullptr) acc = acc + a.bias[n];
        a.out[m * w.n + n] = acc;
      }
    }
  }
}

}  // namespace

void int4_w4a8_run(const Int4W4a8Args& a, int64_t block_begin, int64_t block_end) {
  int4_w4a8_tiers.kernels(enabled_tiers(a.m >= kInt4AmxMinRows)).run(a, block_begin, block_end);
}
void int4_f32_run(const Int4FloatArgs& a, int64_t block_begin, int64_t block_end) {
  int4_f32_tiers.kernels(enabled_tiers(a.x_bf16 != nullptr && a.m >= kInt4AmxMinRows)).run(a, block_begin, block_end);
}

const Int4W4a8Kernels int4_w4a8_kernels_portable = {&w4a8_run_portable};
const Int4FloatKernels int4_f32_kernels_portable = {&float_run_portable};

constexpr TierTable<Int4W4a8Kernels> int4_w4a8_tiers{int4_w4a8_kernels_portable,
                                                     {
                                                         {Tier::kAvx2, &int4_w4a8_kernels_avx2},
                                                         {Tier::kAvx512Vnni, &int4_w4a8_kernels_avx512vnni},
                                                         {Tier::kAmx, &int4_w4a8_kernels_amx},
                                                         {Tier::kAmxEmulated, &int4_w4a8_kernels_amx_emulated},
                                                     }};
constexpr TierTable<Int4FloatKernels> int4_f32_tiers{int4_f32_kernels_portable,
                                                     {
                                                         {Tier::kAvx512Vnni, &int4_f32_kernels_avx512vnni},
                                                         {Tier::kAmx, &int4_f32_kernels_amx},
                                                         {Tier::kAmxEmulated, &int4_f32_kernels_amx_emulated},
                                                     }};

}  // namespace ck::cpu
