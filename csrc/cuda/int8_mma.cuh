// The int8 GEMM kernel shared by int8_gemm.cu (plain [M, K] activations) and int8_conv.cu (implicit
// GEMM over NHWC activations). Internal to csrc/cuda; torch-free.
//
// Block tile kRows (rows of A: 128, or 64 when 128-row tiles would leave SMs idle) x 128 (weight
// rows n) x 64 (k), 8 warps as 2 (m) x 4 (n), each warp (kRows / 2) x 32 = (kRows / 32) x 4
// tensor-core tiles of m16n8k32. Shared memory holds kStages k-tiles, filled with cp.async (sm_80+)
// while the tensor cores work on an earlier one.
//
// Fragment layout of mma.sync.aligned.m16n8k32.row.col.s32.{s8,u8}.s8.s32 (PTX ISA, "Matrix
// fragments for mma.m16n8k32"), lane = 4 * gid + tig (gid = lane / 4 in 0..7, tig = lane % 4):
//   A (16 x 32, row-major), 4 x b32, each 4 consecutive k of one row:
//     a0 = A[gid][4 tig .. 4 tig + 3]        a1 = A[gid + 8][4 tig .. 4 tig + 3]
//     a2 = A[gid][16 + 4 tig .. + 3]         a3 = A[gid + 8][16 + 4 tig .. + 3]
//   B (32 x 8, "col": k-contiguous per column n), 2 x b32:
//     b0 = B[4 tig .. 4 tig + 3][gid]        b1 = B[16 + 4 tig .. + 3][gid]
//   C / D (16 x 8 int32):
//     c0, c1 = C[gid][2 tig], C[gid][2 tig + 1]    c2, c3 = C[gid + 8][2 tig], C[gid + 8][2 tig + 1]
// A b32 of B is four consecutive k of one weight row: one word of the packed weight, so B fragments
// are single 32-bit shared-memory loads of words copied verbatim from int8_pack_weight's buffer.
// A fragments come from ldmatrix.x4 on the row-major A tile: matrix j of the x4 is the 8 x 16-byte
// block (rows 8 (j & 1) .. + 7, bytes 16 (j >> 1) .. + 15), and ldmatrix gives lane l the 32-bit
// word (row l / 4, bytes 4 (l % 4) .. + 3) of each matrix, i.e. exactly a0 .. a3 above.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "ck/fixedpoint.h"
#include "int8_gemm.cuh"

namespace ck::cuda::detail {

constexpr int kTileN = 128;   // weight rows per block: 8 packed blocks of 16
constexpr int kTileK = 64;    // k per stage: 16 packed words per weight row
constexpr int kThreads = 256;
constexpr int kWarpN = 32;  // per-warp columns; warps are 2 (m) x 4 (n)
constexpr int kMmaN = kWarpN / 8;  // 4 m16n8 tiles across a warp's columns
// A tile rows are padded from 64 to 80 bytes: the 8 row addresses of an ldmatrix phase then fall
// on 8 disjoint groups of 4 banks (row r starts at bank 20 r mod 32), and every row stays 16-byte
// aligned for cp.async.
constexpr int kAStrideBytes = kTileK + 16;
// B tile: per packed block of 16 weight rows, 16 k-groups g of 16 words, each g-row padded to 24
// words so that the B fragment loads (word g = 4 k-step + tig, column gid) hit bank 24 tig + gid
// mod 32: 32 distinct banks.
constexpr int kBStrideWords = 24;
constexpr int kBlocksPerTile = kTileN / 16;
constexpr int kStageBBytes = kBlocksPerTile * 16 * kBStrideWords * 4;  // 12288
__host__ __device__ constexpr int stage_a_bytes(int rows) { return rows * kAStrideBytes; }   // 10240 for 128 rows
__host__ __device__ constexpr int stage_bytes(int rows) { return stage_a_bytes(rows) + kStageBBytes; }

// Everything the kernel reads: the A source (plain matrix or conv geometry), the packed weight of
// group blockIdx.z, and the epilogue.
struct KernelArgs {
  const void* a = nullptr;
  int64_t m = 0;        // GEMM rows (output pixels for conv)
  int64_t lda = 0;      // plain A only
  int32_t a_zero_point = 0;
  // conv geometry (implicit GEMM only)
  int32_t height = 0, width = 0, in_channels = 0, group_in = 0, kernel_w = 0;
  int32_t stride_h = 1, stride_w = 1, pad_h = 0, pad_w = 0, dilation_h = 1, dilation_w = 1;
  int32_t out_h = 0, out_w = 0;
  // packed weight: group g starts at word g * n * words_per_row
  const int32_t* w_packed = nullptr;
  int64_t n = 0, k = 0, words_per_row = 0;
  Int8EpilogueParams ep{};
  void* out = nullptr;
  int64_t ldo = 0;  // output row stride (elements); group g writes columns [g * n, (g + 1) * n)
};

// ---------------------------------------------------------------- copies global -> shared

__device__ __forceinline__ uint32_t smem_u32(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

// Copies src_bytes (0 .. kBytes) bytes from global src to shared dst and zero-fills the rest of the
// kBytes. src must be kBytes-aligned (it is not read when src_bytes == 0). Asynchronous (cp.async,
// completes at cp_async_wait) on sm_80+, a plain load and store before.
template <int kBytes>
__device__ __forceinline__ void copy_zfill(void* dst, const void* src, int src_bytes) {
  static_assert(kBytes == 16 || kBytes == 4 || kBytes == 1, "copy size");
  if constexpr (kBytes == 1) {
    *static_cast<uint8_t*>(dst) = src_bytes > 0 ? *static_cast<const uint8_t*>(src) : uint8_t{0};
  } else {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    if constexpr (kBytes == 16) {
      asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(smem_u32(dst)), "l"(src), "r"(src_bytes));
    } else {
      asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" ::"r"(smem_u32(dst)), "l"(src), "r"(src_bytes));
    }
#else
    if (src_bytes == kBytes) {
      if constexpr (kBytes == 16) {
        *static_cast<uint4*>(dst) = *static_cast<const uint4*>(src);
      } else {
        *static_cast<uint32_t*>(dst) = *static_cast<const uint32_t*>(src);
      }
    } else {
      uint8_t* d = static_cast<uint8_t*>(dst);
      const uint8_t* s = static_cast<const uint8_t*>(src);
      for (int i = 0; i < kBytes; ++i) d[i] = i < src_bytes ? s[i] : uint8_t{0};
    }
#endif
  }
}

// Stores kBytes copies of the byte `fill` (conv padding = x_zero_point) at dst (kBytes-aligned).
template <int kBytes>
__device__ __forceinline__ void store_fill(void* dst, uint32_t fill) {
  const uint32_t word = (fill & 0xFFu) * 0x01010101u;
  if constexpr (kBytes == 16) {
    *static_cast<uint4*>(dst) = make_uint4(word, word, word, word);
  } else if constexpr (kBytes == 4) {
    *static_cast<uint32_t*>(dst) = word;
  } else {
    *static_cast<uint8_t*>(dst) = static_cast<uint8_t>(fill);
  }
}

__device__ __forceinline__ void cp_async_commit() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile("cp.async.commit_group;\n" ::);
#endif
}

// Waits until at most kPending committed groups are still in flight.
template <int kPending>
__device__ __forceinline__ void cp_async_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile("cp.async.wait_group %0;\n" ::"n"(kPending));
#endif
}

// ---------------------------------------------------------------- A loaders
//
// A k-tile of A is kRows rows x kTileK bytes, copied in chunks of kVec bytes. Chunk c of the
// tile is (row c / kChunksPerRow, bytes kVec * (c % kChunksPerRow)); thread t owns the chunks
// c = t + kThreads * i, i.e. one fixed chunk column and kPerThread rows kRowStep apart. Bytes past
// the end of a row (k >= K) and rows past M are zero.

template <int kVec, int kRows>
struct ChunkMap {
  static constexpr int kChunksPerRow = kTileK / kVec;
  static constexpr int kRowStep = kThreads / kChunksPerRow;
  static constexpr int kPerThread = kRows / kRowStep;
  static_assert(kThreads % kChunksPerRow == 0 && kRows % kRowStep == 0, "chunk map");
};

// Plain row-major A [m, k] with row stride lda (kVec-aligned rows when kVec > 1).
template <int kVec, int kRows>
struct MatrixLoader {
  using Map = ChunkMap<kVec, kRows>;
  const uint8_t* a;
  int64_t m_limit, k_limit, lda, row0;
  int col, row_first;

  __device__ MatrixLoader(const KernelArgs& args, int64_t tile_m0, int tid)
      : a(static_cast<const uint8_t*>(args.a)), m_limit(args.m), k_limit(args.k), lda(args.lda), row0(tile_m0),
        col((tid % Map::kChunksPerRow) * kVec), row_first(tid / Map::kChunksPerRow) {}

  __device__ __forceinline__ void load(uint8_t* s_a, int64_t k0) const {
    const int64_t k = k0 + col;
    const int64_t k_left = k_limit - k;
    const int k_bytes = k_left <= 0 ? 0 : (k_left >= kVec ? kVec : static_cast<int>(k_left));
#pragma unroll
    for (int i = 0; i < Map::kPerThread; ++i) {
      const int r = row_first + i * Map::kRowStep;
      const int64_t m = row0 + r;
      const bool ok = m < m_limit && k_bytes > 0;
      const uint8_t* src = ok ? a + m * lda + k : a;
      copy_zfill<kVec>(s_a + r * kAStrideBytes + col, src, ok ? k_bytes : 0);
    }
  }
};

// Implicit-GEMM A for NHWC conv: row = output pixel, k = (kh * KW + kw) * Cg + c of group blockIdx.z.
// kVec divides Cg and C (and the input is kVec-aligned), so a chunk never straddles two taps.
// For kVec >= 4 each thread keeps the origin of its kPerThread pixels in registers; the byte path
// (Cg % 4 != 0, e.g. a 3-channel stem) recomputes it per k-tile.
template <int kVec, int kRows>
struct ConvLoader {
  using Map = ChunkMap<kVec, kRows>;
  static constexpr bool kCached = kVec >= 4;
  static constexpr int kCachedRows = kCached ? Map::kPerThread : 1;
  const uint8_t* x;
  const KernelArgs* args;
  int64_t row0, group_offset, depth;
  int col, row_first;
  uint32_t zero_point;
  // Per owned pixel: offset of (b, 0, 0, group channel 0) in x, and the top-left input position of
  // its receptive field (ih0 = oh * stride - pad); ih0 = INT32_MIN / 2 marks a row past m.
  int64_t pix_base[kCachedRows];
  int32_t pix_ih0[kCachedRows], pix_iw0[kCachedRows];

  __device__ __forceinline__ void pixel_origin(int64_t pixel, int64_t& base, int32_t& ih0, int32_t& iw0) const {
    if (pixel >= args->m) {
      base = 0;
      ih0 = INT32_MIN / 2;
      iw0 = 0;
      return;
    }
    const int64_t plane = static_cast<int64_t>(args->out_h) * args->out_w;
    const int64_t b = pixel / plane;
    const int32_t rem = static_cast<int32_t>(pixel - b * plane);
    const int32_t oh = rem / args->out_w, ow = rem - oh * args->out_w;
    base = b * args->height * args->width * args->in_channels + group_offset;
    ih0 = oh * args->stride_h - args->pad_h;
    iw0 = ow * args->stride_w - args->pad_w;
  }

  __device__ ConvLoader(const KernelArgs& a, int64_t tile_m0, int tid)
      : x(static_cast<const uint8_t*>(a.a)), args(&a), row0(tile_m0),
        group_offset(static_cast<int64_t>(blockIdx.z) * a.group_in), depth(a.k), col((tid % Map::kChunksPerRow) * kVec),
        row_first(tid / Map::kChunksPerRow), zero_point(static_cast<uint32_t>(a.a_zero_point)) {
    if constexpr (kCached) {
#pragma unroll
      for (int i = 0; i < Map::kPerThread; ++i) {
        pixel_origin(row0 + row_first + i * Map::kRowStep, pix_base[i], pix_ih0[i], pix_iw0[i]);
      }
    }
  }

  __device__ __forceinline__ void load(uint8_t* s_a, int64_t k0) const {
    const int64_t k = k0 + col;
    if (k >= depth) {  // past the depth: the packed weight is zero there, store zeros
#pragma unroll
      for (int i = 0; i < Map::kPerThread; ++i)
        store_fill<kVec>(s_a + (row_first + i * Map::kRowStep) * kAStrideBytes + col, 0);
      return;
    }
    const int32_t tap = static_cast<int32_t>(k / args->group_in);
    const int32_t c = static_cast<int32_t>(k - static_cast<int64_t>(tap) * args->group_in);
    const int32_t kh = tap / args->kernel_w, kw = tap - kh * args->kernel_w;
    const int32_t dh = kh * args->dilation_h, dw = kw * args->dilation_w;
#pragma unroll
    for (int i = 0; i < Map::kPerThread; ++i) {
      const int r = row_first + i * Map::kRowStep;
      int64_t base;
      int32_t ih0, iw0;
      if constexpr (kCached) {
        base = pix_base[i], ih0 = pix_ih0[i], iw0 = pix_iw0[i];
      } else {
        pixel_origin(row0 + r, base, ih0, iw0);
      }
      uint8_t* dst = s_a + r * kAStrideBytes + col;
      const int32_t ih = ih0 + dh, iw = iw0 + dw;
      if (ih >= 0 && ih < args->height && iw >= 0 && iw < args->width) {
        const uint8_t* src = x + base + (static_cast<int64_t>(ih) * args->width + iw) * args->in_channels + c;
        copy_zfill<kVec>(dst, src, kVec);
      } else {
        store_fill<kVec>(dst, zero_point);  // padding (or a row past m, which is never stored)
      }
    }
  }
};

// ---------------------------------------------------------------- B loader
//
// Copies the k-tile [k0, k0 + 64) of the packed weight rows [n0, n0 + 128) of group blockIdx.z into
// s_b[block][g][i] (g-row stride kBStrideWords): 16 words (64 k) of each of 16 rows per block. In
// the packed buffer a full block's 16 x 16 words of one k-tile are contiguous (word (g, i) at
// g * 16 + i), so each thread copies 16-byte pieces; the last block of a group with rows < 16
// (stored as (g, i) at g * rows + i) and a misaligned group base take the 4-byte path. Words past
// the packed depth are zero-filled; weight rows past n are left unwritten (their columns are never
// stored).
__device__ __forceinline__ void load_b(uint32_t* s_b, const int32_t* w_group, int64_t n, int64_t words_k,
                                       bool aligned16, int64_t tile_n0, int64_t k0, int tid) {
  const int64_t g0 = k0 / 4;
  const int64_t g_left = words_k - g0;
  const int g_valid = g_left >= 16 ? 16 : static_cast<int>(g_left);
  const int j = tid & 63;
#pragma unroll
  for (int i = 0; i < 2; ++i) {
    const int blk = (tid >> 6) + 4 * i;
    const int64_t first = tile_n0 + 16 * blk;
    if (first >= n) continue;
    const int rows = n - first >= 16 ? 16 : static_cast<int>(n - first);
    const int32_t* src_block = w_group + first * words_k + g0 * rows;
    uint32_t* dst_block = s_b + blk * 16 * kBStrideWords;
    if (rows == 16 && aligned16) {
      const int g = j >> 2, i4 = (j & 3) * 4;
      const bool ok = g < g_valid;
      copy_zfill<16>(dst_block + g * kBStrideWords + i4, ok ? src_block + g * 16 + i4 : w_group, ok ? 16 : 0);
    } else {
      for (int p = j; p < rows * 16; p += 64) {
        const int g = p / rows, r = p - g * rows;
        const bool ok = g < g_valid;
        copy_zfill<4>(dst_block + g * kBStrideWords + r, ok ? src_block + p : w_group, ok ? 4 : 0);
      }
    }
  }
}

// ---------------------------------------------------------------- math

__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], const void* p) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_u32(p)));
#else
  (void)p;
  r[0] = r[1] = r[2] = r[3] = 0;
#endif
}

// d += a * b on one m16n8k32 tile; A is uint8 or int8 (kSigned), B int8, int32 accumulate (wraps).
template <bool kSigned>
__device__ __forceinline__ void mma_16832(int32_t (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  if constexpr (kSigned) {
    asm volatile(
        "mma.sync.aligned.m16n8k32.row.col.s32.s8.s8.s32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
        "{%0, %1, %2, %3};\n"
        : "+r"(d[0]), "+r"(d[1]), "+r"(d[2]), "+r"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  } else {
    asm volatile(
        "mma.sync.aligned.m16n8k32.row.col.s32.u8.s8.s32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
        "{%0, %1, %2, %3};\n"
        : "+r"(d[0]), "+r"(d[1]), "+r"(d[2]), "+r"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  }
#else
  (void)d, (void)a, (void)b0, (void)b1;
#endif
}

// acc + sum_j a.byte[j] * b.byte[j], a uint8 or int8 (kSigned), b int8 (dp4a on sm_61+).
template <bool kSigned>
__device__ __forceinline__ int32_t dot4(uint32_t a, uint32_t b, int32_t acc) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 610
  if constexpr (kSigned) {
    return __dp4a(static_cast<int>(a), static_cast<int>(b), acc);
  } else {
    int32_t d;
    asm("dp4a.u32.s32 %0, %1, %2, %3;\n" : "=r"(d) : "r"(a), "r"(b), "r"(acc));
    return d;
  }
#else
  uint32_t s = static_cast<uint32_t>(acc);
  for (int j = 0; j < 4; ++j) {
    const int32_t av = kSigned ? static_cast<int32_t>(static_cast<int8_t>(a >> (8 * j)))
                               : static_cast<int32_t>((a >> (8 * j)) & 0xFFu);
    const int32_t bv = static_cast<int32_t>(static_cast<int8_t>(b >> (8 * j)));
    s += static_cast<uint32_t>(av * bv);
  }
  return static_cast<int32_t>(s);
#endif
}

// ---------------------------------------------------------------- epilogue

// The output stage parameters of one column (channel).
struct ColumnParams {
  bool valid = false;
  uint32_t corr = 0;  // bias[ch] - a_zero_point * row_sum[n], modulo 2^32
  int32_t m0 = 0, shift = 0;
  float w_scale = 0.0f, bias_f = 0.0f;
};

// The output element for one corrected accumulator, as the bits of its type: the int8 / uint8
// value in the low byte (after clamping to [qmin, qmax] it fits), int32 as is, fp32 as its bits.
__device__ __forceinline__ uint32_t output_bits(const Int8EpilogueParams& ep, int64_t m, int32_t acc,
                                                const ColumnParams& c) {
  if (ep.kind == Int8Epilogue::kFloat) {
    // Three separately rounded fp32 operations in the CPU's order (no contraction into an FMA).
    float y = __fmul_rn(__int2float_rn(acc), ep.x_scale[ep.x_scale_per_row ? m : 0]);
    y = __fmul_rn(y, c.w_scale);
    if (ep.bias_f != nullptr) y = __fadd_rn(y, c.bias_f);
    return __float_as_uint(y);
  }
  if (ep.kind == Int8Epilogue::kInt32) return static_cast<uint32_t>(acc);
  return static_cast<uint32_t>(Requantize(acc, c.m0, c.shift, ep.zero_point, ep.qmin, ep.qmax, ep.rounding));
}

// Stores element o (1- or 4-byte elements), or the pair o, o + 1 in one 2- or 8-byte store (o even).
__device__ __forceinline__ void store_one(void* out, int64_t o, uint32_t bits, bool bytes) {
  if (bytes) {
    static_cast<uint8_t*>(out)[o] = static_cast<uint8_t>(bits);
  } else {
    static_cast<uint32_t*>(out)[o] = bits;
  }
}

__device__ __forceinline__ void store_pair(void* out, int64_t o, uint32_t bits0, uint32_t bits1, bool bytes) {
  if (bytes) {
    *reinterpret_cast<uint16_t*>(static_cast<uint8_t*>(out) + o) =
        static_cast<uint16_t>((bits0 & 0xFFu) | ((bits1 & 0xFFu) << 8));
  } else {
    *reinterpret_cast<uint2*>(static_cast<uint32_t*>(out) + o) = make_uint2(bits0, bits1);
  }
}

// The fixed-point multiplier of channel ch (see Int8EpilogueParams), shift clamped to [-31, 30].
__device__ __forceinline__ void multiplier(const Int8EpilogueParams& ep, int64_t ch, int32_t& m0, int32_t& shift) {
  const int64_t i = ep.per_channel ? ch : 0;
  m0 = ep.m0 != nullptr ? ep.m0[i] : ep.m0_scalar;
  const int32_t s = ep.shift != nullptr ? ep.shift[i] : ep.shift_scalar;
  shift = s < kMinShift ? kMinShift : (s > kMaxShift ? kMaxShift : s);
}

// ---------------------------------------------------------------- the kernel

// ALoader: MatrixLoader<kVec, kRows> or ConvLoader<kVec, kRows> (how A tiles are gathered).
// kSigned: int8 (true) or uint8 (false) activations; selects the mma / dp4a operand type.
// kStages: shared-memory pipeline depth (4 on sm_80+; 2 on older GPUs, whose loads are synchronous
// and whose shared memory per block may be 64 KB).
// kRows: rows of A per block (128; 64 for grids too small to fill the GPU).
template <class ALoader, bool kSigned, int kStages, int kRows>
__global__ void __launch_bounds__(kThreads) int8_gemm_kernel(const KernelArgs args) {
  constexpr int kWarpM = kRows / 2;      // rows per warp
  constexpr int kMmaM = kWarpM / 16;     // m16 tiles per warp
  constexpr int kStageABytes = stage_a_bytes(kRows);
  constexpr int kStageBytes = stage_bytes(kRows);
  extern __shared__ uint4 smem_raw[];
  uint8_t* smem = reinterpret_cast<uint8_t*>(smem_raw);
  const int tid = threadIdx.x;
  const int lane = tid & 31, warp = tid >> 5;
  const int warp_m = warp >> 2, warp_n = warp & 3;
  const int gid = lane >> 2, tig = lane & 3;
  const int64_t tile_m0 = static_cast<int64_t>(blockIdx.x) * kRows;
  const int64_t tile_n0 = static_cast<int64_t>(blockIdx.y) * kTileN;
  const int64_t group = blockIdx.z;
  const int64_t words_k = args.words_per_row - 2;  // packed words of k per row (k_pad / 4)
  const int32_t* w_group = args.w_packed + group * args.n * args.words_per_row;
  const bool b_aligned16 = (reinterpret_cast<uintptr_t>(w_group) & 15u) == 0;

  const ALoader a_loader(args, tile_m0, tid);
  auto stage_a = [&](int s) { return smem + s * kStageBytes; };
  auto stage_b = [&](int s) { return reinterpret_cast<uint32_t*>(smem + s * kStageBytes + kStageABytes); };
  auto load_tile = [&](int s, int64_t kt) {
    a_loader.load(stage_a(s), kt * kTileK);
    load_b(stage_b(s), w_group, args.n, words_k, b_aligned16, tile_n0, kt * kTileK, tid);
  };

  int32_t acc[kMmaM][kMmaN][4];
#pragma unroll
  for (int i = 0; i < kMmaM; ++i)
#pragma unroll
    for (int j = 0; j < kMmaN; ++j)
#pragma unroll
      for (int e = 0; e < 4; ++e) acc[i][j][e] = 0;

  const int64_t k_tiles = (args.k + kTileK - 1) / kTileK;
#pragma unroll
  for (int s = 0; s < kStages - 1; ++s) {
    if (s < k_tiles) load_tile(s, s);
    cp_async_commit();  // one group per stage, empty or not, so the wait counts stay uniform
  }

  for (int64_t kt = 0; kt < k_tiles; ++kt) {
    cp_async_wait<kStages - 2>();
    // Tile kt is in shared memory for every thread, and every warp is done with tile kt - 1, whose
    // stage the prefetch below overwrites.
    __syncthreads();
    const int64_t next = kt + kStages - 1;
    if (next < k_tiles) load_tile(static_cast<int>(next % kStages), next);
    cp_async_commit();

    const int s = static_cast<int>(kt % kStages);
    const uint8_t* s_a = stage_a(s);
    const uint32_t* s_b = stage_b(s);
#pragma unroll
    for (int ks = 0; ks < kTileK / 32; ++ks) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
      uint32_t a_frag[kMmaM][4];
#pragma unroll
      for (int mt = 0; mt < kMmaM; ++mt) {
        const int row = warp_m * kWarpM + mt * 16 + (lane & 7) + ((lane >> 3) & 1) * 8;
        ldmatrix_x4(a_frag[mt], s_a + row * kAStrideBytes + ks * 32 + (lane >> 4) * 16);
      }
#pragma unroll
      for (int nt = 0; nt < kMmaN; ++nt) {
        // Columns warp_n * 32 + nt * 8 .. + 7 = half (nt & 1) of packed block warp_n * 2 + nt / 2.
        const uint32_t* col = s_b + (warp_n * 2 + (nt >> 1)) * 16 * kBStrideWords + (nt & 1) * 8 + gid;
        const uint32_t b0 = col[(ks * 8 + tig) * kBStrideWords];
        const uint32_t b1 = col[(ks * 8 + 4 + tig) * kBStrideWords];
#pragma unroll
        for (int mt = 0; mt < kMmaM; ++mt) mma_16832<kSigned>(acc[mt][nt], a_frag[mt], b0, b1);
      }
#else
      // dp4a fallback computing the same accumulator fragment (rows gid, gid + 8; columns 2 tig, +1).
#pragma unroll
      for (int mt = 0; mt < kMmaM; ++mt) {
#pragma unroll
        for (int nt = 0; nt < kMmaN; ++nt) {
          const uint32_t* col = s_b + (warp_n * 2 + (nt >> 1)) * 16 * kBStrideWords + (nt & 1) * 8 + 2 * tig;
#pragma unroll
          for (int e = 0; e < 4; ++e) {
            const int row = warp_m * kWarpM + mt * 16 + gid + (e >> 1) * 8;
            const uint32_t* a_row = reinterpret_cast<const uint32_t*>(s_a + row * kAStrideBytes + ks * 32);
            int32_t v = acc[mt][nt][e];
            for (int w = 0; w < 8; ++w) v = dot4<kSigned>(a_row[w], col[(ks * 8 + w) * kBStrideWords + (e & 1)], v);
            acc[mt][nt][e] = v;
          }
        }
      }
#endif
    }
  }
  cp_async_wait<0>();

  // Epilogue in registers: acc + (bias[ch] - a_zero_point * row_sum[n]) modulo 2^32, then the
  // output stage. A thread holds columns 2 tig and 2 tig + 1 of each m16n8 tile: both go out in one
  // 2-byte (int8 / uint8) or 8-byte (int32 / fp32) store where the element offset is even.
  const Int8EpilogueParams& ep = args.ep;
  const bool bytes =
      ep.kind == Int8Epilogue::kRequantize && (ep.out_type == Int8OutType::kInt8 || ep.out_type == Int8OutType::kUInt8);
  const int32_t* row_sum = w_group + args.n * words_k;
  const int64_t ch0 = group * args.n;  // channel of column n in bias / m0 / shift / scales / out
#pragma unroll
  for (int nt = 0; nt < kMmaN; ++nt) {
    const int64_t n_first = tile_n0 + warp_n * kWarpN + nt * 8 + 2 * tig;
    ColumnParams col[2];
#pragma unroll
    for (int j = 0; j < 2; ++j) {
      const int64_t n = n_first + j;
      if (n >= args.n) continue;
      const int64_t ch = ch0 + n;
      ColumnParams& c = col[j];
      c.valid = true;
      c.corr = 0u - static_cast<uint32_t>(args.a_zero_point) * static_cast<uint32_t>(row_sum[n]);
      if (ep.bias_i32 != nullptr) c.corr += static_cast<uint32_t>(ep.bias_i32[ch]);
      if (ep.kind == Int8Epilogue::kRequantize) {
        multiplier(ep, ch, c.m0, c.shift);
      } else if (ep.kind == Int8Epilogue::kFloat) {
        c.w_scale = ep.w_scale[ep.w_scale_per_channel ? ch : 0];
        if (ep.bias_f != nullptr) c.bias_f = ep.bias_f[ch];
      }
    }
    if (!col[0].valid) continue;  // then column n_first + 1 is past n too
#pragma unroll
    for (int mt = 0; mt < kMmaM; ++mt) {
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const int64_t m = tile_m0 + warp_m * kWarpM + mt * 16 + gid + 8 * h;
        if (m >= args.m) continue;
        const int64_t o = m * args.ldo + ch0 + n_first;
        const int32_t v0 = static_cast<int32_t>(static_cast<uint32_t>(acc[mt][nt][2 * h]) + col[0].corr);
        const uint32_t bits0 = output_bits(ep, m, v0, col[0]);
        if (!col[1].valid) {
          store_one(args.out, o, bits0, bytes);
          continue;
        }
        const int32_t v1 = static_cast<int32_t>(static_cast<uint32_t>(acc[mt][nt][2 * h + 1]) + col[1].corr);
        const uint32_t bits1 = output_bits(ep, m, v1, col[1]);
        if ((o & 1) == 0) {
          store_pair(args.out, o, bits0, bits1, bytes);
        } else {
          store_one(args.out, o, bits0, bytes);
          store_one(args.out, o + 1, bits1, bytes);
        }
      }
    }
  }
}

template <class ALoader, bool kSigned, int kStages, int kRows>
cudaError_t launch_kernel(const KernelArgs& args, int64_t n_tiles, int64_t groups, cudaStream_t stream) {
  const int64_t m_tiles = (args.m + kRows - 1) / kRows;
  if (m_tiles > 0x7FFFFFFF || n_tiles > 65535 || groups > 65535) return cudaErrorInvalidValue;
  const dim3 grid(static_cast<unsigned>(m_tiles), static_cast<unsigned>(n_tiles), static_cast<unsigned>(groups));
  constexpr int kSmem = kStages * stage_bytes(kRows);
  auto kernel = int8_gemm_kernel<ALoader, kSigned, kStages, kRows>;
  if (kSmem > 48 * 1024) {
    const cudaError_t st = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, kSmem);
    if (st != cudaSuccess) return st;
  }
  kernel<<<grid, kThreads, kSmem, stream>>>(args);
  return cudaGetLastError();
}

// What the launchers need to know about the current device.
struct DeviceInfo {
  bool int8_mma = false;  // mma.sync m16n8k32 with int8 operands: compute capability 8.0+
  int sms = 1;
};

inline DeviceInfo current_device_info() {
  DeviceInfo info;
  int device = 0, major = 0, sms = 0;
  if (cudaGetDevice(&device) != cudaSuccess) return info;
  if (cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device) == cudaSuccess) {
    info.int8_mma = major >= 8;
  }
  if (cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device) == cudaSuccess && sms > 0) info.sms = sms;
  return info;
}

// Launches int8_gemm_kernel over an (m tiles, n tiles, groups) grid: on sm_80+ tensor cores with a
// 4-stage pipeline, in 128-row tiles, or 64-row tiles when 128-row tiles would give fewer blocks
// than the GPU has SMs (e.g. M = N = 1024 on an H100: 64 blocks for 132 SMs); before sm_80 the dp4a
// path with 2 stages (synchronous loads; fits in 64 KB of shared memory).
template <template <int, int> class Loader, int kVec, bool kSigned>
cudaError_t launch_gemm_typed(const KernelArgs& args, int64_t groups, const DeviceInfo& device, cudaStream_t stream) {
  const int64_t n_tiles = (args.n + kTileN - 1) / kTileN;
  if (!device.int8_mma) return launch_kernel<Loader<kVec, 128>, kSigned, 2, 128>(args, n_tiles, groups, stream);
  const int64_t big_blocks = (args.m + 127) / 128 * n_tiles * groups;
  if (big_blocks < device.sms) return launch_kernel<Loader<kVec, 64>, kSigned, 4, 64>(args, n_tiles, groups, stream);
  return launch_kernel<Loader<kVec, 128>, kSigned, 4, 128>(args, n_tiles, groups, stream);
}

template <template <int, int> class Loader, int kVec>
cudaError_t launch_gemm_vec(const KernelArgs& args, bool a_signed, int64_t groups, const DeviceInfo& device,
                            cudaStream_t stream) {
  return a_signed ? launch_gemm_typed<Loader, kVec, true>(args, groups, device, stream)
                  : launch_gemm_typed<Loader, kVec, false>(args, groups, device, stream);
}

}  // namespace ck::cuda::detail
