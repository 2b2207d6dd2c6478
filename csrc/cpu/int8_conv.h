// int8 conv2d as implicit GEMM over the int8 GEMM microkernels (torch-free).
//
// Activations are NHWC (channels_last memory). A GEMM row is one output pixel (n, oh, ow); its
// depth index k runs over (kh, kw, c) of one group, so the weight of group g is the [OC/groups,
// KH * KW * C/groups] matrix w[o, c, kh, kw] permuted to (o, kh, kw, c) and packed with
// int8_pack_weight. Rows are gathered a chunk at a time into a small reused buffer (never a full
// im2col of the image); input pixels outside the image are filled with x_zero_point, so padding
// contributes exactly (x_zero_point - x_zero_point) * w = 0, as in TFLite.
#pragma once

#include <cstdint>

#include "int8_gemm.h"

namespace ck::cpu {

struct Int8ConvShape {
  int64_t batch = 0, in_channels = 0, height = 0, width = 0;
  int64_t out_channels = 0, kernel_h = 0, kernel_w = 0;
  int64_t stride_h = 1, stride_w = 1, pad_h = 0, pad_w = 0, dilation_h = 1, dilation_w = 1;
  int64_t groups = 1;
  int64_t out_h() const { return (height + 2 * pad_h - dilation_h * (kernel_h - 1) - 1) / stride_h + 1; }
  int64_t out_w() const { return (width + 2 * pad_w - dilation_w * (kernel_w - 1) - 1) / stride_w + 1; }
  int64_t rows() const { return batch * out_h() * out_w(); }
  int64_t group_in() const { return in_channels / groups; }
  int64_t group_out() const { return out_channels / groups; }
  int64_t group_depth() const { return kernel_h * kernel_w * group_in(); }
  // A 1x1, stride-1, unpadded, ungrouped conv is a plain GEMM on the NHWC activations.
  bool is_pointwise() const {
    return kernel_h == 1 && kernel_w == 1 && stride_h == 1 && stride_w == 1 && pad_h == 0 && pad_w == 0 && groups == 1;
  }
};

// Gathers GEMM rows [row_begin, row_end) of group `group` into buf (row stride ld_buf >= depth):
// buf[r, (kh * KW + kw) * Cg + c] = x[n, ih, iw, group * Cg + c], or x_zero_point outside the image.
void int8_conv_gather_rows(const uint8_t* x_nhwc, const Int8ConvShape& s, int64_t group, int64_t row_begin,
                           int64_t row_end, uint8_t zero_point_byte, uint8_t* buf, int64_t ld_buf);

// Depthwise conv (groups == in_channels == out_channels), computed directly: for each output pixel
// and channel, acc = sum_{kh, kw} (x - x_zero_point) * w[c, kh, kw] + bias[c], then the int8
// output stage of args (kRequantize or kInt32 only). w is [C, KH * KW] int8. Rows as above.
void int8_conv_depthwise_rows(const void* x_nhwc, bool x_signed, int32_t x_zero_point, const int8_t* w,
                              const Int8ConvShape& s, const Int8GemmArgs& args, int64_t row_begin, int64_t row_end);

}  // namespace ck::cpu
