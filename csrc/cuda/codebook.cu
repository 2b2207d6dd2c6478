// Codebook kernels on CUDA: the fused-lookup GEMV for batches of 1 .. 8 rows, the dense decode,
// and pack / unpack. Layout and numerics: codebook.cuh and ck/bitpack.h.
//
// GEMV (codebook_gemv_kernel). Small batches are bound by the bytes of packed indices read (4-bit
// indices are a quarter of an fp16 weight), so the kernel streams them once with 128-bit coalesced
// loads and does everything else from registers and shared memory:
//   * one CTA per block of 16 output rows (the packed layout's interleave unit), its warps splitting
//     the reduction dimension: a full block's words form a [kw][16] array (word g of row i at
//     16*g + i), read in steps of 8 word columns = 512 contiguous bytes; step t belongs to warp
//     t % warps, and lane l loads the 16 bytes of column 8t + l/4, rows 4(l%4) .. 4(l%4) + 3;
//   * the codebooks of the (at most 16) groups the block's rows belong to sit in shared memory:
//     a lookup is one shared load, and 16-entry tables (4 bits) occupy 16 distinct banks;
//   * x (1 .. 8 rows) is read straight from global memory through the read-only cache: each x
//     element is needed by exactly one lane quad per CTA, and x is small enough to stay in L2 for
//     all CTAs. A lane reads the x run of its word column once and uses it for its 4 rows;
//   * fp32 accumulation in registers (acc[m][s]: batch row m, output row 4(l%4) + s), reduced over
//     the 8 lanes of a quad position with xor shuffles, then over the warps in warp order in shared
//     memory; bias added last, one rounding to the output type. No atomics: deterministic.
// The last block of n % 16 rows (word g of row i at g*R + i) and packed tensors that are not
// 16-byte aligned take a 4-byte-load path (lane l: row l % 16, column 2t + l/16).
#include "codebook.cuh"

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>

#include "ck/bitpack.h"

namespace ck::cuda {
namespace {

constexpr int kRowsPerBlock = 16;   // ck::bitpack::kBlockRows: the packed interleave unit
constexpr int kGemvMaxWarps = 8;    // warps per CTA splitting K: enough loads in flight per SM
constexpr int kColsPerStep = 8;     // word columns per 512-byte warp load (32 lanes x 16 bytes)
static_assert(kRowsPerBlock == ck::bitpack::kBlockRows, "the GEMV tiles follow the packed block size");

// Element types: raw bits in registers, exact conversion to fp32, round-to-nearest-even back.
struct F32 {
  using Bits = uint32_t;
  __device__ __forceinline__ static float to_float(uint32_t b) { return __uint_as_float(b); }
  __device__ __forceinline__ static Bits from_float(float f) { return __float_as_uint(f); }
};
struct F16 {
  using Bits = uint16_t;
  __device__ __forceinline__ static float to_float(uint32_t b) {
    return __half2float(__ushort_as_half(static_cast<unsigned short>(b)));
  }
  __device__ __forceinline__ static Bits from_float(float f) { return __half_as_ushort(__float2half_rn(f)); }
};
struct BF16 {
  using Bits = uint16_t;
  __device__ __forceinline__ static float to_float(uint32_t b) { return __uint_as_float(b << 16); }
  __device__ __forceinline__ static Bits from_float(float f) { return __bfloat16_as_ushort(__float2bfloat16_rn(f)); }
};

// The x values a lane holds per batch row at a time: the largest divisor of c = 32 / bits that is
// <= 8 (c = 32, 16, 10, 8, 6, 5, 4 -> 8, 8, 5, 8, 6, 5, 4), so a word column is a whole number of runs
// and the registers stay bounded at 8 rows x 8 values.
__host__ __device__ constexpr int run_length(int c) {
  int d = 8;
  while (c % d != 0) --d;
  return d;
}

// kVec bytes (4, 8 or 16) from a kVec-aligned global address through the read-only cache.
template <int kVec>
__device__ __forceinline__ void load_words(const void* src, uint32_t (&u)[kVec / 4]) {
  if constexpr (kVec == 16) {
    const uint4 v = __ldg(static_cast<const uint4*>(src));
    u[0] = v.x, u[1] = v.y, u[2] = v.z, u[3] = v.w;
  } else if constexpr (kVec == 8) {
    const uint2 v = __ldg(static_cast<const uint2*>(src));
    u[0] = v.x, u[1] = v.y;
  } else {
    u[0] = __ldg(static_cast<const unsigned int*>(src));
  }
}

// v[0 .. kJ-1] = x[0 .. kJ-1] as fp32. p is aligned to gcd(kJ * element size, 16) bytes (the runs
// start at multiples of kJ elements of a 16-byte aligned row), so the widest load that divides the
// run's bytes is used: fp32 runs of 8 -> two 16-byte loads, fp16 runs of 8 -> one, runs of 5 fp32
// -> five 4-byte loads, runs of 5 fp16 -> five 2-byte loads.
template <typename T, int kJ>
__device__ __forceinline__ void load_x(const typename T::Bits* p, float (&v)[kJ]) {
  constexpr int kElem = static_cast<int>(sizeof(typename T::Bits));
  constexpr int kBytes = kJ * kElem;
  constexpr int kVec = kBytes % 16 == 0 ? 16 : kBytes % 8 == 0 ? 8 : kBytes % 4 == 0 ? 4 : kElem;
  if constexpr (kVec < 4) {
#pragma unroll
    for (int j = 0; j < kJ; ++j) v[j] = T::to_float(__ldg(reinterpret_cast<const unsigned short*>(p) + j));
  } else {
    constexpr int kPer = kVec / kElem;  // elements per load
#pragma unroll
    for (int i = 0; i < kJ / kPer; ++i) {
      uint32_t u[kVec / 4];
      load_words<kVec>(p + i * kPer, u);
#pragma unroll
      for (int e = 0; e < kPer; ++e) {
        if constexpr (kElem == 4) {
          v[i * kPer + e] = T::to_float(u[e]);
        } else {  // little endian: element 2q in the low half of word q
          v[i * kPer + e] = T::to_float((u[e / 2] >> (16 * (e % 2))) & 0xffffu);
        }
      }
    }
  }
}

// Adds the products of one word column g (indices k = g*c .. g*c + c - 1) of kSlots output rows to
// acc[m][s]. w[s]: the packed word of slot s; cbo[s]: the offset of its row's codebook in cb.
template <typename T, int kBits, int kRows, int kSlots>
__device__ __forceinline__ void accumulate_column(const uint32_t (&w)[kSlots], int64_t g, const int (&cbo)[kSlots],
                                                  const float* cb, const typename T::Bits* x,
                                                  const CodebookGemvParams& p, float (&acc)[kRows][4]) {
  constexpr int kC = 32 / kBits;
  constexpr int kJ = run_length(kC);
  constexpr uint32_t kMask = (1u << kBits) - 1u;
  const int64_t k0 = g * kC;
  if (k0 + kC <= p.k) {
#pragma unroll
    for (int q = 0; q < kC / kJ; ++q) {
      float xv[kRows][kJ];
#pragma unroll
      for (int m = 0; m < kRows; ++m) {
        if (m < p.m) {
          load_x<T, kJ>(x + m * p.ldx + k0 + q * kJ, xv[m]);
        } else {
#pragma unroll
          for (int j = 0; j < kJ; ++j) xv[m][j] = 0.0f;  // rows past the batch: computed, never stored
        }
      }
#pragma unroll
      for (int j = 0; j < kJ; ++j) {
#pragma unroll
        for (int s = 0; s < kSlots; ++s) {
          const float wv = cb[cbo[s] + ((w[s] >> ((q * kJ + j) * kBits)) & kMask)];
#pragma unroll
          for (int m = 0; m < kRows; ++m) acc[m][s] = fmaf(xv[m][j], wv, acc[m][s]);
        }
      }
    }
  } else {
    // The last column holds k - k0 < c indices; its slots beyond k (zero indices) are skipped, and
    // x is read one element at a time so nothing past the row's end is touched.
    const int count = static_cast<int>(p.k - k0);
#pragma unroll
    for (int j = 0; j < kC; ++j) {
      if (j < count) {
        float xv[kRows];
#pragma unroll
        for (int m = 0; m < kRows; ++m) xv[m] = m < p.m ? T::to_float(x[m * p.ldx + k0 + j]) : 0.0f;
#pragma unroll
        for (int s = 0; s < kSlots; ++s) {
          const float wv = cb[cbo[s] + ((w[s] >> (j * kBits)) & kMask)];
#pragma unroll
          for (int m = 0; m < kRows; ++m) acc[m][s] = fmaf(xv[m], wv, acc[m][s]);
        }
      }
    }
  }
}

// T: x / output type. kBits: index width (fixes c, the shifts and the table size at compile time).
// kRows: batch rows held in registers (1, 2, 4 or 8; p.m <= kRows, the rest computed as zeros).
template <typename T, int kBits, int kRows>
__global__ void __launch_bounds__(kGemvMaxWarps * 32)
    codebook_gemv_kernel(const CodebookGemvParams p, bool packed_aligned) {
  using Bits = typename T::Bits;
  constexpr int kEntries = 1 << kBits;
  extern __shared__ float cb_smem[];  // [groups of this block's rows][kEntries]
  __shared__ float partial[kGemvMaxWarps][kRows][kRowsPerBlock];

  const int64_t r0 = static_cast<int64_t>(blockIdx.x) * kRowsPerBlock;
  const int rows = static_cast<int>(p.n - r0 < kRowsPerBlock ? p.n - r0 : kRowsPerBlock);
  const int64_t g_lo = r0 / p.group_rows, g_hi = (r0 + rows - 1) / p.group_rows;
  const int cb_count = static_cast<int>(g_hi - g_lo + 1) * kEntries;
  for (int t = threadIdx.x; t < cb_count; t += blockDim.x) cb_smem[t] = p.codebook[g_lo * kEntries + t];
  __syncthreads();

  const Bits* x = static_cast<const Bits*>(p.x);
  const int warp = static_cast<int>(threadIdx.x / 32), lane = static_cast<int>(threadIdx.x % 32);
  const int warps = static_cast<int>(blockDim.x / 32);
  const uint32_t* block = p.packed + r0 * p.kw;  // 16 * b * kw: the block's first word
  float acc[kRows][4];
#pragma unroll
  for (int m = 0; m < kRows; ++m) acc[m][0] = acc[m][1] = acc[m][2] = acc[m][3] = 0.0f;

  if (rows == kRowsPerBlock && packed_aligned) {
    const int64_t steps = (p.kw + kColsPerStep - 1) / kColsPerStep;
    const int col = lane / 4;  // word column within the step
    int cbo[4];
#pragma unroll
    for (int s = 0; s < 4; ++s) {
      cbo[s] = static_cast<int>((r0 + 4 * (lane % 4) + s) / p.group_rows - g_lo) * kEntries;
    }
    // Word 128t + 4l .. +3 of the block = column 8t + l/4, rows 4(l%4) .. +3. Streaming loads (the
    // indices are read once); a column past kw (last step) loads nothing.
    const uint4* src = reinterpret_cast<const uint4*>(block);
    auto load = [&](int64_t t) {
      uint4 v = make_uint4(0u, 0u, 0u, 0u);
      if (t < steps && kColsPerStep * t + col < p.kw) v = __ldcs(src + 32 * t + lane);
      return v;
    };
    uint4 cur = load(warp);
    for (int64_t t = warp; t < steps; t += warps) {
      const uint4 next = load(t + warps);  // in flight while this step computes
      const int64_t g = kColsPerStep * t + col;
      if (g < p.kw) {
        const uint32_t w[4] = {cur.x, cur.y, cur.z, cur.w};
        accumulate_column<T, kBits, kRows, 4>(w, g, cbo, cb_smem, x, p, acc);
      }
      cur = next;
    }
    // Lanes l, l^4, ..., l^28 hold the same 4 rows: an xor butterfly gives every one of them the
    // same sum (each level adds two equal pairs, commutatively), lanes 0..3 store it.
#pragma unroll
    for (int m = 0; m < kRows; ++m) {
#pragma unroll
      for (int s = 0; s < 4; ++s) {
        float v = acc[m][s];
        v += __shfl_xor_sync(0xffffffffu, v, 4);
        v += __shfl_xor_sync(0xffffffffu, v, 8);
        v += __shfl_xor_sync(0xffffffffu, v, 16);
        if (lane < 4) partial[warp][m][4 * lane + s] = v;
      }
    }
  } else {
    // Word g of row i at g * rows + i: lane l takes row l % 16 of column 2t + l/16.
    const int i = lane % kRowsPerBlock;
    const int64_t half = lane / kRowsPerBlock;
    const int64_t steps = (p.kw + 1) / 2;
    const int cbo[1] = {i < rows ? static_cast<int>((r0 + i) / p.group_rows - g_lo) * kEntries : 0};
    for (int64_t t = warp; t < steps; t += warps) {
      const int64_t g = 2 * t + half;
      if (i < rows && g < p.kw) {
        const uint32_t w[1] = {__ldcs(block + g * rows + i)};
        accumulate_column<T, kBits, kRows, 1>(w, g, cbo, cb_smem, x, p, acc);
      }
    }
#pragma unroll
    for (int m = 0; m < kRows; ++m) {
      float v = acc[m][0];
      v += __shfl_xor_sync(0xffffffffu, v, 16);
      if (lane < kRowsPerBlock) partial[warp][m][lane] = v;
    }
  }
  __syncthreads();

  // One thread per (batch row, output row): the warps' sums in warp order, then the bias.
  Bits* out = static_cast<Bits*>(p.out);
  for (int t = threadIdx.x; t < kRows * kRowsPerBlock; t += blockDim.x) {
    const int m = t / kRowsPerBlock, i = t % kRowsPerBlock;
    if (m < p.m && i < rows) {
      float s = partial[0][m][i];
      for (int w = 1; w < warps; ++w) s += partial[w][m][i];
      if (p.bias != nullptr) s += p.bias[r0 + i];
      out[m * p.ldo + r0 + i] = T::from_float(s);
    }
  }
}

template <typename T, int kBits, int kRows>
cudaError_t launch_gemv(const CodebookGemvParams& p, cudaStream_t stream) {
  const int64_t blocks = (p.n + kRowsPerBlock - 1) / kRowsPerBlock;
  const int64_t steps = (p.kw + kColsPerStep - 1) / kColsPerStep;
  const int warps = static_cast<int>(std::min<int64_t>(std::max<int64_t>(steps, 1), kGemvMaxWarps));
  // 16 consecutive rows meet at most floor(15 / group_rows) + 2 groups (and at most 16, and G).
  const int64_t groups = std::min({15 / p.group_rows + 2, int64_t{kRowsPerBlock}, p.n / p.group_rows});
  const size_t smem = static_cast<size_t>(groups << kBits) * sizeof(float);
  const bool aligned = reinterpret_cast<uintptr_t>(p.packed) % 16 == 0;
  codebook_gemv_kernel<T, kBits, kRows>
      <<<dim3(static_cast<unsigned>(blocks)), dim3(static_cast<unsigned>(warps * 32)), smem, stream>>>(p, aligned);
  return cudaGetLastError();
}

template <typename T, int kBits>
cudaError_t gemv_rows(const CodebookGemvParams& p, cudaStream_t stream) {
  if (p.m <= 1) return launch_gemv<T, kBits, 1>(p, stream);
  if (p.m <= 2) return launch_gemv<T, kBits, 2>(p, stream);
  if (p.m <= 4) return launch_gemv<T, kBits, 4>(p, stream);
  return launch_gemv<T, kBits, 8>(p, stream);
}

template <typename T>
cudaError_t gemv_bits(const CodebookGemvParams& p, cudaStream_t stream) {
  switch (p.bits) {
    case 1:
      return gemv_rows<T, 1>(p, stream);
    case 2:
      return gemv_rows<T, 2>(p, stream);
    case 3:
      return gemv_rows<T, 3>(p, stream);
    case 4:
      return gemv_rows<T, 4>(p, stream);
    case 5:
      return gemv_rows<T, 5>(p, stream);
    case 6:
      return gemv_rows<T, 6>(p, stream);
    case 7:
      return gemv_rows<T, 7>(p, stream);
    default:
      return gemv_rows<T, 8>(p, stream);
  }
}

// ---------------------------------------------------------------- dense decode, pack, unpack

constexpr int kThreads = 256;
constexpr int64_t kMaxGridY = 65535;

// One CTA row per output row r (blockIdx.x), its k split over blockIdx.y and the threads; the
// writes of consecutive threads are consecutive elements of the row.
template <typename T, int kBits>
__global__ void codebook_dequantize_kernel(const uint32_t* __restrict__ packed, int64_t n, int64_t k, int64_t kw,
                                           const float* __restrict__ codebook, int64_t group_rows,
                                           typename T::Bits* __restrict__ w) {
  constexpr int kC = 32 / kBits;
  constexpr uint32_t kMask = (1u << kBits) - 1u;
  const int64_t r = blockIdx.x;
  const int64_t b = r / kRowsPerBlock, i = r - b * kRowsPerBlock;
  const int64_t rows = n - b * kRowsPerBlock < kRowsPerBlock ? n - b * kRowsPerBlock : kRowsPerBlock;
  const uint32_t* words = packed + b * kRowsPerBlock * kw + i;  // word g of row r at words[g * rows]
  const float* cb = codebook + (r / group_rows) * (int64_t{1} << kBits);
  for (int64_t kk = static_cast<int64_t>(blockIdx.y) * blockDim.x + threadIdx.x; kk < k;
       kk += static_cast<int64_t>(gridDim.y) * blockDim.x) {
    const int64_t g = kk / kC;
    const int j = static_cast<int>(kk - g * kC);
    const uint32_t idx = (__ldg(words + g * rows) >> (j * kBits)) & kMask;
    w[r * k + kk] = T::from_float(__ldg(cb + idx));
  }
}

template <typename T>
cudaError_t dequantize_bits(const uint32_t* packed, int64_t n, int64_t k, int bits, const float* codebook,
                            int64_t group_rows, void* w, cudaStream_t stream) {
  const dim3 grid(static_cast<unsigned>(n),
                  static_cast<unsigned>(std::min<int64_t>((k + kThreads - 1) / kThreads, kMaxGridY)));
  const int64_t kw = ck::bitpack::words_per_row(k, bits);
  auto* out = static_cast<typename T::Bits*>(w);
#define CK_DEQUANT_CASE(B)                                                                                        \
  case B:                                                                                                         \
    codebook_dequantize_kernel<T, B><<<grid, kThreads, 0, stream>>>(packed, n, k, kw, codebook, group_rows, out); \
    break;
  switch (bits) {
    CK_DEQUANT_CASE(1)
    CK_DEQUANT_CASE(2)
    CK_DEQUANT_CASE(3)
    CK_DEQUANT_CASE(4)
    CK_DEQUANT_CASE(5)
    CK_DEQUANT_CASE(6)
    CK_DEQUANT_CASE(7)
    default:
      CK_DEQUANT_CASE(8)
  }
#undef CK_DEQUANT_CASE
  return cudaGetLastError();
}

// One thread per packed word (flat offset q of [n, kw]): block b = q / (16 kw); within it the word
// column g = (q - 16 b kw) / R and row i = the remainder (the inverse of ck::bitpack::word_offset).
__global__ void codebook_pack_kernel(const uint8_t* __restrict__ idx, int64_t n, int64_t k, int64_t kw, int bits,
                                     uint32_t* __restrict__ packed) {
  const int c = 32 / bits;
  const int64_t total = n * kw;
  for (int64_t q = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; q < total;
       q += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t b = q / (kRowsPerBlock * kw);
    const int64_t in_block = q - b * kRowsPerBlock * kw;
    const int64_t rows = ck::bitpack::rows_in_block(n, b);
    const int64_t g = in_block / rows;
    const int64_t r = b * kRowsPerBlock + (in_block - g * rows);
    const int64_t k0 = g * c;
    const int64_t count = k - k0 < c ? k - k0 : c;
    packed[q] = ck::bitpack::pack_word(idx + r * k + k0, count, bits);  // slots past k stay zero
  }
}

__global__ void codebook_unpack_kernel(const uint32_t* __restrict__ packed, int64_t n, int64_t k, int64_t kw, int bits,
                                       uint8_t* __restrict__ idx) {
  const int64_t r = blockIdx.x;
  for (int64_t kk = static_cast<int64_t>(blockIdx.y) * blockDim.x + threadIdx.x; kk < k;
       kk += static_cast<int64_t>(gridDim.y) * blockDim.x) {
    idx[r * k + kk] = static_cast<uint8_t>(ck::bitpack::get_index(packed, n, kw, bits, r, kk));
  }
}

bool shape_ok(int64_t n, int64_t k, int bits) {
  // blockIdx.x indexes rows (dequantize, unpack): n < 2^31.
  return n > 0 && k > 0 && bits >= 1 && bits <= 8 && n <= int64_t{0x7fffffff};
}

}  // namespace

cudaError_t codebook_gemv(const CodebookGemvParams& p, cudaStream_t stream) {
  if (!shape_ok(p.n, p.k, p.bits) || p.m < 1 || p.m > kCodebookGemvMaxRows || p.x == nullptr || p.packed == nullptr ||
      p.codebook == nullptr || p.out == nullptr || p.group_rows < 1 || p.n % p.group_rows != 0 ||
      p.kw != ck::bitpack::words_per_row(p.k, p.bits) || p.ldo < p.n ||
      reinterpret_cast<uintptr_t>(p.packed) % 4 != 0) {
    return cudaErrorInvalidValue;
  }
  // x rows 16-byte aligned (the row stride only matters with more than one row).
  const int64_t elem = p.type == CodebookType::kFloat32 ? 4 : 2;
  if (reinterpret_cast<uintptr_t>(p.x) % 16 != 0 || (p.m > 1 && (p.ldx < p.k || (p.ldx * elem) % 16 != 0))) {
    return cudaErrorInvalidValue;
  }
  switch (p.type) {
    case CodebookType::kFloat32:
      return gemv_bits<F32>(p, stream);
    case CodebookType::kFloat16:
      return gemv_bits<F16>(p, stream);
    case CodebookType::kBFloat16:
      return gemv_bits<BF16>(p, stream);
  }
  return cudaErrorInvalidValue;
}

cudaError_t codebook_dequantize(const uint32_t* packed, int64_t n, int64_t k, int bits, const float* codebook,
                                int64_t group_rows, CodebookType type, void* w, cudaStream_t stream) {
  if (!shape_ok(n, k, bits) || group_rows < 1 || n % group_rows != 0 || packed == nullptr || codebook == nullptr ||
      w == nullptr) {
    return cudaErrorInvalidValue;
  }
  switch (type) {
    case CodebookType::kFloat32:
      return dequantize_bits<F32>(packed, n, k, bits, codebook, group_rows, w, stream);
    case CodebookType::kFloat16:
      return dequantize_bits<F16>(packed, n, k, bits, codebook, group_rows, w, stream);
    case CodebookType::kBFloat16:
      return dequantize_bits<BF16>(packed, n, k, bits, codebook, group_rows, w, stream);
  }
  return cudaErrorInvalidValue;
}

cudaError_t codebook_pack(const uint8_t* idx, int64_t n, int64_t k, int bits, uint32_t* packed, cudaStream_t stream) {
  if (!shape_ok(n, k, bits) || idx == nullptr || packed == nullptr) return cudaErrorInvalidValue;
  const int64_t kw = ck::bitpack::words_per_row(k, bits);
  const int64_t blocks = std::min<int64_t>((n * kw + kThreads - 1) / kThreads, int64_t{1} << 20);
  codebook_pack_kernel<<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(idx, n, k, kw, bits, packed);
  return cudaGetLastError();
}

cudaError_t codebook_unpack(const uint32_t* packed, int64_t n, int64_t k, int bits, uint8_t* idx, cudaStream_t stream) {
  if (!shape_ok(n, k, bits) || idx == nullptr || packed == nullptr) return cudaErrorInvalidValue;
  const int64_t kw = ck::bitpack::words_per_row(k, bits);
  const dim3 grid(static_cast<unsigned>(n),
                  static_cast<unsigned>(std::min<int64_t>((k + kThreads - 1) / kThreads, kMaxGridY)));
  codebook_unpack_kernel<<<grid, kThreads, 0, stream>>>(packed, n, k, kw, bits, idx);
  return cudaGetLastError();
}

}  // namespace ck::cuda
