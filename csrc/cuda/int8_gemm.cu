// int8 GEMM / linear on CUDA: the weight packer and the GEMM launcher (kernel in int8_mma.cuh).
#include "int8_gemm.cuh"

#include <cuda_runtime.h>

#include <cstdint>

#include "int8_mma.cuh"

namespace ck::cuda {
namespace {

constexpr int kPackThreads = 256;

// One thread per packed data word of every group: word w of group g (rows [g * n_group, ...)) holds
// the bytes w_row[4 q .. 4 q + 3] (zero past k) of row first + i, where w = first * kq + q * rows + i
// for the block of 16 rows starting at `first` (rows = min(16, n_group - first)).
__global__ void pack_words_kernel(const int8_t* __restrict__ w, int64_t n_group, int64_t k, int64_t ldw, int64_t groups,
                                  int32_t* __restrict__ out) {
  const int64_t kq = (k + 3) / 4, words_per_row = kq + 2;
  const int64_t total = groups * n_group * kq;
  for (int64_t idx = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; idx < total;
       idx += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t g = idx / (n_group * kq);
    const int64_t word = idx - g * n_group * kq;
    const int64_t first = word / (16 * kq) * 16;
    const int64_t rows = n_group - first < 16 ? n_group - first : 16;
    const int64_t rem = word - first * kq;
    const int64_t q = rem / rows, i = rem - q * rows;
    const int8_t* src = w + (g * n_group + first + i) * ldw;
    uint32_t v = 0;
    for (int j = 0; j < 4; ++j) {
      const int64_t kk = 4 * q + j;
      const uint32_t byte = kk < k ? static_cast<uint32_t>(static_cast<uint8_t>(src[kk])) : 0u;
      v |= byte << (8 * j);  // little-endian: byte j of the word is k = 4 q + j, as on the CPU
    }
    out[g * n_group * words_per_row + word] = static_cast<int32_t>(v);
  }
}

// One warp per row: row_sum (sum_k w[row, k], exact in int32 for any k the ops accept) and k.
__global__ void pack_trailer_kernel(const int8_t* __restrict__ w, int64_t n_group, int64_t k, int64_t ldw,
                                    int64_t groups, int32_t* __restrict__ out) {
  const int64_t kq = (k + 3) / 4, words_per_row = kq + 2;
  const int lane = threadIdx.x & 31;
  const int64_t row = (blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x) / 32;
  if (row >= groups * n_group) return;
  const int64_t g = row / n_group, r = row - g * n_group;
  const int8_t* src = w + row * ldw;
  int32_t s = 0;
  for (int64_t kk = lane; kk < k; kk += 32) s += src[kk];
  for (int offset = 16; offset > 0; offset >>= 1) s += __shfl_xor_sync(0xFFFFFFFFu, s, offset);
  if (lane == 0) {
    int32_t* group_out = out + g * n_group * words_per_row;
    group_out[n_group * kq + r] = s;
    group_out[n_group * kq + n_group + r] = static_cast<int32_t>(k);
  }
}

int grid_for(int64_t work, int threads) {
  const int64_t blocks = (work + threads - 1) / threads;
  return static_cast<int>(blocks < 65535 ? (blocks > 0 ? blocks : 1) : 65535);
}

}  // namespace

cudaError_t int8_pack_weight(const int8_t* w, int64_t n, int64_t k, int64_t ldw, int64_t groups, int32_t* out,
                             cudaStream_t stream) {
  if (n <= 0 || k <= 0 || groups <= 0 || n % groups != 0 || ldw < k) return cudaErrorInvalidValue;
  const int64_t n_group = n / groups;
  const int64_t words = n * ((k + 3) / 4);
  pack_words_kernel<<<grid_for(words, kPackThreads), kPackThreads, 0, stream>>>(w, n_group, k, ldw, groups, out);
  const int64_t rows_blocks = (n * 32 + kPackThreads - 1) / kPackThreads;
  pack_trailer_kernel<<<static_cast<unsigned>(rows_blocks), kPackThreads, 0, stream>>>(w, n_group, k, ldw, groups, out);
  return cudaGetLastError();
}

cudaError_t int8_gemm(const Int8GemmParams& p, cudaStream_t stream) {
  if (p.m < 0 || p.n <= 0 || p.k <= 0 || p.lda < p.k || p.ldo < p.n || !int8_epilogue_valid(p.epilogue)) {
    return cudaErrorInvalidValue;
  }
  if (p.m == 0) return cudaSuccess;  // (empty tensors may have null data pointers)
  if (p.a == nullptr || p.w_packed == nullptr || p.out == nullptr) return cudaErrorInvalidValue;
  detail::KernelArgs args;
  args.a = p.a;
  args.m = p.m;
  args.lda = p.lda;
  args.a_zero_point = p.a_zero_point;
  args.w_packed = p.w_packed;
  args.n = p.n;
  args.k = p.k;
  args.words_per_row = int8_words_per_row(p.k);
  args.ep = p.epilogue;
  args.out = p.out;
  args.ldo = p.ldo;
  const detail::DeviceInfo device = detail::current_device_info();
  // The widest copy every A row allows: 16 bytes when rows start 16-byte aligned, else 4, else 1.
  const uintptr_t base = reinterpret_cast<uintptr_t>(p.a);
  if (base % 16 == 0 && p.lda % 16 == 0) {
    return detail::launch_gemm_vec<detail::MatrixLoader, 16>(args, p.a_signed, 1, device, stream);
  }
  if (base % 4 == 0 && p.lda % 4 == 0) {
    return detail::launch_gemm_vec<detail::MatrixLoader, 4>(args, p.a_signed, 1, device, stream);
  }
  return detail::launch_gemm_vec<detail::MatrixLoader, 1>(args, p.a_signed, 1, device, stream);
}

}  // namespace ck::cuda
