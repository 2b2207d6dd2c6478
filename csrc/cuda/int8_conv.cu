// int8 conv2d on CUDA over NHWC activations: implicit GEMM on the tensor-core kernel of
// int8_mma.cuh (one GEMM per group, blockIdx.z), and a direct kernel for depthwise convs.
#include <cuda_runtime.h>

#include <cstdint>

#include "int8_gemm.cuh"
#include "int8_mma.cuh"

namespace ck::cuda {
namespace {

constexpr int kDepthwiseThreads = 256;

// Depthwise (groups == C == OC): one thread per output (pixel, channel), channels fastest so that
// a warp reads 32 consecutive channels of one input pixel. acc = sum over in-image taps of
// (x - x_zero_point) * w[c, tap], then bias modulo 2^32, then the output stage: what the CPU's
// int8_conv_depthwise_rows computes (padded taps contribute zero).
template <typename XT>
__global__ void depthwise_kernel(const XT* __restrict__ x, const int8_t* __restrict__ w, const Int8ConvParams p,
                                 int64_t oh_count, int64_t ow_count) {
  const int64_t channels = p.in_channels;
  const int64_t total = p.batch * oh_count * ow_count * channels;
  const int64_t taps = p.kernel_h * p.kernel_w;
  const Int8EpilogueParams& ep = p.epilogue;
  for (int64_t idx = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; idx < total;
       idx += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t c = idx % channels;
    const int64_t pixel = idx / channels;
    const int64_t b = pixel / (oh_count * ow_count);
    const int64_t oh = (pixel / ow_count) % oh_count, ow = pixel % ow_count;
    int32_t acc = 0;
    for (int64_t kh = 0; kh < p.kernel_h; ++kh) {
      const int64_t ih = oh * p.stride_h - p.pad_h + kh * p.dilation_h;
      if (ih < 0 || ih >= p.height) continue;
      for (int64_t kw = 0; kw < p.kernel_w; ++kw) {
        const int64_t iw = ow * p.stride_w - p.pad_w + kw * p.dilation_w;
        if (iw < 0 || iw >= p.width) continue;
        const int32_t xv = static_cast<int32_t>(x[((b * p.height + ih) * p.width + iw) * channels + c]);
        acc += (xv - p.x_zero_point) * static_cast<int32_t>(w[c * taps + kh * p.kernel_w + kw]);
      }
    }
    if (ep.bias_i32 != nullptr) {
      acc = static_cast<int32_t>(static_cast<uint32_t>(acc) + static_cast<uint32_t>(ep.bias_i32[c]));
    }
    if (ep.kind == Int8Epilogue::kInt32) {
      static_cast<int32_t*>(p.out)[idx] = acc;
      continue;
    }
    int32_t m0, shift;
    detail::multiplier(ep, c, m0, shift);
    const int32_t v = Requantize(acc, m0, shift, ep.zero_point, ep.qmin, ep.qmax, ep.rounding);
    if (ep.out_type == Int8OutType::kInt8) {
      static_cast<int8_t*>(p.out)[idx] = static_cast<int8_t>(v);
    } else if (ep.out_type == Int8OutType::kUInt8) {
      static_cast<uint8_t*>(p.out)[idx] = static_cast<uint8_t>(v);
    } else {
      static_cast<int32_t*>(p.out)[idx] = v;
    }
  }
}

bool valid_shape(const Int8ConvParams& p) {
  return p.batch >= 0 && p.in_channels > 0 && p.height > 0 && p.width > 0 && p.out_channels > 0 && p.kernel_h > 0 &&
         p.kernel_w > 0 && p.stride_h > 0 && p.stride_w > 0 && p.pad_h >= 0 && p.pad_w >= 0 && p.dilation_h > 0 &&
         p.dilation_w > 0 && p.groups > 0 && p.in_channels % p.groups == 0 && p.out_channels % p.groups == 0 &&
         p.out_h() > 0 && p.out_w() > 0 && p.height * p.width <= INT32_MAX && p.in_channels <= INT32_MAX &&
         p.out_h() * p.out_w() <= INT32_MAX;
}

}  // namespace

cudaError_t int8_conv2d(const Int8ConvParams& p, cudaStream_t stream) {
  if (!valid_shape(p) || p.epilogue.kind == Int8Epilogue::kFloat || !int8_epilogue_valid(p.epilogue)) {
    return cudaErrorInvalidValue;
  }
  const int64_t oh = p.out_h(), ow = p.out_w();
  if (p.batch == 0) return cudaSuccess;  // (empty tensors may have null data pointers)
  if (p.x == nullptr || p.out == nullptr) return cudaErrorInvalidValue;
  const bool depthwise = p.groups == p.in_channels && p.out_channels == p.groups;
  if (depthwise) {
    if (p.w_depthwise == nullptr) return cudaErrorInvalidValue;
    const int64_t total = p.batch * oh * ow * p.in_channels;
    const int64_t blocks64 = (total + kDepthwiseThreads - 1) / kDepthwiseThreads;
    const unsigned blocks = static_cast<unsigned>(blocks64 < (1 << 20) ? blocks64 : (1 << 20));
    if (p.x_signed) {
      depthwise_kernel<int8_t>
          <<<blocks, kDepthwiseThreads, 0, stream>>>(static_cast<const int8_t*>(p.x), p.w_depthwise, p, oh, ow);
    } else {
      depthwise_kernel<uint8_t>
          <<<blocks, kDepthwiseThreads, 0, stream>>>(static_cast<const uint8_t*>(p.x), p.w_depthwise, p, oh, ow);
    }
    return cudaGetLastError();
  }
  if (p.w_packed == nullptr) return cudaErrorInvalidValue;
  const int64_t cg = p.in_channels / p.groups;
  detail::KernelArgs args;
  args.a = p.x;
  args.m = p.batch * oh * ow;
  args.a_zero_point = p.x_zero_point;
  args.height = static_cast<int32_t>(p.height);
  args.width = static_cast<int32_t>(p.width);
  args.in_channels = static_cast<int32_t>(p.in_channels);
  args.group_in = static_cast<int32_t>(cg);
  args.kernel_w = static_cast<int32_t>(p.kernel_w);
  args.stride_h = static_cast<int32_t>(p.stride_h);
  args.stride_w = static_cast<int32_t>(p.stride_w);
  args.pad_h = static_cast<int32_t>(p.pad_h);
  args.pad_w = static_cast<int32_t>(p.pad_w);
  args.dilation_h = static_cast<int32_t>(p.dilation_h);
  args.dilation_w = static_cast<int32_t>(p.dilation_w);
  args.out_h = static_cast<int32_t>(oh);
  args.out_w = static_cast<int32_t>(ow);
  args.w_packed = p.w_packed;
  args.n = p.out_channels / p.groups;
  args.k = p.kernel_h * p.kernel_w * cg;
  args.words_per_row = int8_words_per_row(args.k);
  args.ep = p.epilogue;
  args.out = p.out;
  args.ldo = p.out_channels;
  const detail::DeviceInfo device = detail::current_device_info();
  // A chunk of the gather must stay inside one tap's channels and be aligned in x.
  const uintptr_t base = reinterpret_cast<uintptr_t>(p.x);
  if (base % 16 == 0 && cg % 16 == 0 && p.in_channels % 16 == 0) {
    return detail::launch_gemm_vec<detail::ConvLoader, 16>(args, p.x_signed, p.groups, device, stream);
  }
  if (base % 4 == 0 && cg % 4 == 0 && p.in_channels % 4 == 0) {
    return detail::launch_gemm_vec<detail::ConvLoader, 4>(args, p.x_signed, p.groups, device, stream);
  }
  return detail::launch_gemm_vec<detail::ConvLoader, 1>(args, p.x_signed, p.groups, device, stream);
}

}  // namespace ck::cuda
