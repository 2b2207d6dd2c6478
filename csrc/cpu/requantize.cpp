#include "requantize.h"

#include "isa.h"

namespace ck::cpu {

void requantize_rows_portable(const int32_t* acc, int64_t ld_acc, int64_t cols, int64_t row_begin,
                              int64_t row_end, const RequantParams& p, void* out) {
  for (int64_t r = row_begin; r < row_end; ++r) {
    const int32_t* src = acc + r * ld_acc;
    for (int64_t c = 0; c < cols; ++c) {
      const int64_t ch = p.per_channel ? c : 0;
      const int32_t v = Requantize(src[c], p.m0[ch], p.shift[ch], p.zero_point, p.qmin, p.qmax,
                                   p.rounding);
      const int64_t o = r * cols + c;
      switch (p.out_type) {
        case OutType::kInt8:
          static_cast<int8_t*>(out)[o] = static_cast<int8_t>(v);
          break;
        case OutType::kUInt8:
          static_cast<uint8_t*>(out)[o] = static_cast<uint8_t>(v);
          break;
        default:
          static_cast<int32_t*>(out)[o] = v;
          break;
      }
    }
  }
}

void requantize_rows(const int32_t* acc, int64_t ld_acc, int64_t cols, int64_t row_begin,
                     int64_t row_end, const RequantParams& p, void* out) {
  if (active_isa() >= Isa::kAvx512Vnni) {
    requantize_rows_avx512(acc, ld_acc, cols, row_begin, row_end, p, out);
  } else if (active_isa() == Isa::kAvx2) {
    requantize_rows_avx2(acc, ld_acc, cols, row_begin, row_end, p, out);
  } else {
    requantize_rows_portable(acc, ld_acc, cols, row_begin, row_end, p, out);
  }
}

}  // namespace ck::cpu
