// 2:4 semi-structured sparse kernels on CUDA (torch-free): compression / decompression in our
// layout (csrc/include/ck/sparse24.h) and the sparse matmul on sparse tensor cores (mma.sp, sm_80+).
//
// The matmul reads the weight in the layout of PyTorch's CUTLASS semi-structured tensors
// (torch.sparse.to_sparse_semi_structured with SparseSemiStructuredTensor._FORCE_CUTLASS, and
// compress_kernels.ops.sparse24_to_cutlass / sparse24_cuda_pack), so their `packed` / `meta` tensors
// are fed as they are:
//
//   values [Np, Kp / 2] row-major, the two kept values of every group of four (lower position first);
//   meta   the 2-bit positions, one nibble per group (idx0 | idx1 << 2), packed low nibble first into
//          int16 words of 4 groups (fp16 / bf16) or int32 words of 8 groups (int8), and those words
//          reordered by CUTLASS's ColumnMajorInterleaved<2> + 2x2 swizzle (reorder_meta of
//          cutlass/util/host_reorder.h). Read as 32-bit words, the result is a sequence of 128-byte
//          chunks, chunk (c, R) at word 32 * (c * (Np / R_rows) + R):
//            fp16 / bf16 (R_rows = 32, c = the 32-wide k block): word 4 * g + t of the chunk holds,
//              for rows r = 32 R + g + 16 * (t >> 1): low 16 bits = row r, high 16 bits = row r + 8,
//              of k 32 c + 16 * (t & 1) .. + 15 (four nibbles, lowest k first);
//            int8 (R_rows = 16, c = the 64-wide k block): word 4 * g + t holds row 16 R + g + 8 * (t & 1),
//              k 64 c + 32 * (t >> 1) .. + 31 (eight nibbles, lowest k first).
//          Those are exactly the metadata registers of mma.sp (PTX ISA "sparse matrix storage" and the
//          metadata figures of mma.m16n8k32 .f16 / mma.m16n8k64 .s8): lane l of a warp loads word l
//          of a chunk; for fp16 the chunk serves two m16n8k32 tiles (rows 0-15 with sparsity
//          selector 0: threads T0, T1 of each quad; rows 16-31 with selector 1: T2, T3), for int8 one
//          m16n8k64 tile (selector 0: all four threads).
//   Np % 32 == 0 and Kp % 32 == 0 for fp16 / bf16, Np % 16 == 0 and Kp % 64 == 0 for int8 (what
//   CUTLASS's layout can hold). x is [M, K] with Kp - K < 32 (64 for int8): the columns K .. Kp - 1
//   are read as zero (sparse24_cuda_pack pads the weight with zero values there).
//
// Every launcher returns cudaErrorInvalidValue for arguments it refuses (the torch glue checks them
// first with messages) and otherwise cudaGetLastError() after the launch.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "ck/fixedpoint.h"

namespace ck::cuda {

enum class Sparse24Type : int { kFloat16 = 0, kBFloat16 = 1 };
enum class Sparse24OutType : int { kSame = 0, kFloat32 = 1 };  // kSame: the type of x and values

// y[m, n] = sum_k W[n, k] * x[m, k] + bias[n] for m < M, n < Np: fp32 accumulation in the tensor
// cores (products exact, sums in fp32 in the hardware's order), bias added in fp32, then one
// round-to-nearest-even conversion to the output type.
struct Sparse24LinearParams {
  const void* x = nullptr;  // [m, k] of `type`, row stride ldx elements, 16-byte aligned base
  int64_t m = 0, k = 0, ldx = 0;
  Sparse24Type type = Sparse24Type::kFloat16;
  const void* values = nullptr;  // [np, kp / 2] of `type`, contiguous
  const int16_t* meta = nullptr;  // CUTLASS-reordered int16 [np, kp / 16]
  int64_t np = 0, kp = 0;
  const float* bias = nullptr;  // [np] or null
  Sparse24OutType out_type = Sparse24OutType::kSame;
  void* out = nullptr;  // [m, np] contiguous
};

// int8: acc[m, n] = sum_k W[n, k] * (x[m, k] - x_zero_point) + bias[n], computed modulo 2^32 as
// sum_k W x - x_zero_point * row_sum[n] + bias[n] (exact whenever the true sum fits int32, which the
// glue's depth check guarantees), then out = clamp(MultiplyByQuantizedMultiplier(acc, m0, shift) +
// out_zero_point, qmin, qmax) (ck/fixedpoint.h), as int8_linear and the CPU kernel compute it.
struct Sparse24Int8Params {
  const void* x = nullptr;  // [m, k] int8 (x_signed) or uint8, row stride ldx, 16-byte aligned base
  bool x_signed = true;
  int64_t m = 0, k = 0, ldx = 0;
  int32_t x_zero_point = 0;
  const int8_t* values = nullptr;  // [np, kp / 2] contiguous
  const int32_t* meta = nullptr;   // CUTLASS-reordered int32 [np, kp / 32]
  int64_t np = 0, kp = 0;
  const int32_t* row_sum = nullptr;  // [np] sum of the stored values per row; read when x_zero_point != 0
  const int32_t* bias = nullptr;     // [np] or null
  // m0 / shift from the pointers when per_channel ([np] each), else m0_scalar / shift_scalar.
  const int32_t* m0 = nullptr;
  const int32_t* shift = nullptr;
  bool per_channel = false;
  int32_t m0_scalar = 0, shift_scalar = 0;
  int32_t out_zero_point = 0, qmin = -128, qmax = 127;
  Rounding rounding = Rounding::kDouble;
  int out_bytes = 1;  // 1: int8 (out_signed) or uint8; 4: int32
  bool out_signed = true;
  void* out = nullptr;  // [m, np] contiguous
};

// Rows and k of CUTLASS's metadata layout: Np and Kp must be multiples of these.
constexpr int64_t kSparse24RowMultiple16 = 32, kSparse24KMultiple16 = 32;  // fp16 / bf16
constexpr int64_t kSparse24RowMultiple8 = 16, kSparse24KMultiple8 = 64;    // int8

cudaError_t sparse24_linear(const Sparse24LinearParams& p, cudaStream_t stream);
cudaError_t sparse24_int8_linear(const Sparse24Int8Params& p, cudaStream_t stream);

// Our layout (ck/sparse24.h) on the device. Elements are elem_bytes (1, 2, 4 or 8) wide; is_float
// makes -0.0 a zero (only the sign bit set), as the CPU compressor's `w == 0` does.
// compress: w [n, k] contiguous -> values [n, k / 2], meta [n, ceil(k / 8)]; *first_bad (int64, set
// to INT64_MAX by the caller) receives the smallest flat group index n * (k / 4) + g of a group with
// more than two non-zeros.
cudaError_t sparse24_compress(const void* w, int64_t n, int64_t k, int elem_bytes, bool is_float, void* values,
                              uint8_t* meta, int64_t* first_bad, cudaStream_t stream);
// decompress: values [n, k / 2] + meta -> w [n, k] contiguous; *first_bad (INT64_MAX from the caller)
// receives the smallest group index with an invalid nibble (idx0 >= idx1, or a non-zero unused
// trailing nibble); such groups are written as zeros.
cudaError_t sparse24_decompress(const void* values, const uint8_t* meta, int64_t n, int64_t k, int elem_bytes, void* w,
                                int64_t* first_bad, cudaStream_t stream);

}  // namespace ck::cuda
