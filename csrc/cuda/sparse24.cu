// 2:4 sparse matmul on sparse tensor cores (mma.sp, sm_80+) and the layout kernels; the weight and
// metadata layouts are documented in sparse24.cuh.
//
// The product y = x @ W^T is computed as y^T = W x^T (as PyTorch's CUTLASS path does): the sparse
// weight W [Np, Kp] is the mma A operand (16 weight rows per mma), x [M, K] is the B operand
// (8 x rows per mma; x row-major is the "col" layout B wants), the accumulator tile is 16 output
// columns n x 8 output rows m.
//
// Block tile: 128 weight rows (n) x 128 x rows (m), 8 warps as 2 (n) x 4 (m), each warp 64 n x 32 m
// = 4 x 4 mma tiles. A stage is 128 bytes of every x row (64 fp16 / 128 int8 k: two mma k-steps),
// the matching 64 compressed bytes of every weight row and the metadata chunks of those k-steps,
// copied with cp.async into a 3-stage ring so the copies of stage s + 2 overlap the mma of stage s.
//
// Fragments (PTX ISA, mma.sp.m16n8k32 .f16/.bf16 and mma.sp.m16n8k64 .s8; lane = 4 * g + t):
//   A (compressed W, 16 rows x 32 bytes per mma): reg0 row g, bytes 4t .. 4t + 3 (fp16: group t,
//     int8: groups 2t, 2t + 1); reg1 row g + 8, same bytes; reg2 / reg3 rows g / g + 8, bytes 16 + 4t.
//     That is the ldmatrix.x4 pattern of a 16 x 16 b16 tile: lane l addresses row l % 16, 16-byte
//     chunk l / 16.
//   B (x, 8 rows m x 64 bytes per mma): reg j = bytes 16 j + 4t .. + 3 of x row g (fp16 k = 8j + 2t,
//     8j + 2t + 1; int8 k = 16j + 4t .. + 3): ldmatrix.x4 with lane l addressing row l % 8, chunk l / 8.
//   C/D: c0, c1 = (n = g, m = 2t, 2t + 1); c2, c3 = (n = g + 8, same m).
//   metadata: one 32-bit word per lane, word `lane` of a 128-byte chunk of the CUTLASS layout.
// Shared-memory rows are XOR-swizzled by 16-byte chunk (x: chunk ^ (row % 8), 128-byte rows; W:
// chunk ^ ((row / 2) % 4), 64-byte rows) so that every ldmatrix phase hits 8 distinct bank groups.
#include "sparse24.cuh"

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <atomic>

#include "ck/sparse24.h"

namespace ck::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kBlockN = 128;      // weight rows per block (8 mma tiles of 16)
constexpr int kBlockM = 128;      // x rows per block (16 mma tiles of 8)
constexpr int kXRowBytes = 128;   // bytes of one x row per stage
constexpr int kWRowBytes = 64;    // compressed bytes of one weight row per stage
constexpr int kStages = 3;        // cp.async ring depth: two stages in flight while one computes
constexpr int kXBytes = kBlockM * kXRowBytes;  // 16 KiB
constexpr int kWBytes = kBlockN * kWRowBytes;  // 8 KiB
constexpr int kMetaBytes = 2048;               // int8: 8 row blocks x 2 k-steps x 128 B (fp16 uses 1 KiB)
constexpr int kStageBytes = kXBytes + kWBytes + kMetaBytes;
constexpr int kSmemBytes = kStages * kStageBytes;  // 78 KiB: needs the dynamic shared memory opt-in

__device__ __forceinline__ uint32_t smem_u32(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

// 16 bytes global -> shared, asynchronous; valid == false writes 16 zero bytes and reads nothing.
__device__ __forceinline__ void cp_async16(uint32_t dst, const void* src, bool valid) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src), "r"(valid ? 16 : 0));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int kPending>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(kPending));
}

__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], uint32_t addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
}

// ---------------------------------------------------------------- per-type mma.sp
//
// kElemBytes: element size of x and the values; kKStep: dense k per mma; kMetaRows: weight rows per
// 128-byte metadata chunk (32 for the int16 layout, which serves two m16 tiles through the sparsity
// selector, 16 for the int32 layout).

struct F16Traits {
  using Acc = float;
  static constexpr int kElemBytes = 2, kKStep = 32, kMetaRows = 32;
  template <int kSel>
  __device__ __forceinline__ static void mma(Acc (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[4], uint32_t e) {
    asm volatile(
        "mma.sp::ordered_metadata.sync.aligned.m16n8k32.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, "
        "{%8, %9, %10, %11}, {%0, %1, %2, %3}, %12, %13;\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]), "r"(b[2]), "r"(b[3]), "r"(e), "n"(kSel));
  }
};

struct BF16Traits {
  using Acc = float;
  static constexpr int kElemBytes = 2, kKStep = 32, kMetaRows = 32;
  template <int kSel>
  __device__ __forceinline__ static void mma(Acc (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[4], uint32_t e) {
    asm volatile(
        "mma.sp::ordered_metadata.sync.aligned.m16n8k32.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, "
        "{%8, %9, %10, %11}, {%0, %1, %2, %3}, %12, %13;\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]), "r"(b[2]), "r"(b[3]), "r"(e), "n"(kSel));
  }
};

// kXSigned: x is int8 (.s8 B operand) or uint8 (.u8); the weight is always .s8. No .satfinite: the
// int32 accumulation wraps like the CPU's, and the glue refuses depths that could overflow.
template <bool kXSigned>
struct S8Traits {
  using Acc = int32_t;
  static constexpr int kElemBytes = 1, kKStep = 64, kMetaRows = 16;
  template <int kSel>
  __device__ __forceinline__ static void mma(Acc (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[4], uint32_t e) {
    static_assert(kSel == 0, "m16n8k64 .s8 takes metadata from all four threads of a quad: selector 0");
    if constexpr (kXSigned) {
      asm volatile(
          "mma.sp::ordered_metadata.sync.aligned.m16n8k64.row.col.s32.s8.s8.s32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, "
          "{%8, %9, %10, %11}, {%0, %1, %2, %3}, %12, 0x0;\n"
          : "+r"(d[0]), "+r"(d[1]), "+r"(d[2]), "+r"(d[3])
          : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]), "r"(b[2]), "r"(b[3]), "r"(e));
    } else {
      asm volatile(
          "mma.sp::ordered_metadata.sync.aligned.m16n8k64.row.col.s32.s8.u8.s32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, "
          "{%8, %9, %10, %11}, {%0, %1, %2, %3}, %12, 0x0;\n"
          : "+r"(d[0]), "+r"(d[1]), "+r"(d[2]), "+r"(d[3])
          : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]), "r"(b[2]), "r"(b[3]), "r"(e));
    }
  }
};

// ---------------------------------------------------------------- epilogues

struct MainArgs {
  const uint8_t* x = nullptr;  // bytes; row stride ldx_bytes
  int64_t m = 0, k = 0, ldx_bytes = 0;
  const uint8_t* values = nullptr;  // [np, row_bytes]
  int64_t np = 0, kp = 0, row_bytes = 0;
  const uint32_t* meta = nullptr;  // CUTLASS layout as 32-bit words
};

template <class OutT>
__device__ __forceinline__ OutT from_float(float v);
template <>
__device__ __forceinline__ float from_float<float>(float v) {
  return v;
}
template <>
__device__ __forceinline__ __half from_float<__half>(float v) {
  return __float2half_rn(v);
}
template <>
__device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float v) {
  return __float2bfloat16_rn(v);
}

// out[m, n] = round(acc + bias[n]) in OutT (round to nearest even).
template <class OutT>
struct FloatEpilogue {
  const float* bias;
  OutT* out;
  int64_t ldo;
  __device__ __forceinline__ void operator()(int64_t m, int64_t n, float acc) const {
    const float v = bias != nullptr ? acc + bias[n] : acc;
    out[m * ldo + n] = from_float<OutT>(v);
  }
};

struct Int8Epilogue {
  const int32_t* row_sum;  // null when x_zero_point == 0
  int32_t x_zero_point;
  const int32_t* bias;
  const int32_t* m0;
  const int32_t* shift;
  bool per_channel;
  int32_t m0_scalar, shift_scalar;
  int32_t out_zero_point, qmin, qmax;
  Rounding rounding;
  int out_bytes;
  bool out_signed;
  void* out;
  int64_t ldo;
  __device__ __forceinline__ void operator()(int64_t m, int64_t n, int32_t acc) const {
    // Modulo 2^32, as the CPU path: acc - zp * row_sum + bias.
    uint32_t v = static_cast<uint32_t>(acc);
    if (row_sum != nullptr) v -= static_cast<uint32_t>(x_zero_point) * static_cast<uint32_t>(row_sum[n]);
    if (bias != nullptr) v += static_cast<uint32_t>(bias[n]);
    const int32_t mult = per_channel ? m0[n] : m0_scalar;
    int32_t sh = per_channel ? shift[n] : shift_scalar;
    sh = sh < kMinShift ? kMinShift : (sh > kMaxShift ? kMaxShift : sh);  // the glue refuses others
    const int32_t r = Requantize(static_cast<int32_t>(v), mult, sh, out_zero_point, qmin, qmax, rounding);
    if (out_bytes == 4) {
      static_cast<int32_t*>(out)[m * ldo + n] = r;
    } else if (out_signed) {
      static_cast<int8_t*>(out)[m * ldo + n] = static_cast<int8_t>(r);
    } else {
      static_cast<uint8_t*>(out)[m * ldo + n] = static_cast<uint8_t>(r);
    }
  }
};

// ---------------------------------------------------------------- the kernel

// kVecX: x rows are 16-byte aligned and K is a multiple of 16 bytes, so every 16-byte chunk of x is
// either wholly inside or wholly outside [0, K) and cp.async copies it; otherwise each chunk is
// gathered element by element with the k >= K tail read as zero.
template <class Tr, class Epilogue, bool kVecX>
__global__ void __launch_bounds__(kThreads) sparse24_mma_kernel(const MainArgs args, const Epilogue epilogue) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 800
  __trap();  // mma.sp needs sm_80; the launcher refuses older devices
#else
  using Acc = typename Tr::Acc;
  constexpr int kE = Tr::kElemBytes;
  constexpr int kStageK = kXRowBytes / kE;  // dense k per stage = 2 * kKStep
  static_assert(kStageK == 2 * Tr::kKStep, "a stage holds two mma k-steps");
  constexpr int kRowBlocks = kBlockN / Tr::kMetaRows;  // metadata chunks per k-step
  constexpr int kTilesPerChunk = Tr::kMetaRows / 16;   // m16 tiles one chunk serves (sparsity selector)
  constexpr int kMetaPieces = 2 * kRowBlocks * 8;      // 16-byte pieces of metadata per stage
  static_assert(kMetaPieces * 16 <= kMetaBytes && kMetaPieces <= kThreads, "metadata stage size");

  extern __shared__ __align__(128) uint8_t smem[];
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int warp_n = warp & 1, warp_m = warp >> 1;
  const int64_t n0 = static_cast<int64_t>(blockIdx.x) * kBlockN;
  const int64_t m0 = static_cast<int64_t>(blockIdx.y) * kBlockM;
  const int64_t k_tiles = (args.kp + kStageK - 1) / kStageK;
  const int64_t meta_row_blocks = args.np / Tr::kMetaRows;

  auto load_stage = [&](int buf, int64_t kt) {
    uint8_t* sx = smem + buf * kStageBytes;
    uint8_t* sw = sx + kXBytes;
    uint8_t* sm = sw + kWBytes;
    // x: 128 rows x 8 chunks of 16 bytes.
#pragma unroll
    for (int i = 0; i < kXBytes / 16 / kThreads; ++i) {
      const int idx = tid + i * kThreads, r = idx >> 3, c = idx & 7;
      const int64_t gm = m0 + r, kk = kt * kStageK + c * (16 / kE);
      uint8_t* dst = sx + r * kXRowBytes + ((c ^ (r & 7)) << 4);
      if constexpr (kVecX) {
        const bool valid = gm < args.m && kk < args.k;
        const uint8_t* src = valid ? args.x + gm * args.ldx_bytes + kk * kE : args.x;
        cp_async16(smem_u32(dst), src, valid);
      } else {
        uint8_t bytes[16];
#pragma unroll
        for (int e = 0; e < 16 / kE; ++e) {
          const bool valid = gm < args.m && kk + e < args.k;
#pragma unroll
          for (int b = 0; b < kE; ++b) bytes[e * kE + b] = valid ? args.x[gm * args.ldx_bytes + (kk + e) * kE + b] : 0;
        }
        uint4 v;
        v.x = bytes[0] | bytes[1] << 8 | bytes[2] << 16 | static_cast<uint32_t>(bytes[3]) << 24;
        v.y = bytes[4] | bytes[5] << 8 | bytes[6] << 16 | static_cast<uint32_t>(bytes[7]) << 24;
        v.z = bytes[8] | bytes[9] << 8 | bytes[10] << 16 | static_cast<uint32_t>(bytes[11]) << 24;
        v.w = bytes[12] | bytes[13] << 8 | bytes[14] << 16 | static_cast<uint32_t>(bytes[15]) << 24;
        *reinterpret_cast<uint4*>(dst) = v;
      }
    }
    // Compressed weight: 128 rows x 4 chunks of 16 bytes (rows are a multiple of 32 bytes long).
#pragma unroll
    for (int i = 0; i < kWBytes / 16 / kThreads; ++i) {
      const int idx = tid + i * kThreads, r = idx >> 2, c = idx & 3;
      const int64_t gn = n0 + r, off = kt * kWRowBytes + c * 16;
      const bool valid = gn < args.np && off < args.row_bytes;
      const uint8_t* src = valid ? args.values + gn * args.row_bytes + off : args.values;
      cp_async16(smem_u32(sw + r * kWRowBytes + ((c ^ ((r >> 1) & 3)) << 4)), src, valid);
    }
    // Metadata: chunk (step s, row block rb) at sm + (s * kRowBlocks + rb) * 128.
    if (tid < kMetaPieces) {
      const int chunk = tid >> 3, piece = tid & 7;
      const int s = chunk / kRowBlocks, rb = chunk % kRowBlocks;
      const int64_t row_block = n0 / Tr::kMetaRows + rb, kblock = kt * 2 + s;
      const bool valid = row_block < meta_row_blocks && kblock * Tr::kKStep < args.kp;
      const uint32_t* src = valid ? args.meta + (kblock * meta_row_blocks + row_block) * 32 + piece * 4 : args.meta;
      cp_async16(smem_u32(sm + chunk * 128 + piece * 16), src, valid);
    }
  };

  Acc acc[4][4][4];
#pragma unroll
  for (int i = 0; i < 4; ++i)
#pragma unroll
    for (int j = 0; j < 4; ++j)
#pragma unroll
      for (int r = 0; r < 4; ++r) acc[i][j][r] = Acc(0);

#pragma unroll
  for (int s = 0; s < kStages - 1; ++s) {
    if (s < k_tiles) load_stage(s, s);
    cp_async_commit();  // one group per stage, empty or not, so the wait counts stay uniform
  }

  for (int64_t kt = 0; kt < k_tiles; ++kt) {
    cp_async_wait<kStages - 2>();
    __syncthreads();  // stage kt landed for every thread; everyone is done with stage kt - 1's buffer
    if (kt + kStages - 1 < k_tiles) load_stage(static_cast<int>((kt + kStages - 1) % kStages), kt + kStages - 1);
    cp_async_commit();

    const uint8_t* sx = smem + (kt % kStages) * kStageBytes;
    const uint8_t* sw = sx + kXBytes;
    const uint32_t* sm = reinterpret_cast<const uint32_t*>(sw + kWBytes);
#pragma unroll
    for (int s = 0; s < 2; ++s) {
      if ((kt * 2 + s) * Tr::kKStep >= args.kp) break;  // block-uniform: past the weight's Kp
      uint32_t a[4][4], b[4][4], e[4 / kTilesPerChunk];
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        const int r = warp_n * 64 + i * 16 + (lane & 15), c = s * 2 + (lane >> 4);
        ldmatrix_x4(a[i], smem_u32(sw + r * kWRowBytes + ((c ^ ((r >> 1) & 3)) << 4)));
      }
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        const int r = warp_m * 32 + j * 8 + (lane & 7), c = s * 4 + (lane >> 3);
        ldmatrix_x4(b[j], smem_u32(sx + r * kXRowBytes + ((c ^ (r & 7)) << 4)));
      }
#pragma unroll
      for (int q = 0; q < 4 / kTilesPerChunk; ++q) {
        const int rb = (warp_n * 64) / Tr::kMetaRows + q;
        e[q] = sm[(s * kRowBlocks + rb) * 32 + lane];
      }
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        // Warp-uniform: m16 tiles past Np (zero-filled, with all-zero metadata) are skipped.
        if (n0 + warp_n * 64 + i * 16 >= args.np) continue;
#pragma unroll
        for (int j = 0; j < 4; ++j) {
          if constexpr (kTilesPerChunk == 2) {
            if (i % 2 == 0) {
              Tr::template mma<0>(acc[i][j], a[i], b[j], e[i / 2]);
            } else {
              Tr::template mma<1>(acc[i][j], a[i], b[j], e[i / 2]);
            }
          } else {
            Tr::template mma<0>(acc[i][j], a[i], b[j], e[i]);
          }
        }
      }
    }
  }
  cp_async_wait<0>();

  const int g = lane >> 2, t = lane & 3;
#pragma unroll
  for (int i = 0; i < 4; ++i) {
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const int64_t n = n0 + warp_n * 64 + i * 16 + g, m = m0 + warp_m * 32 + j * 8 + 2 * t;
#pragma unroll
      for (int r = 0; r < 4; ++r) {
        const int64_t nn = n + (r >> 1) * 8, mm = m + (r & 1);
        if (nn < args.np && mm < args.m) epilogue(mm, nn, acc[i][j][r]);
      }
    }
  }
#endif
}

template <class Tr, class Epilogue, bool kVecX>
cudaError_t launch(const MainArgs& args, const Epilogue& epilogue, cudaStream_t stream) {
  auto kernel = sparse24_mma_kernel<Tr, Epilogue, kVecX>;
  // The 78 KiB of shared memory need the opt-in, once per device and kernel instance.
  static std::atomic<uint64_t> opted_in{0};
  int device = 0;
  cudaError_t status = cudaGetDevice(&device);
  if (status != cudaSuccess) return status;
  const uint64_t bit = device < 64 ? uint64_t{1} << device : 0;
  if ((opted_in.load() & bit) == 0 || bit == 0) {
    status = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, kSmemBytes);
    if (status != cudaSuccess) return status;
    opted_in.fetch_or(bit);
  }
  const dim3 grid(static_cast<unsigned>((args.np + kBlockN - 1) / kBlockN),
                  static_cast<unsigned>((args.m + kBlockM - 1) / kBlockM));
  kernel<<<grid, kThreads, kSmemBytes, stream>>>(args, epilogue);
  return cudaGetLastError();
}

// Common argument checks of both matmuls; elem_bytes is the size of an x / values element.
bool valid_shapes(int64_t m, int64_t k, int64_t ldx, int64_t np, int64_t kp, int64_t row_multiple, int64_t k_multiple) {
  if (m < 0 || k <= 0 || np < 0 || kp <= 0 || ldx < k) return false;
  if (np % row_multiple != 0 || kp % k_multiple != 0) return false;
  if (k > kp || kp - k >= k_multiple) return false;
  if ((m + kBlockM - 1) / kBlockM > 65535 || (np + kBlockN - 1) / kBlockN > 0x7fffffff) return false;
  return true;
}

bool sm80_or_newer() {
  int device = 0, major = 0;
  if (cudaGetDevice(&device) != cudaSuccess) return false;
  if (cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device) != cudaSuccess) return false;
  return major >= 8;
}

template <class Tr, class OutT>
cudaError_t linear_typed(const MainArgs& args, const Sparse24LinearParams& p, cudaStream_t stream) {
  const FloatEpilogue<OutT> epi{p.bias, static_cast<OutT*>(p.out), p.np};
  const bool vec = (p.k * 2) % 16 == 0 && (p.ldx * 2) % 16 == 0 && reinterpret_cast<uintptr_t>(p.x) % 16 == 0;
  return vec ? launch<Tr, FloatEpilogue<OutT>, true>(args, epi, stream)
             : launch<Tr, FloatEpilogue<OutT>, false>(args, epi, stream);
}

// ---------------------------------------------------------------- compress / decompress (our layout)

template <int kE>
struct Bits;
template <>
struct Bits<1> {
  using T = uint8_t;
  static constexpr T kMagnitude = 0xFF;  // no 1-byte floating type is dispatched
};
template <>
struct Bits<2> {
  using T = uint16_t;
  static constexpr T kMagnitude = 0x7FFF;
};
template <>
struct Bits<4> {
  using T = uint32_t;
  static constexpr T kMagnitude = 0x7FFFFFFFu;
};
template <>
struct Bits<8> {
  using T = unsigned long long;
  static constexpr T kMagnitude = 0x7FFFFFFFFFFFFFFFull;
};

// One thread per meta byte (two groups).
template <int kE>
__global__ void sparse24_compress_kernel(const typename Bits<kE>::T* w, int64_t n, int64_t k, bool is_float,
                                         typename Bits<kE>::T* values, uint8_t* meta, unsigned long long* first_bad) {
  using T = typename Bits<kE>::T;
  const int64_t mcols = sparse24::meta_cols(k), groups = k / 4;
  const int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (idx >= n * mcols) return;
  const int64_t r = idx / mcols, c = idx % mcols;
  const T magnitude = is_float ? Bits<kE>::kMagnitude : static_cast<T>(~T(0));
  int byte = 0;
  for (int h = 0; h < 2; ++h) {
    const int64_t g = 2 * c + h;
    if (g >= groups) break;
    const T* src = w + r * k + 4 * g;
    T v[4];
    int nonzero = 0;
    for (int i = 0; i < 4; ++i) {
      v[i] = src[i];
      if ((v[i] & magnitude) != 0) nonzero |= 1 << i;
    }
    int i0 = 0, i1 = 1;
    if (!sparse24::choose_positions(nonzero, &i0, &i1)) {
      atomicMin(first_bad, static_cast<unsigned long long>(r * groups + g));
      continue;
    }
    values[r * (k / 2) + 2 * g] = v[i0];
    values[r * (k / 2) + 2 * g + 1] = v[i1];
    byte |= (i0 | (i1 << 2)) << (4 * h);
  }
  meta[idx] = static_cast<uint8_t>(byte);
}

template <int kE>
__global__ void sparse24_decompress_kernel(const typename Bits<kE>::T* values, const uint8_t* meta, int64_t n,
                                           int64_t k, typename Bits<kE>::T* w, unsigned long long* first_bad) {
  using T = typename Bits<kE>::T;
  const int64_t mcols = sparse24::meta_cols(k), groups = k / 4;
  const int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (idx >= n * mcols) return;
  const int64_t r = idx / mcols, c = idx % mcols;
  const int byte = meta[idx];
  for (int h = 0; h < 2; ++h) {
    const int64_t g = 2 * c + h;
    const int nib = (byte >> (4 * h)) & 0xF;
    if (g >= groups) {  // the unused high nibble when K % 8 == 4 must be zero
      if (nib != 0) atomicMin(first_bad, static_cast<unsigned long long>(r * groups + groups - 1));
      break;
    }
    T* dst = w + r * k + 4 * g;
    T out[4] = {T(0), T(0), T(0), T(0)};
    if (sparse24::valid_nibble(nib)) {
      out[sparse24::position(nib, 0)] = values[r * (k / 2) + 2 * g];
      out[sparse24::position(nib, 1)] = values[r * (k / 2) + 2 * g + 1];
    } else {
      atomicMin(first_bad, static_cast<unsigned long long>(r * groups + g));
    }
    for (int i = 0; i < 4; ++i) dst[i] = out[i];
  }
}

constexpr int kLayoutThreads = 256;

}  // namespace

cudaError_t sparse24_linear(const Sparse24LinearParams& p, cudaStream_t stream) {
  if (p.x == nullptr || p.values == nullptr || p.meta == nullptr || p.out == nullptr) return cudaErrorInvalidValue;
  if (!valid_shapes(p.m, p.k, p.ldx, p.np, p.kp, kSparse24RowMultiple16, kSparse24KMultiple16))
    return cudaErrorInvalidValue;
  if (!sm80_or_newer()) return cudaErrorInvalidDevice;
  if (p.m == 0 || p.np == 0) return cudaSuccess;
  MainArgs args;
  args.x = static_cast<const uint8_t*>(p.x);
  args.m = p.m;
  args.k = p.k;
  args.ldx_bytes = p.ldx * 2;
  args.values = static_cast<const uint8_t*>(p.values);
  args.np = p.np;
  args.kp = p.kp;
  args.row_bytes = p.kp;  // kp / 2 elements of 2 bytes
  args.meta = reinterpret_cast<const uint32_t*>(p.meta);
  const bool f32 = p.out_type == Sparse24OutType::kFloat32;
  if (p.type == Sparse24Type::kFloat16) {
    return f32 ? linear_typed<F16Traits, float>(args, p, stream) : linear_typed<F16Traits, __half>(args, p, stream);
  }
  return f32 ? linear_typed<BF16Traits, float>(args, p, stream)
             : linear_typed<BF16Traits, __nv_bfloat16>(args, p, stream);
}

cudaError_t sparse24_int8_linear(const Sparse24Int8Params& p, cudaStream_t stream) {
  if (p.x == nullptr || p.values == nullptr || p.meta == nullptr || p.out == nullptr) return cudaErrorInvalidValue;
  if (!valid_shapes(p.m, p.k, p.ldx, p.np, p.kp, kSparse24RowMultiple8, kSparse24KMultiple8))
    return cudaErrorInvalidValue;
  if (p.out_bytes != 1 && p.out_bytes != 4) return cudaErrorInvalidValue;
  if (p.x_zero_point != 0 && p.row_sum == nullptr) return cudaErrorInvalidValue;
  if (p.per_channel && (p.m0 == nullptr || p.shift == nullptr)) return cudaErrorInvalidValue;
  if (!sm80_or_newer()) return cudaErrorInvalidDevice;
  if (p.m == 0 || p.np == 0) return cudaSuccess;
  MainArgs args;
  args.x = static_cast<const uint8_t*>(p.x);
  args.m = p.m;
  args.k = p.k;
  args.ldx_bytes = p.ldx;
  args.values = reinterpret_cast<const uint8_t*>(p.values);
  args.np = p.np;
  args.kp = p.kp;
  args.row_bytes = p.kp / 2;
  args.meta = reinterpret_cast<const uint32_t*>(p.meta);
  Int8Epilogue epi;
  epi.row_sum = p.x_zero_point != 0 ? p.row_sum : nullptr;
  epi.x_zero_point = p.x_zero_point;
  epi.bias = p.bias;
  epi.m0 = p.m0;
  epi.shift = p.shift;
  epi.per_channel = p.per_channel;
  epi.m0_scalar = p.m0_scalar;
  epi.shift_scalar = p.shift_scalar;
  epi.out_zero_point = p.out_zero_point;
  epi.qmin = p.qmin;
  epi.qmax = p.qmax;
  epi.rounding = p.rounding;
  epi.out_bytes = p.out_bytes;
  epi.out_signed = p.out_signed;
  epi.out = p.out;
  epi.ldo = p.np;
  const bool vec = p.k % 16 == 0 && p.ldx % 16 == 0 && reinterpret_cast<uintptr_t>(p.x) % 16 == 0;
  if (p.x_signed) {
    return vec ? launch<S8Traits<true>, Int8Epilogue, true>(args, epi, stream)
               : launch<S8Traits<true>, Int8Epilogue, false>(args, epi, stream);
  }
  return vec ? launch<S8Traits<false>, Int8Epilogue, true>(args, epi, stream)
             : launch<S8Traits<false>, Int8Epilogue, false>(args, epi, stream);
}

cudaError_t sparse24_compress(const void* w, int64_t n, int64_t k, int elem_bytes, bool is_float, void* values,
                              uint8_t* meta, int64_t* first_bad, cudaStream_t stream) {
  if (n < 0 || k <= 0 || k % 4 != 0 || first_bad == nullptr) return cudaErrorInvalidValue;
  const int64_t threads = n * sparse24::meta_cols(k);
  if (threads == 0) return cudaSuccess;
  const unsigned blocks = static_cast<unsigned>((threads + kLayoutThreads - 1) / kLayoutThreads);
  auto* bad = reinterpret_cast<unsigned long long*>(first_bad);
  switch (elem_bytes) {
    case 1:
      sparse24_compress_kernel<1><<<blocks, kLayoutThreads, 0, stream>>>(static_cast<const uint8_t*>(w), n, k, is_float,
                                                                         static_cast<uint8_t*>(values), meta, bad);
      break;
    case 2:
      sparse24_compress_kernel<2><<<blocks, kLayoutThreads, 0, stream>>>(
          static_cast<const uint16_t*>(w), n, k, is_float, static_cast<uint16_t*>(values), meta, bad);
      break;
    case 4:
      sparse24_compress_kernel<4><<<blocks, kLayoutThreads, 0, stream>>>(
          static_cast<const uint32_t*>(w), n, k, is_float, static_cast<uint32_t*>(values), meta, bad);
      break;
    case 8:
      sparse24_compress_kernel<8>
          <<<blocks, kLayoutThreads, 0, stream>>>(static_cast<const unsigned long long*>(w), n, k, is_float,
                                                  static_cast<unsigned long long*>(values), meta, bad);
      break;
    default:
      return cudaErrorInvalidValue;
  }
  return cudaGetLastError();
}

cudaError_t sparse24_decompress(const void* values, const uint8_t* meta, int64_t n, int64_t k, int elem_bytes, void* w,
                                int64_t* first_bad, cudaStream_t stream) {
  if (n < 0 || k <= 0 || k % 4 != 0 || first_bad == nullptr) return cudaErrorInvalidValue;
  const int64_t threads = n * sparse24::meta_cols(k);
  if (threads == 0) return cudaSuccess;
  const unsigned blocks = static_cast<unsigned>((threads + kLayoutThreads - 1) / kLayoutThreads);
  auto* bad = reinterpret_cast<unsigned long long*>(first_bad);
  switch (elem_bytes) {
    case 1:
      sparse24_decompress_kernel<1><<<blocks, kLayoutThreads, 0, stream>>>(static_cast<const uint8_t*>(values), meta, n,
                                                                           k, static_cast<uint8_t*>(w), bad);
      break;
    case 2:
      sparse24_decompress_kernel<2><<<blocks, kLayoutThreads, 0, stream>>>(static_cast<const uint16_t*>(values), meta,
                                                                           n, k, static_cast<uint16_t*>(w), bad);
      break;
    case 4:
      sparse24_decompress_kernel<4><<<blocks, kLayoutThreads, 0, stream>>>(static_cast<const uint32_t*>(values), meta,
                                                                           n, k, static_cast<uint32_t*>(w), bad);
      break;
    case 8:
      sparse24_decompress_kernel<8><<<blocks, kLayoutThreads, 0, stream>>>(
          static_cast<const unsigned long long*>(values), meta, n, k, static_cast<unsigned long long*>(w), bad);
      break;
    default:
      return cudaErrorInvalidValue;
  }
  return cudaGetLastError();
}

}  // namespace ck::cuda
