// Elementwise int8 ops on CUDA: requantize (int32 -> int8 / uint8 / int32) and quantize_rows
// (fp32 rows -> symmetric int8 with one scale per row).
#include <cuda_runtime.h>

#include <cstdint>

#include "ck/fixedpoint.h"
#include "int8_gemm.cuh"

namespace ck::cuda {
namespace {

constexpr int kThreads = 256;

__global__ void requantize_kernel(const int32_t* __restrict__ acc, int64_t total, int64_t cols,
                                  const Int8EpilogueParams ep, void* __restrict__ out) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t c = ep.per_channel ? i % cols : 0;
    const int32_t m0 = ep.m0 != nullptr ? ep.m0[c] : ep.m0_scalar;
    int32_t shift = ep.shift != nullptr ? ep.shift[c] : ep.shift_scalar;
    shift = shift < kMinShift ? kMinShift : (shift > kMaxShift ? kMaxShift : shift);
    const int32_t v = Requantize(acc[i], m0, shift, ep.zero_point, ep.qmin, ep.qmax, ep.rounding);
    if (ep.out_type == Int8OutType::kInt8) {
      static_cast<int8_t*>(out)[i] = static_cast<int8_t>(v);
    } else if (ep.out_type == Int8OutType::kUInt8) {
      static_cast<uint8_t*>(out)[i] = static_cast<uint8_t>(v);
    } else {
      static_cast<int32_t*>(out)[i] = v;
    }
  }
}

// One block per row: the row's max |x| by a block reduction over the bit patterns of |x| as
// integers (the float order for non-negative values, exact in any order, as on the CPU), then
// q = clamp(rint(x / scale)). A row holding NaN or +-Inf (maximum >= 0x7f800000) gets scale NaN and
// q = 0, like csrc/cpu's quantize_rows.
__global__ void quantize_rows_kernel(const float* __restrict__ x, int64_t rows, int64_t cols, int32_t qmin,
                                     int32_t qmax, int8_t* __restrict__ q, float* __restrict__ scale) {
  constexpr int kAbsMask = 0x7fffffff, kExponentMask = 0x7f800000;
  __shared__ int warp_max[kThreads / 32];
  __shared__ float row_scale;
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const float* xr = x + r * cols;
    int amax = 0;
    for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) amax = max(amax, __float_as_int(xr[c]) & kAbsMask);
    for (int offset = 16; offset > 0; offset >>= 1) amax = max(amax, __shfl_xor_sync(0xFFFFFFFFu, amax, offset));
    if ((threadIdx.x & 31) == 0) warp_max[threadIdx.x >> 5] = amax;
    __syncthreads();
    if (threadIdx.x == 0) {
      int m = 0;
      for (int w = 0; w < kThreads / 32; ++w) m = max(m, warp_max[w]);
      float s = __int_as_float(0x7fc00000);  // the non-finite row marker: quiet NaN
      if (m < kExponentMask) {
        s = __fdiv_rn(__int_as_float(m), static_cast<float>(qmax));  // true division, as on the CPU
        if (s == 0.0f) s = 1.0f;
      }
      row_scale = s;
      scale[r] = s;
    }
    __syncthreads();
    const float s = row_scale;
    const bool finite_row = !isnan(s);
    for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) {
      float v = rintf(__fdiv_rn(xr[c], s));  // round half to even
      v = fminf(fmaxf(v, static_cast<float>(qmin)), static_cast<float>(qmax));
      q[r * cols + c] = finite_row ? static_cast<int8_t>(v) : int8_t{0};
    }
    __syncthreads();  // row_scale and warp_max are reused by the next row
  }
}

}  // namespace

cudaError_t int8_requantize(const int32_t* acc, int64_t rows, int64_t cols, const Int8EpilogueParams& epilogue,
                            void* out, cudaStream_t stream) {
  if (rows < 0 || cols <= 0 || epilogue.kind != Int8Epilogue::kRequantize || !int8_epilogue_valid(epilogue)) {
    return cudaErrorInvalidValue;
  }
  const int64_t total = rows * cols;
  if (total == 0) return cudaSuccess;
  const int64_t blocks = (total + kThreads - 1) / kThreads;
  requantize_kernel<<<static_cast<unsigned>(blocks < (1 << 20) ? blocks : (1 << 20)), kThreads, 0, stream>>>(
      acc, total, cols, epilogue, out);
  return cudaGetLastError();
}

cudaError_t int8_quantize_rows(const float* x, int64_t rows, int64_t cols, int32_t qmin, int32_t qmax, int8_t* q,
                               float* scale, cudaStream_t stream) {
  if (rows < 0 || cols < 0 || qmax < 1 || qmin > qmax) return cudaErrorInvalidValue;
  if (rows == 0) return cudaSuccess;
  const unsigned blocks = static_cast<unsigned>(rows < 65535 ? rows : 65535);
  quantize_rows_kernel<<<blocks, kThreads, 0, stream>>>(x, rows, cols, qmin, qmax, q, scale);
  return cudaGetLastError();
}

}  // namespace ck::cuda
