#include "requantize.h"

#include "dispatch.h"

namespace ck::cpu {

void requantize_rows_portable(const int32_t* acc, int64_t ld_acc, int64_t cols, int64_t row_begin, int64_t row_end,
                              const RequantParams& p, void* out) {
  for (int64_t r = row_begin; r < row_end; ++r) {
    const int32_t* src = acc + r * ld_acc;
    for (int64_t c = 0; c < cols; ++c) {
      const int64_t ch = p.per_channel ? c : 0;
      const int32_t v = Requantize(src[c], p.m0[ch], p.shift[ch], p.zero_point, p.qmin, p.qmax, p.rounding);
      store_requantized(out, r * cols + c, v, p);
    }
  }
}

void requantize_rows(const int32_t* acc, int64_t ld_acc, int64_t cols, int64_t row_begin, int64_t row_end,
                     const RequantParams& p, void* out) {
  requantize_tiers.active().rows(acc, ld_acc, cols, row_begin, row_end, p, out);
}

namespace {

template <typename T>
void shifted_difference(const void* x, int64_t begin, int64_t count, int32_t zero_point, int left_shift, int32_t* out) {
  const T* p = static_cast<const T*>(x) + begin;
  for (int64_t i = 0; i < count; ++i) {
    // (x - zero_point) << left_shift, computed on uint32 so a negative difference shifts like int32
    // hardware (two's complement) without signed-shift undefined behaviour.
    out[i] = static_cast<int32_t>(static_cast<uint32_t>(static_cast<int32_t>(p[i]) - zero_point) << left_shift);
  }
}

}  // namespace

void int8_add_range(const void* a, const void* b, const Int8AddParams& p, int64_t begin, int64_t end, void* out) {
  requantize_tiers.active().int8_add_range(a, b, p, begin, end, out);
}

void int8_add_range_portable(const void* a, const void* b, const Int8AddParams& p, int64_t begin, int64_t end,
                             void* out) {
  constexpr int64_t kChunk = 2048;  // three int32 chunks stay in L1
  alignas(64) int32_t sa[kChunk], sb[kChunk];
  const int64_t out_elem = p.out.out_type == OutType::kInt32 ? 4 : 1;
  for (int64_t c0 = begin; c0 < end; c0 += kChunk) {
    const int64_t n = end - c0 < kChunk ? end - c0 : kChunk;
    if (p.a_signed)
      shifted_difference<int8_t>(a, c0, n, p.a_zero_point, p.left_shift, sa);
    else
      shifted_difference<uint8_t>(a, c0, n, p.a_zero_point, p.left_shift, sa);
    if (p.b_signed)
      shifted_difference<int8_t>(b, c0, n, p.b_zero_point, p.left_shift, sb);
    else
      shifted_difference<uint8_t>(b, c0, n, p.b_zero_point, p.left_shift, sb);
    requantize_rows(sa, n, n, 0, 1, p.a, sa);
    requantize_rows(sb, n, n, 0, 1, p.b, sb);
    for (int64_t i = 0; i < n; ++i) {
      sa[i] = static_cast<int32_t>(static_cast<uint32_t>(sa[i]) + static_cast<uint32_t>(sb[i]));  // wraps like int32
    }
    requantize_rows(sa, n, n, 0, 1, p.out, static_cast<uint8_t*>(out) + c0 * out_elem);
  }
}

const RequantizeKernels requantize_kernels_portable = {&requantize_rows_portable, &int8_add_range_portable};

constexpr TierTable<RequantizeKernels> requantize_tiers{requantize_kernels_portable,
                                                        {
                                                            {Tier::kAvx2, &requantize_kernels_avx2},
                                                            {Tier::kAvx512Vnni, &requantize_kernels_avx512vnni},
                                                        }};

}  // namespace ck::cpu
