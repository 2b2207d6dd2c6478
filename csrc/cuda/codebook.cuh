// Codebook (k-means weight sharing) kernels on CUDA (torch-free): bit-packing, unpacking, the fused
// lookup GEMV for small batches, and the dense decode used by the large-batch and conv2d paths.
//
// Every kernel reads the packed layout of csrc/include/ck/bitpack.h, the same int32 [n, kw] tensor
// codebook_pack writes on the CPU (so a module's buffers work unchanged after .to("cuda")):
//   c = 32 / bits indices per 32-bit word (index j at bits [j*bits, j*bits + bits)), kw = ceil(k / c)
//   words per row, rows interleaved in blocks of 16: word g of row 16*b + i at word offset
//   16*b*kw + g*R + i, R = rows in that block (16, or n % 16 for the last one).
//
// Numerics. W[n, k] = codebook[n / group_rows, idx[n, k]] (fp32). codebook_gemv computes, per
// output, an fp32 sum of the exact products x[m, k] * W[n, k] (x converted exactly to fp32) with
// fmaf in an order fixed by the launch shape (not the CPU's order, so the results agree with the
// CPU op within the dot-product bound (K + 1) * 2^-24 * (sum_k |x w| + |bias|), not bit for bit),
// adds bias[n] in fp32, then rounds once (round to nearest even) to the output type. The result is
// the same for every run on the same device and shape (no atomics).
//
// Every launcher returns cudaErrorInvalidValue for arguments it refuses (the torch glue checks them
// first with messages) and otherwise cudaGetLastError() after the launch.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace ck::cuda {

// Element type of x, the output (codebook_gemv) or the decoded weight (codebook_dequantize).
enum class CodebookType : int { kFloat32 = 0, kFloat16 = 1, kBFloat16 = 2 };

// Batch rows the GEMV kernel takes in one launch; larger batches go through the dense path.
constexpr int64_t kCodebookGemvMaxRows = 8;

struct CodebookGemvParams {
  // [m, k] of `type`; base address and row stride (ldx elements) 16-byte aligned, so that a run of
  // x[m, g*c .. g*c + c - 1] can be read with the widest load its byte size allows.
  const void* x = nullptr;
  int64_t m = 0, k = 0, ldx = 0;
  CodebookType type = CodebookType::kFloat32;
  const uint32_t* packed = nullptr;  // ck/bitpack.h layout, [n, kw]; any 4-byte aligned address
  int64_t n = 0, kw = 0;
  int bits = 0;                  // 1 .. 8
  const float* codebook = nullptr;  // [groups, 2^bits] contiguous
  int64_t group_rows = 0;        // output rows per codebook; divides n
  const float* bias = nullptr;   // [n] or null
  void* out = nullptr;           // out[m, col] of `type`, row stride ldo elements
  int64_t ldo = 0;
};

// y[m, n] = sum_k x[m, k] * W[n, k] (+ bias[n]) for 1 <= m <= kCodebookGemvMaxRows.
cudaError_t codebook_gemv(const CodebookGemvParams& p, cudaStream_t stream);

// w[r, kk] = codebook[r / group_rows, idx[r, kk]] rounded (nearest even) to `type`; w is [n, k]
// contiguous. Used by the large-batch linear (then cuBLAS) and by conv2d (then cuDNN).
cudaError_t codebook_dequantize(const uint32_t* packed, int64_t n, int64_t k, int bits, const float* codebook,
                                int64_t group_rows, CodebookType type, void* w, cudaStream_t stream);

// idx [n, k] uint8 contiguous (values < 2^bits, checked by the caller) -> packed [n, kw].
cudaError_t codebook_pack(const uint8_t* idx, int64_t n, int64_t k, int bits, uint32_t* packed, cudaStream_t stream);
// Inverse of codebook_pack: packed [n, kw] -> idx [n, k] uint8 contiguous.
cudaError_t codebook_unpack(const uint32_t* packed, int64_t n, int64_t k, int bits, uint8_t* idx, cudaStream_t stream);

}  // namespace ck::cuda
