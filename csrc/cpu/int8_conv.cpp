#include "int8_conv.h"

#include <algorithm>
#include <cstring>

namespace ck::cpu {

void int8_conv_gather_rows(const uint8_t* x, const Int8ConvShape& s, int64_t group, int64_t row_begin, int64_t row_end,
                           uint8_t zero_point_byte, uint8_t* buf, int64_t ld_buf) {
  const int64_t oh_count = s.out_h(), ow_count = s.out_w(), cg = s.group_in();
  const int64_t depth = s.group_depth();
  for (int64_t row = row_begin; row < row_end; ++row) {
    const int64_t n = row / (oh_count * ow_count);
    const int64_t oh = (row / ow_count) % oh_count, ow = row % ow_count;
    uint8_t* dst = buf + (row - row_begin) * ld_buf;
    const int64_t iw_first = ow * s.stride_w - s.pad_w, iw_last = iw_first + (s.kernel_w - 1) * s.dilation_w;
    // With one group and undilated columns, a kernel row inside the image is kernel_w adjacent
    // NHWC pixels: one copy of kernel_w * C bytes instead of kernel_w copies of C.
    const bool whole_rows = s.groups == 1 && s.dilation_w == 1 && iw_first >= 0 && iw_last < s.width;
    for (int64_t kh = 0; kh < s.kernel_h; ++kh) {
      const int64_t ih = oh * s.stride_h - s.pad_h + kh * s.dilation_h;
      if (whole_rows && ih >= 0 && ih < s.height) {
        std::memcpy(dst, x + ((n * s.height + ih) * s.width + iw_first) * s.in_channels,
                    static_cast<size_t>(s.kernel_w * cg));
        dst += s.kernel_w * cg;
        continue;
      }
      for (int64_t kw = 0; kw < s.kernel_w; ++kw, dst += cg) {
        const int64_t iw = ow * s.stride_w - s.pad_w + kw * s.dilation_w;
        if (ih < 0 || ih >= s.height || iw < 0 || iw >= s.width) {
          std::memset(dst, zero_point_byte, static_cast<size_t>(cg));
        } else {
          std::memcpy(dst, x + ((n * s.height + ih) * s.width + iw) * s.in_channels + group * cg,
                      static_cast<size_t>(cg));
        }
      }
    }
    // Depth padding up to ld_buf: the packed weight is zero there, any value contributes 0.
    std::memset(buf + (row - row_begin) * ld_buf + depth, 0, static_cast<size_t>(ld_buf - depth));
  }
}

namespace {

template <typename XT>
void depthwise_typed(const XT* x, int32_t zp, const int8_t* w, const Int8ConvShape& s, const Int8GemmArgs& a,
                     int64_t row_begin, int64_t row_end) {
  const int64_t oh_count = s.out_h(), ow_count = s.out_w(), c_count = s.in_channels;
  const int64_t taps = s.kernel_h * s.kernel_w;
  for (int64_t row = row_begin; row < row_end; ++row) {
    const int64_t n = row / (oh_count * ow_count);
    const int64_t oh = (row / ow_count) % oh_count, ow = row % ow_count;
    for (int64_t c = 0; c < c_count; ++c) {
      // The sum is bounded by taps * 255 * 128 (checked by the caller); the bias is added modulo
      // 2^32 afterwards, like the GEMM path.
      int32_t acc = 0;
      for (int64_t kh = 0; kh < s.kernel_h; ++kh) {
        const int64_t ih = oh * s.stride_h - s.pad_h + kh * s.dilation_h;
        if (ih < 0 || ih >= s.height) continue;
        for (int64_t kw = 0; kw < s.kernel_w; ++kw) {
          const int64_t iw = ow * s.stride_w - s.pad_w + kw * s.dilation_w;
          if (iw < 0 || iw >= s.width) continue;
          const int32_t xv = static_cast<int32_t>(x[((n * s.height + ih) * s.width + iw) * c_count + c]);
          acc += (xv - zp) * static_cast<int32_t>(w[c * taps + kh * s.kernel_w + kw]);
        }
      }
      if (a.bias_i32 != nullptr) {
        acc = static_cast<int32_t>(static_cast<uint32_t>(acc) + static_cast<uint32_t>(a.bias_i32[c]));
      }
      write_output(a, row, c, acc);
    }
  }
}

}  // namespace

void int8_conv_depthwise_rows(const void* x, bool x_signed, int32_t x_zero_point, const int8_t* w,
                              const Int8ConvShape& s, const Int8GemmArgs& args, int64_t row_begin, int64_t row_end) {
  if (x_signed) {
    depthwise_typed(static_cast<const int8_t*>(x), x_zero_point, w, s, args, row_begin, row_end);
  } else {
    depthwise_typed(static_cast<const uint8_t*>(x), x_zero_point, w, s, args, row_begin, row_end);
  }
}

}  // namespace ck::cpu
