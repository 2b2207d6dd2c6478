// CUDA glue of the 2:4 sparse ops: argument checks, output allocation, launch on the current stream.
// The kernels are torch-free (csrc/cuda/sparse24.{cuh,cu}).
//
// sparse24_compress / sparse24_decompress take and return our layout (csrc/include/ck/sparse24.h),
// exactly as on the CPU. sparse24_linear / sparse24_int8_linear on CUDA take the weight in the layout
// of PyTorch's CUTLASS semi-structured tensors (values fp16/bf16 with int16 meta, or int8 values with
// int32 meta; documented in sparse24.cuh): the `packed` / `meta` of
// torch.sparse.to_sparse_semi_structured(w) under _FORCE_CUTLASS, or
// compress_kernels.ops.sparse24_cuda_pack(values, meta), which pads N and K to CUTLASS's multiples
// (the output then has the padded N columns). The Python wrappers in compress_kernels.ops pack our
// layout per call when they are given it on CUDA; modules pack once when moved to the GPU.
#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <cstdint>
#include <limits>
#include <string>
#include <tuple>

#include "../cuda/sparse24.cuh"
#include "checks.h"
#include "ck/sparse24.h"

namespace ck::ops {
namespace {

void check_cuda_tensor(const at::Tensor& t, const at::Tensor& ref, const char* op, const char* name) {
  TORCH_CHECK(t.device() == ref.device(), op, ": ", name, " must be on ", ref.device(), ", got ", t.device());
}

void check_k4(int64_t k, const char* op) {
  TORCH_CHECK(k > 0 && k % 4 == 0, op, ": K (the reduction dimension, kh * kw * in_channels for a conv) must be a ",
              "positive multiple of 4 for 2:4 sparsity, got K=", k);
}

// Element size and whether -0.0 counts as zero, for the dtypes the CPU compressor dispatches.
int elem_bytes_of(at::ScalarType t, bool* is_float, const char* op, const char* name) {
  switch (t) {
    case at::kByte:
    case at::kChar:
      *is_float = false;
      return 1;
    case at::kShort:
      *is_float = false;
      return 2;
    case at::kInt:
      *is_float = false;
      return 4;
    case at::kLong:
      *is_float = false;
      return 8;
    case at::kHalf:
    case at::kBFloat16:
      *is_float = true;
      return 2;
    case at::kFloat:
      *is_float = true;
      return 4;
    case at::kDouble:
      *is_float = true;
      return 8;
    default:
      TORCH_CHECK(false, op, ": ", name, " must be an integer, float16, bfloat16, float32 or float64 tensor, got ", t);
  }
}

// A contiguous tensor whose data is 16-byte aligned (cp.async reads 16-byte pieces).
at::Tensor contiguous_aligned(const at::Tensor& t) {
  at::Tensor c = t.contiguous();
  if (reinterpret_cast<uintptr_t>(c.data_ptr()) % 16 != 0) c = c.clone();
  return c;
}

constexpr int64_t kNoBad = std::numeric_limits<int64_t>::max();

std::tuple<at::Tensor, at::Tensor> sparse24_compress_cuda(const at::Tensor& w) {
  constexpr const char* op = "sparse24_compress";
  check_dim(w, 2, op, "w");
  const int64_t n = w.size(0), k = w.size(1);
  check_k4(k, op);
  bool is_float = false;
  const int eb = elem_bytes_of(w.scalar_type(), &is_float, op, "w");
  const c10::cuda::CUDAGuard guard(w.device());
  const at::Tensor wc = w.contiguous();
  at::Tensor values = at::empty({n, k / 2}, w.options());
  at::Tensor meta = at::empty({n, sparse24::meta_cols(k)}, w.options().dtype(at::kByte));
  at::Tensor bad = at::full({1}, kNoBad, w.options().dtype(at::kLong));
  const cudaError_t status =
      cuda::sparse24_compress(wc.data_ptr(), n, k, eb, is_float, values.data_ptr(), meta.data_ptr<uint8_t>(),
                              bad.data_ptr<int64_t>(), at::cuda::getCurrentCUDAStream());
  TORCH_CHECK(status == cudaSuccess, op, ": CUDA launch failed: ", cudaGetErrorString(status));
  const int64_t b = bad.item<int64_t>();
  TORCH_CHECK(b == kNoBad, op, ": w is not 2:4 sparse: row ", b / (k / 4), ", columns ", 4 * (b % (k / 4)), "..",
              4 * (b % (k / 4)) + 3, " hold more than two non-zeros (prune it first, e.g. with ",
              "compress_kernels.prune.mask_2to4)");
  return {values, meta};
}

at::Tensor sparse24_decompress_cuda(const at::Tensor& values, const at::Tensor& meta) {
  constexpr const char* op = "sparse24_decompress";
  check_dim(values, 2, op, "values");
  check_dim(meta, 2, op, "meta");
  check_dtype(meta, at::kByte, op, "meta");
  check_cuda_tensor(meta, values, op, "meta");
  const int64_t n = values.size(0), k = 2 * values.size(1);
  check_k4(k, op);
  TORCH_CHECK(meta.size(0) == n && meta.size(1) == sparse24::meta_cols(k), op, ": meta must have shape [", n, ", ",
              sparse24::meta_cols(k), "] for values of shape ", values.sizes(), ", got ", meta.sizes());
  bool is_float = false;
  const int eb = elem_bytes_of(values.scalar_type(), &is_float, op, "values");
  const c10::cuda::CUDAGuard guard(values.device());
  const at::Tensor vc = values.contiguous(), mc = meta.contiguous();
  at::Tensor w = at::empty({n, k}, values.options());
  at::Tensor bad = at::full({1}, kNoBad, values.options().dtype(at::kLong));
  const cudaError_t status = cuda::sparse24_decompress(vc.data_ptr(), mc.data_ptr<uint8_t>(), n, k, eb, w.data_ptr(),
                                                       bad.data_ptr<int64_t>(), at::cuda::getCurrentCUDAStream());
  TORCH_CHECK(status == cudaSuccess, op, ": CUDA launch failed: ", cudaGetErrorString(status));
  const int64_t b = bad.item<int64_t>();
  TORCH_CHECK(b == kNoBad, op, ": meta is not a valid 2:4 metadata: row ", b / (k / 4), ", group ", b % (k / 4),
              " has a nibble whose two positions are not increasing (or a non-zero padding nibble)");
  return w;
}

// The CUTLASS-layout weight: values [Np, Kp / 2] of `values_dtype`, meta [Np, Kp / words_k] of
// meta_dtype. Returns Kp.
int64_t check_cutlass_weight(const at::Tensor& x, const at::Tensor& values, const at::Tensor& meta,
                             at::ScalarType meta_dtype, int64_t row_multiple, int64_t k_multiple, const char* op) {
  check_dim(values, 2, op, "values");
  check_cuda_tensor(values, x, op, "values");
  check_cuda_tensor(meta, x, op, "meta");
  TORCH_CHECK(meta.scalar_type() == meta_dtype, op, ": on CUDA, meta must be the CUTLASS-layout ", meta_dtype,
              " metadata for ", values.scalar_type(), " values (from compress_kernels.ops.sparse24_cuda_pack or ",
              "torch.sparse.to_sparse_semi_structured), got ", meta.scalar_type(),
              " (our uint8 layout is packed per call by the compress_kernels.ops wrapper)");
  check_dim(meta, 2, op, "meta");
  const int64_t np = values.size(0), kp = 2 * values.size(1);
  const int64_t groups_per_word = meta_dtype == at::kShort ? 4 : 8;
  TORCH_CHECK(np % row_multiple == 0 && kp % k_multiple == 0, op, ": the CUTLASS layout needs N % ", row_multiple,
              " == 0 and K % ", k_multiple, " == 0 for ", values.scalar_type(), " values, got values of shape ",
              values.sizes(), " (N=", np, ", K=", kp, "); pad with compress_kernels.ops.sparse24_cuda_pack");
  TORCH_CHECK(meta.size(0) == np && meta.size(1) == kp / (4 * groups_per_word), op, ": meta must have shape [", np,
              ", ", kp / (4 * groups_per_word), "] for values of shape ", values.sizes(), ", got ", meta.sizes());
  TORCH_CHECK(kp > 0, op, ": values must have at least one column, got shape ", values.sizes());
  // The grid's second dimension holds the 128-row tiles of x.
  TORCH_CHECK(x.size(0) <= int64_t{65535} * 128, op, ": x may have at most ", int64_t{65535} * 128,
              " rows on CUDA, got ", x.size(0), " (split the batch)");
  const int64_t k = x.size(1);
  TORCH_CHECK(k <= kp && kp - k < k_multiple, op, ": K mismatch: x has K=", k, " but the weight holds K=", kp,
              " (x's K must be the weight's K rounded up to a multiple of ", k_multiple, ", padded by zeros)");
  return kp;
}

// x with unit column stride (a copy otherwise) and its row stride.
at::Tensor rows_of(const at::Tensor& x, int64_t* ldx) {
  const at::Tensor xc = x.stride(1) == 1 && x.stride(0) >= x.size(1) ? x : x.contiguous();
  *ldx = x.size(0) > 1 ? xc.stride(0) : x.size(1);
  return xc;
}

at::Tensor sparse24_linear_cuda(const at::Tensor& x, const at::Tensor& values, const at::Tensor& meta,
                                const std::optional<at::Tensor>& bias) {
  constexpr const char* op = "sparse24_linear";
  check_dim(x, 2, op, "x");
  TORCH_CHECK(values.scalar_type() == at::kHalf || values.scalar_type() == at::kBFloat16, op,
              ": on CUDA, values must be float16 or bfloat16 (the sparse tensor cores' types; "
              "compress_kernels.ops.sparse24_cuda_pack converts fp32 values), got ",
              values.scalar_type());
  TORCH_CHECK(x.scalar_type() == values.scalar_type() || x.scalar_type() == at::kFloat, op, ": x must be ",
              values.scalar_type(), " like values, or float32 (cast to ", values.scalar_type(), "), got ",
              x.scalar_type());
  const int64_t kp =
      check_cutlass_weight(x, values, meta, at::kShort, cuda::kSparse24RowMultiple16, cuda::kSparse24KMultiple16, op);
  const int64_t np = values.size(0);
  const c10::cuda::CUDAGuard guard(x.device());
  TORCH_CHECK(at::cuda::getCurrentDeviceProperties()->major >= 8, op,
              ": the sparse tensor cores (mma.sp) need compute capability 8.0 or newer, got ",
              at::cuda::getCurrentDeviceProperties()->major, ".", at::cuda::getCurrentDeviceProperties()->minor);
  at::Tensor bias_f;
  if (bias.has_value()) {
    check_cuda_tensor(*bias, x, op, "bias");
    TORCH_CHECK(bias->is_floating_point(), op, ": bias must be a floating-point tensor, got ", bias->scalar_type());
    TORCH_CHECK(bias->dim() == 1 && bias->size(0) == np, op, ": bias must have shape [", np, "], got ", bias->sizes());
    bias_f = bias->to(at::kFloat).contiguous();
  }
  // fp32 x is cast once to the weight's type; the output keeps x's dtype (fp32 written directly
  // from the fp32 accumulators).
  const at::Tensor xin = x.scalar_type() == at::kFloat ? x.to(values.scalar_type()) : x;
  int64_t ldx = 0;
  const at::Tensor xc = rows_of(xin, &ldx);
  const at::Tensor vc = contiguous_aligned(values), mc = contiguous_aligned(meta);
  at::Tensor out = at::empty({x.size(0), np}, x.options());
  if (x.size(0) == 0 || np == 0) return out;
  cuda::Sparse24LinearParams p;
  p.x = xc.data_ptr();
  p.m = x.size(0);
  p.k = x.size(1);
  p.ldx = ldx;
  p.type = values.scalar_type() == at::kHalf ? cuda::Sparse24Type::kFloat16 : cuda::Sparse24Type::kBFloat16;
  p.values = vc.data_ptr();
  p.meta = mc.data_ptr<int16_t>();
  p.np = np;
  p.kp = kp;
  p.bias = bias.has_value() ? bias_f.data_ptr<float>() : nullptr;
  p.out_type = x.scalar_type() == at::kFloat ? cuda::Sparse24OutType::kFloat32 : cuda::Sparse24OutType::kSame;
  p.out = out.data_ptr();
  const cudaError_t status = cuda::sparse24_linear(p, at::cuda::getCurrentCUDAStream());
  TORCH_CHECK(status == cudaSuccess, op, ": CUDA launch failed: ", cudaGetErrorString(status));
  return out;
}

at::Tensor sparse24_int8_linear_cuda(const at::Tensor& x, int64_t x_zero_point, const at::Tensor& values,
                                     const at::Tensor& meta, const std::optional<at::Tensor>& bias,
                                     const at::Tensor& m0, const at::Tensor& shift, int64_t out_zero_point,
                                     int64_t qmin, int64_t qmax, at::ScalarType out_dtype, c10::string_view rounding) {
  constexpr const char* op = "sparse24_int8_linear";
  const bool is_signed = check_int8_input(x, op, "x");
  check_dim(x, 2, op, "x");
  check_zero_point_for(x, x_zero_point, op, "x_zero_point");
  check_dtype(values, at::kChar, op, "values");
  const int64_t kp =
      check_cutlass_weight(x, values, meta, at::kInt, cuda::kSparse24RowMultiple8, cuda::kSparse24KMultiple8, op);
  const int64_t np = values.size(0);
  check_depth(kp, op);
  // The multiplier is validated (and a per-tensor one read) on the host; per-channel ones are
  // copied to the device.
  const at::Tensor m0_host = m0.cpu().contiguous(), shift_host = shift.cpu().contiguous();
  const bool per_channel = check_multiplier(m0_host, shift_host, np, op);
  check_output_range(out_dtype, out_zero_point, qmin, qmax, op);
  const Rounding mode = parse_rounding(std::string(rounding), op);
  const c10::cuda::CUDAGuard guard(x.device());
  TORCH_CHECK(at::cuda::getCurrentDeviceProperties()->major >= 8, op,
              ": the sparse tensor cores (mma.sp) need compute capability 8.0 or newer, got ",
              at::cuda::getCurrentDeviceProperties()->major, ".", at::cuda::getCurrentDeviceProperties()->minor);
  at::Tensor bias_c;
  if (bias.has_value()) {
    check_dtype(*bias, at::kInt, op, "bias");
    check_cuda_tensor(*bias, x, op, "bias");
    TORCH_CHECK(bias->dim() == 1 && bias->size(0) == np, op, ": bias must have shape [", np, "], got ", bias->sizes());
    bias_c = bias->contiguous();
  }
  int64_t ldx = 0;
  const at::Tensor xc = rows_of(x, &ldx);
  const at::Tensor vc = contiguous_aligned(values), mc = contiguous_aligned(meta);
  // The zero-point correction needs sum_k w[n, k]: one reduction over the stored values per call
  // (only when x_zero_point != 0; symmetric activations skip it).
  at::Tensor row_sum;
  if (x_zero_point != 0) row_sum = vc.sum(1, /*keepdim=*/false, at::kInt).contiguous();
  at::Tensor m0_dev, shift_dev;
  if (per_channel) {
    m0_dev = m0_host.to(x.device());
    shift_dev = shift_host.to(x.device());
  }
  at::Tensor out = at::empty({x.size(0), np}, x.options().dtype(out_dtype));
  if (x.size(0) == 0 || np == 0) return out;
  cuda::Sparse24Int8Params p;
  p.x = xc.data_ptr();
  p.x_signed = is_signed;
  p.m = x.size(0);
  p.k = x.size(1);
  p.ldx = ldx;
  p.x_zero_point = static_cast<int32_t>(x_zero_point);
  p.values = vc.data_ptr<int8_t>();
  p.meta = mc.data_ptr<int32_t>();
  p.np = np;
  p.kp = kp;
  p.row_sum = x_zero_point != 0 ? row_sum.data_ptr<int32_t>() : nullptr;
  p.bias = bias.has_value() ? bias_c.data_ptr<int32_t>() : nullptr;
  p.per_channel = per_channel;
  if (per_channel) {
    p.m0 = m0_dev.data_ptr<int32_t>();
    p.shift = shift_dev.data_ptr<int32_t>();
  } else {
    p.m0_scalar = m0_host.reshape(-1)[0].item<int32_t>();
    p.shift_scalar = shift_host.reshape(-1)[0].item<int32_t>();
  }
  p.out_zero_point = static_cast<int32_t>(out_zero_point);
  p.qmin = static_cast<int32_t>(qmin);
  p.qmax = static_cast<int32_t>(qmax);
  p.rounding = mode;
  p.out_bytes = out_dtype == at::kInt ? 4 : 1;
  p.out_signed = out_dtype != at::kByte;
  p.out = out.data_ptr();
  const cudaError_t status = cuda::sparse24_int8_linear(p, at::cuda::getCurrentCUDAStream());
  TORCH_CHECK(status == cudaSuccess, op, ": CUDA launch failed: ", cudaGetErrorString(status));
  return out;
}

}  // namespace
}  // namespace ck::ops

TORCH_LIBRARY_IMPL(compress_kernels, CUDA, m) {
  m.impl("sparse24_compress", &ck::ops::sparse24_compress_cuda);
  m.impl("sparse24_decompress", &ck::ops::sparse24_decompress_cuda);
  m.impl("sparse24_linear", &ck::ops::sparse24_linear_cuda);
  m.impl("sparse24_int8_linear", &ck::ops::sparse24_int8_linear_cuda);
}
