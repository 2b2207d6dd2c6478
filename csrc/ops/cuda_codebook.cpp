// CUDA implementations of the codebook ops (k-means weight sharing): argument checks (shared with
// the CPU glue through codebook_checks.h, same messages), output allocation, the current stream,
// then the torch-free launchers of csrc/cuda/codebook.cu. The packed indices are the tensors the
// CPU codebook_pack writes (ck/bitpack.h), so modules move to the GPU with .to("cuda") unchanged.
//
// Strategies (x: fp32, fp16 or bf16; codebook and bias fp32; output in x's dtype):
//  - codebook_linear with M <= 8 rows: the fused-lookup GEMV kernel (fp32 codebook, x converted
//    exactly to fp32, fp32 accumulation, fp32 bias, one rounding to x's dtype). Small batches are
//    bound by the bytes of weight read, and the kernel reads only the packed indices.
//  - codebook_linear with M > 8: the weight is decoded once per call into a dense [N, K] tensor of
//    x's dtype (the codebook entries rounded to nearest even for fp16 / bf16) and multiplied with
//    cuBLAS (at::mm / at::addmm with the bias cast to x's dtype). This is honest only for large M:
//    the decode writes N*K elements, which at M = 64 costs more than the matmul itself; a fused
//    tensor-core kernel (dequantizing tiles into shared memory) would win for M in ~9 .. 256.
//    fp32 follows torch.backends.cuda.matmul.allow_tf32 like every fp32 matmul (off by default).
//  - codebook_conv2d: the same decode into W [C_out, C_in / groups, kh, kw], then cuDNN through
//    at::_convolution with TF32 off and deterministic algorithms (so the result does not depend
//    on the global cuDNN flags), returned as contiguous NCHW like the CPU op.
#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <cstdint>
#include <optional>

#include "../cuda/codebook.cuh"
#include "checks.h"
#include "codebook_checks.h"
#include "packed_checks.h"

namespace ck::ops {
namespace {

void check_cuda_tensor(const at::Tensor& t, const char* op, const char* name) {
  TORCH_CHECK(t.is_cuda(), op, ": ", name, " must be a CUDA tensor here, got ", t.device());
}

void check_launch(cudaError_t status, const char* op) {
  TORCH_CHECK(status == cudaSuccess, op, ": CUDA launch failed: ", cudaGetErrorString(status));
}

cuda::CodebookType x_type(const at::Tensor& x, const char* op) {
  const at::ScalarType dt = x.scalar_type();
  TORCH_CHECK(dt == at::kFloat || dt == at::kHalf || dt == at::kBFloat16, op,
              ": x must be Float, Half or BFloat16 on CUDA, got ", dt);
  return dt == at::kFloat  ? cuda::CodebookType::kFloat32
         : dt == at::kHalf ? cuda::CodebookType::kFloat16
                           : cuda::CodebookType::kBFloat16;
}

// The payload of a validated pack: the words the kernels read.
const uint32_t* words(const at::Tensor& packed, const PackedInfo& info) {
  return reinterpret_cast<const uint32_t*>(packed_payload<int32_t>(packed, info));
}

at::Tensor codebook_pack_cuda(const at::Tensor& idx, int64_t bits) {
  constexpr const char* op = "codebook_pack";
  check_codebook_bits(bits, op);
  check_dim(idx, 2, op, "idx");
  check_codebook_idx(idx, bits, op);
  const c10::cuda::CUDAGuard guard(idx.device());  // idx is the only tensor: the dispatcher chose CUDA for it
  const int64_t n = idx.size(0), k = idx.size(1);
  const at::Tensor u8 = idx.to(at::kByte).contiguous();
  at::Tensor packed = new_packed(PackedFamily::kCodebook, n, k, bits, idx.options(), op);  // header copied in
  int32_t* payload = packed.data_ptr<int32_t>() + packed_header_elements(PackedFamily::kCodebook, packed.size(1));
  check_launch(cuda::codebook_pack(u8.data_ptr<uint8_t>(), n, k, static_cast<int>(bits),
                                   reinterpret_cast<uint32_t*>(payload), at::cuda::getCurrentCUDAStream()),
               op);
  return packed;
}

at::Tensor codebook_unpack_cuda(const at::Tensor& packed, int64_t bits, int64_t k) {
  constexpr const char* op = "codebook_unpack";
  check_codebook_bits(bits, op);
  TORCH_CHECK(k > 0, op, ": k must be > 0, got ", k);
  const c10::cuda::CUDAGuard guard(packed.device());  // the only tensor: on CUDA
  const PackedInfo info = check_codebook_packed(packed, bits, k, "the k argument", op);  // reads the header back
  const int64_t n = info.n;
  at::Tensor idx = at::empty({n, k}, packed.options().dtype(at::kByte));
  check_launch(cuda::codebook_unpack(words(packed, info), n, k, static_cast<int>(bits), idx.data_ptr<uint8_t>(),
                                     at::cuda::getCurrentCUDAStream()),
               op);
  return idx;
}

// Checks packed_idx (its header: read back to the host) / codebook / bias against x (K = k);
// returns what the header says and sets the rows per codebook.
PackedInfo check_weight(const at::Tensor& packed, const at::Tensor& codebook, int64_t bits,
                        const std::optional<at::Tensor>& bias, int64_t k, const at::Tensor& x, int64_t* group_rows,
                        const char* op) {
  check_codebook_bits(bits, op);
  check_same_device(packed, x, op, "packed_idx");
  const PackedInfo info = check_codebook_packed(packed, bits, k, "x", op);
  *group_rows = check_codebook_weight(packed, info, codebook, bits, bias, x, op);
  return info;
}

// W [N, k] in dtype: codebook[n / group_rows, idx[n, kk]] rounded to nearest even.
at::Tensor dequantize(const at::Tensor& packed, const PackedInfo& info, const at::Tensor& codebook, int64_t bits,
                      int64_t k, int64_t group_rows, const at::Tensor& x, const char* op) {
  const at::Tensor cb = codebook.contiguous();
  at::Tensor w = at::empty({info.n, k}, x.options());
  check_launch(cuda::codebook_dequantize(words(packed, info), info.n, k, static_cast<int>(bits), cb.data_ptr<float>(),
                                         group_rows, x_type(x, op), w.data_ptr(), at::cuda::getCurrentCUDAStream()),
               op);
  return w;
}

at::Tensor codebook_linear_cuda(const at::Tensor& x, const at::Tensor& packed_idx, const at::Tensor& codebook,
                                int64_t bits, const std::optional<at::Tensor>& bias) {
  constexpr const char* op = "codebook_linear";
  const cuda::CodebookType type = x_type(x, op);
  check_dim(x, 2, op, "x");
  check_cuda_tensor(x, op, "x");
  TORCH_CHECK(x.size(1) > 0, op, ": x must have K > 0 columns, got shape ", x.sizes());
  const int64_t m = x.size(0), k = x.size(1);
  const c10::cuda::CUDAGuard guard(x.device());
  int64_t group_rows = 0;
  const PackedInfo info = check_weight(packed_idx, codebook, bits, bias, k, x, &group_rows, op);
  const int64_t n = info.n;
  if (m > cuda::kCodebookGemvMaxRows) {
    const at::Tensor w = dequantize(packed_idx, info, codebook, bits, k, group_rows, x, op);
    return bias.has_value() ? at::addmm(bias->to(x.scalar_type()), x, w.t()) : at::mm(x, w.t());
  }
  at::Tensor out = at::empty({m, n}, x.options());
  if (m == 0) return out;
  // The GEMV reads x in 16-byte runs: rows must start 16-byte aligned. Otherwise (an odd K with
  // several rows, a sliced or transposed x) x is copied into rows padded to a multiple of 16 bytes
  // (at most 8 rows: a few kilobytes).
  const int64_t elem = x.element_size();
  const bool unit_stride = x.stride(1) == 1 || k == 1;
  const int64_t ldx = m > 1 ? x.stride(0) : k;
  const bool aligned =
      reinterpret_cast<uintptr_t>(x.data_ptr()) % 16 == 0 && (m == 1 || (ldx >= k && (ldx * elem) % 16 == 0));
  at::Tensor xc = x;
  int64_t xc_ld = ldx;
  if (!(unit_stride && aligned)) {
    const int64_t padded = (k * elem + 15) / 16 * 16 / elem;
    at::Tensor buffer = at::empty({m, padded}, x.options());
    xc = buffer.narrow(1, 0, k);
    xc.copy_(x);
    xc_ld = padded;
  }
  const at::Tensor cb = codebook.contiguous();
  std::optional<at::Tensor> bias_c;
  if (bias.has_value()) bias_c = bias->contiguous();
  cuda::CodebookGemvParams p;
  p.x = xc.data_ptr();
  p.m = m;
  p.k = k;
  p.ldx = xc_ld;
  p.type = type;
  p.packed = words(packed_idx, info);
  p.n = n;
  p.kw = packed_idx.size(1);
  p.bits = static_cast<int>(bits);
  p.codebook = cb.data_ptr<float>();
  p.group_rows = group_rows;
  p.bias = bias_c.has_value() ? bias_c->data_ptr<float>() : nullptr;
  p.out = out.data_ptr();
  p.ldo = n;
  check_launch(cuda::codebook_gemv(p, at::cuda::getCurrentCUDAStream()), op);
  return out;
}

at::Tensor codebook_conv2d_cuda(const at::Tensor& x, const at::Tensor& packed_idx, const at::Tensor& codebook,
                                int64_t bits, const std::optional<at::Tensor>& bias, at::IntArrayRef kernel_size,
                                at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation,
                                int64_t groups) {
  constexpr const char* op = "codebook_conv2d";
  (void)x_type(x, op);
  check_dim(x, 4, op, "x");
  check_cuda_tensor(x, op, "x");
  const c10::cuda::CUDAGuard guard(x.device());
  check_codebook_bits(bits, op);
  check_same_device(packed_idx, x, op, "packed_idx");
  const PackedInfo info = check_codebook_packed(packed_idx, bits, -1, nullptr, op);  // reads the header back
  const CodebookConvShape s = check_codebook_conv(x, info, kernel_size, stride, padding, dilation, groups, op);
  PackedExpect expect;
  expect.param = bits;
  check_packed_k(info, expect, s.k, "x and kernel_size: C/groups * kh * kw", op, "packed_idx");
  const int64_t group_rows = check_codebook_weight(packed_idx, info, codebook, bits, bias, x, op);
  const at::Tensor w = dequantize(packed_idx, info, codebook, bits, s.k, group_rows, x, op)
                           .view({s.out_channels, s.channels / groups, s.ks[0], s.ks[1]});
  std::optional<at::Tensor> b;
  if (bias.has_value()) b = bias->to(x.scalar_type());
  const at::Tensor y = at::_convolution(x, w, b, {s.st[0], s.st[1]}, {s.pd[0], s.pd[1]}, {s.dl[0], s.dl[1]},
                                        /*transposed=*/false, {0, 0}, groups, /*benchmark=*/false,
                                        /*deterministic=*/true, /*cudnn_enabled=*/true, /*allow_tf32=*/false);
  return y.contiguous();
}

}  // namespace
}  // namespace ck::ops

TORCH_LIBRARY_IMPL(compress_kernels, CUDA, m) {
  m.impl("codebook_pack", &ck::ops::codebook_pack_cuda);
  m.impl("codebook_unpack", &ck::ops::codebook_unpack_cuda);
  m.impl("codebook_linear", &ck::ops::codebook_linear_cuda);
  m.impl("codebook_conv2d", &ck::ops::codebook_conv2d_cuda);
}
