// 2:4 sparse kernels on the CPU (torch-free): compression, fp32 linear, int8 linear with the
// fixed-point output stage of int8_linear. The compressed layout (values + meta) is documented in
// ck/sparse24.h.
//
// fp32: y[m, n] = fl(acc + bias[n]) with acc = 0 then acc = fma(values[n, j], x[m, k_j], acc) for j = 0 .. K/2 - 1 in
// order, one fused multiply-add per stored value. Every path follows that order exactly, so they are bit-identical and
// the result does not depend on threads (work is split over rows and columns, never over k).
//
// The packed layouts below are the payloads of the sparse24_*_pack tensors, after their 64-byte
// header (ck/packed_header.h); the kernels get a pointer past it.
//
// int8 packed layout (what sparse24_int8_pack writes; an int32 buffer of
// sparse24_int8_packed_words(n, k) words). H = ceil(K / 8) pairs of groups, B = ceil(N / 16)
// blocks of 16 output columns. Block b, pair h is 80 bytes at byte (b * H + h) * 80:
//   bytes [0, 64):  lane i (column 16b + i) holds values[16b + i, 4h .. 4h + 3] (the two stored
//                   values of group 2h, then of group 2h + 1; zero beyond N or K/2);
//   bytes [64, 80): byte i is meta[16b + i, h], the nibbles of groups 2h (low) and 2h + 1 (high)
//                   (0 beyond N; the high nibble is 0 past K/4 groups, and its values are 0).
// The kernels expand the 16 meta bytes into the `vpshufb` control p0, p1, 4 + p0', 4 + p1' per
// column in registers (shifts and two ternary-logic ops, shared by every row of a tile), so the
// weight stream is 80 bytes per 16 columns x 8 k: 62.5% of dense int8.
// Then int32 row_sum[N] (sum of the stored values of row n, for the zero-point correction),
// then int32 K and N (to validate inputs).
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>

#include "bf16.h"
#include "ck/sparse24.h"
#include "dispatch.h"
#include "int8_gemm.h"
#include "requantize.h"

namespace ck::cpu {

// Compresses w [n, k] (row stride ldw, k % 4 == 0) into values [n, k/2] and meta [n, ceil(k/8)].
// Returns -1 on success, else the flat index n * (k / 4) + g of the first group with more than
// two non-zeros (nothing is guaranteed about the outputs then).
template <typename T>
int64_t sparse24_compress(const T* w, int64_t n, int64_t k, int64_t ldw, T* values, uint8_t* meta) {
  const int64_t groups = k / 4, mcols = sparse24::meta_cols(k);
  for (int64_t r = 0; r < n; ++r) {
    uint8_t* mr = meta + r * mcols;
    for (int64_t c = 0; c < mcols; ++c) mr[c] = 0;
    for (int64_t g = 0; g < groups; ++g) {
      const T* src = w + r * ldw + 4 * g;
      int nonzero = 0;
      for (int i = 0; i < 4; ++i)
        if (!(src[i] == T(0))) nonzero |= 1 << i;
      int i0 = 0, i1 = 0;
      if (!sparse24::choose_positions(nonzero, &i0, &i1)) return r * groups + g;
      values[r * (k / 2) + 2 * g] = src[i0];
      values[r * (k / 2) + 2 * g + 1] = src[i1];
      mr[g >> 1] |= static_cast<uint8_t>((i0 | (i1 << 2)) << ((g & 1) * 4));
    }
  }
  return -1;
}

// Returns -1 when every nibble of meta [n, ceil(k/8)] is valid (and unused trailing nibbles are
// zero), else the flat index n * (k / 4) + g of the first bad group.
int64_t sparse24_check_meta(const uint8_t* meta, int64_t n, int64_t k);

// Writes w [n, k] (contiguous) from values [n, k/2] and a valid meta.
template <typename T>
void sparse24_decompress(const T* values, const uint8_t* meta, int64_t n, int64_t k, T* w) {
  const int64_t mcols = sparse24::meta_cols(k);
  for (int64_t r = 0; r < n; ++r) {
    for (int64_t c = 0; c < k; ++c) w[r * k + c] = T(0);
    for (int64_t j = 0; j < k / 2; ++j) w[r * k + sparse24::k_of(meta + r * mcols, j)] = values[r * (k / 2) + j];
  }
}

// ---------------------------------------------------------------- fp32
//
// fp32 packed layout (what sparse24_f32_pack writes; a float buffer of sparse24_f32_packed_floats
// floats): B = ceil(N / 8) blocks of 8 output columns, block b at float b * block_floats(K):
//   values [K/2][8]: float j * 8 + c = values[8b + c, j] (0 past N);
//   meta [ceil(K/8)][8] bytes after them: byte i * 8 + c = meta[8b + c, i] (0x44, positions 0 and
//   1, past N).
// Interleaving eight columns turns their eight value streams (N rows of K/2 floats apart, which
// alias in L1 when K/2 is a multiple of 1024) into one sequential stream. The last two floats hold
// K and N as int32 bits.

constexpr int64_t kS24F32BlockCols = 8;   // columns interleaved in the packed layout = microkernel columns
constexpr int64_t kS24TileRows = 48;      // rows of x per task
constexpr int64_t kS24PanelCols = 256;    // output columns per task
// k per block walked by all of a task's rows and columns before the next (a multiple of 8, so a
// metadata byte never straddles two blocks): the task's x rows (48 x 2 KiB) and the panel's
// values (256 x 1 KiB) of a block stay in L2.
constexpr int64_t kS24DepthBlock = 512;

inline int64_t sparse24_f32_block_floats(int64_t k) { return 8 * (k / 2) + 2 * sparse24::meta_cols(k); }
inline int64_t sparse24_f32_packed_floats(int64_t n, int64_t k) {
  return (n + 7) / 8 * sparse24_f32_block_floats(k) + 2;
}
void sparse24_f32_pack(const float* values, const uint8_t* meta, int64_t n, int64_t k, float* out);
// Reads K and N back from the trailer; both 0 when the size does not match (callers reject).
void sparse24_f32_packed_shape(const float* packed, int64_t floats, int64_t* n, int64_t* k);

struct Sparse24F32Args {
  const float* x = nullptr;  // [m, k], row stride ldx
  int64_t m = 0, ldx = 0;
  const float* packed = nullptr;  // sparse24_f32_pack layout
  int64_t n = 0, k = 0;
  const float* bias = nullptr;  // [n] or null
  float* out = nullptr;         // [m, n] contiguous
};

struct Sparse24Plan {
  int64_t row_tiles = 0, panels = 0;
  int64_t tasks() const { return row_tiles * panels; }
  // Task t owns rows [*m_begin, *m_end) and columns [*n_begin, *n_end).
  void task_bounds(const Sparse24F32Args& a, int64_t t, int64_t* m_begin, int64_t* m_end, int64_t* n_begin,
                   int64_t* n_end) const {
    const int64_t tile = t % row_tiles, panel = t / row_tiles;
    *m_begin = tile * kS24TileRows;
    *m_end = std::min(a.m, *m_begin + kS24TileRows);
    *n_begin = panel * kS24PanelCols;
    *n_end = std::min(a.n, *n_begin + kS24PanelCols);
  }
};
Sparse24Plan sparse24_f32_plan(int64_t m, int64_t n);

// Runs tasks [task_begin, task_end) on the kernel of the active tier.
void sparse24_f32_run(const Sparse24F32Args& a, const Sparse24Plan& plan, int64_t task_begin, int64_t task_end);
void sparse24_f32_run_portable(const Sparse24F32Args& a, const Sparse24Plan& plan, int64_t task_begin,
                               int64_t task_end);

// The fp32 2:4 kernels of one tier (dispatch.h).
struct Sparse24F32Kernels {
  void (*run)(const Sparse24F32Args& a, const Sparse24Plan& plan, int64_t task_begin, int64_t task_end);
};
extern const Sparse24F32Kernels sparse24_f32_kernels_portable, sparse24_f32_kernels_avx2,
    sparse24_f32_kernels_avx512vnni;
extern const TierTable<Sparse24F32Kernels> sparse24_f32_tiers;

// ---------------------------------------------------------------- int8

constexpr int64_t kS24I8BlockCols = 16;  // output columns per VNNI vector
constexpr int64_t kS24I8PanelBlocks = 2; // blocks per microkernel tile
constexpr int64_t kS24I8TileRows = 8;    // rows of x per microkernel tile

inline int64_t sparse24_int8_pairs(int64_t k) { return (k + 7) / 8; }
inline int64_t sparse24_int8_packed_words(int64_t n, int64_t k) {
  return (n + 15) / 16 * sparse24_int8_pairs(k) * 20 + n + 2;
}

// Packs values int8 [n, k/2] + meta into out (sparse24_int8_packed_words(n, k) words).
void sparse24_int8_pack(const int8_t* values, const uint8_t* meta, int64_t n, int64_t k, int32_t* out);

struct PackedSparse24Int8 {
  const int8_t* data = nullptr;  // B * H * 80 bytes
  const int32_t* row_sum = nullptr;
  int64_t n = 0, k = 0, pairs = 0;
};
// Views a packed buffer of `words` words; n and k are read back from its trailer (0 when the
// trailer does not match the size, which callers reject).
PackedSparse24Int8 sparse24_int8_packed_view(const int32_t* packed, int64_t words);

// acc[m, n] = sum_k w[n, k] * (x[m, k] - x_zero_point) + bias_i32[n] (modulo 2^32), then
// out = clamp(requant(acc) + zero_point, qmin, qmax), exactly as int8_linear.
struct Sparse24Int8Args {
  const void* x = nullptr;  // [m, k], row stride ldx; int8 (x_signed) or uint8
  bool x_signed = false;
  int64_t m = 0, ldx = 0;
  int32_t x_zero_point = 0;
  PackedSparse24Int8 w{};
  const int32_t* bias_i32 = nullptr;
  RequantParams requant{};
  void* out = nullptr;  // [m, n] contiguous of requant.out_type
};

struct Sparse24Int8Plan {
  int64_t panels = 0, row_chunks = 0, chunk_rows = 0;
  int64_t panel_cols = kS24I8BlockCols * kS24I8PanelBlocks;
  // amx: the tasks run on the AMX kernel (hardware or emulated, per tile_unit()): panels of 64
  // columns, chunks of whole 32-row tile pairs walked chunk-major (the int8 GEMM's AMX plan).
  bool amx = false;
  bool chunk_major = false;
  int64_t tasks() const { return panels * row_chunks; }
  // Task t of an m x n product owns rows [*m_begin, *m_end) (a chunk of whole 8-row tiles, or
  // 32-row tile pairs on AMX) and columns [*n_begin, *n_end) (a panel of panel_cols).
  void task_bounds(int64_t m, int64_t n, int64_t t, int64_t* m_begin, int64_t* m_end, int64_t* n_begin,
                   int64_t* n_end) const {
    const int64_t panel = chunk_major ? t % panels : t / row_chunks;
    const int64_t chunk = chunk_major ? t / panels : t % row_chunks;
    *m_begin = chunk * chunk_rows;
    *m_end = std::min(m, *m_begin + chunk_rows);
    *n_begin = panel * panel_cols;
    *n_end = std::min(n, *n_begin + panel_cols);
  }
};
// k: the depth when the int8 kernels run the plan (the AMX choice needs it); 0 for the bf16 kernel,
// which has no AMX form.
Sparse24Int8Plan sparse24_int8_plan(int64_t m, int64_t n, int64_t threads, int64_t k = 0);

// Runs tasks [task_begin, task_end) on the kernel of the active tier (a tile tier only when
// plan.amx).
void sparse24_int8_run(const Sparse24Int8Args& a, const Sparse24Int8Plan& plan, int64_t task_begin, int64_t task_end);

// The int8 2:4 kernels of one tier (dispatch.h). The tile tiers (plan.amx): each task expands its
// panel's 2:4 blocks into dense int8 tiles in a per-thread buffer (sparse24_int8_block_to_tiles),
// then runs the AMX int8 GEMM on them; the weight in memory stays compressed. Same integers as
// every other tier.
struct Sparse24Int8Kernels {
  void (*run)(const Sparse24Int8Args& a, const Sparse24Int8Plan& plan, int64_t task_begin, int64_t task_end);
};
extern const Sparse24Int8Kernels sparse24_int8_kernels_portable, sparse24_int8_kernels_avx2,
    sparse24_int8_kernels_avx512vnni, sparse24_int8_kernels_avx512vbmi, sparse24_int8_kernels_amx,
    sparse24_int8_kernels_amx_emulated;
extern const TierTable<Sparse24Int8Kernels> sparse24_int8_tiers;

// ---------------------------------------------------------------- bf16
//
// y[m, n] = bf16(acc + bias[n]) with acc = 0, then for every group g of four k in order
//   acc = ftz(acc + v[2g + 1] * x[k1]);  acc = ftz(acc + v[2g] * x[k0])
// (k0 < k1 the group's two kept positions; bf16 inputs widened to fp32 exactly, a denormal input
// read as 0, each sum rounded to nearest even, ftz: a sum that is tiny flushed to a zero of its
// sign, x86's FTZ with tininess detected after rounding, see bf16_dot_step in sparse24.cpp): what
// AVX512_BF16's vdpbf16ps computes for one pair (the odd element first; checked bit for bit on
// Zen 4, including sums next to 2^-126), so the AVX-512 kernel and the portable emulation give the
// same bits. bias is fp32 and added with an ordinary fp32 add; bf16() rounds to nearest even and
// turns every NaN into the quiet NaN 0x7FC0.
//
// bf16 packed layout (sparse24_bf16_pack; uint16 elements, sparse24_bf16_packed_halves(n, k) of
// them): B = ceil(N / 16) blocks of 16 output columns, H = ceil(K / 8) pairs of groups. Block b,
// pair h is 144 bytes at byte (b * H + h) * 144:
//   bytes [0, 64):    dword i = (values[16b + i, 4h], values[16b + i, 4h + 1]): group 2h's pair
//   bytes [64, 128):  the same for values 4h + 2, 4h + 3 (group 2h + 1; 0 past K / 4 groups)
//   bytes [128, 144): byte i = meta[16b + i, h]
// (columns past N: values 0, meta 0x44); then int32 K and N.
inline int64_t sparse24_bf16_packed_halves(int64_t n, int64_t k) { return (n + 15) / 16 * ((k + 7) / 8) * 72 + 4; }
void sparse24_bf16_pack(const uint16_t* values, const uint8_t* meta, int64_t n, int64_t k, uint16_t* out);
// Reads K and N back from the trailer; both 0 when the size does not match (callers reject).
void sparse24_bf16_packed_shape(const uint16_t* packed, int64_t halves, int64_t* n, int64_t* k);

struct Sparse24Bf16Args {
  const uint16_t* x = nullptr;  // bf16 [m, k], row stride ldx
  int64_t m = 0, ldx = 0;
  const uint16_t* packed = nullptr;  // sparse24_bf16_pack layout
  int64_t n = 0, k = 0;
  const float* bias = nullptr;  // [n] or null
  uint16_t* out = nullptr;      // bf16 [m, n] contiguous
};

// Tasks: panels of 32 columns x chunks of whole 8-row tiles (the int8 plan's shape).
using Sparse24Bf16Plan = Sparse24Int8Plan;
// Runs tasks [task_begin, task_end) on the kernel of the active tier.
void sparse24_bf16_run(const Sparse24Bf16Args& a, const Sparse24Bf16Plan& plan, int64_t task_begin, int64_t task_end);
void sparse24_bf16_run_portable(const Sparse24Bf16Args& a, const Sparse24Bf16Plan& plan, int64_t task_begin,
                                int64_t task_end);

// The bf16 2:4 kernels of one tier (dispatch.h): avx512bf16 (vdpbf16ps), avx2 (without
// AVX512_BF16: AVX2 and AVX-512 CPUs before Cooper Lake / Zen 4; the same bits from fp32 FMAs under
// MXCSR FTZ + DAZ) and portable.
struct Sparse24Bf16Kernels {
  void (*run)(const Sparse24Bf16Args& a, const Sparse24Bf16Plan& plan, int64_t task_begin, int64_t task_end);
};
extern const Sparse24Bf16Kernels sparse24_bf16_kernels_portable, sparse24_bf16_kernels_avx2,
    sparse24_bf16_kernels_avx512bf16;
extern const TierTable<Sparse24Bf16Kernels> sparse24_bf16_tiers;
// The tier of the bf16 kernel that runs now: "avx512bf16", "avx2" or "portable".
const char* sparse24_bf16_path();

// bf16 on tiles. From kSparse24Bf16TileMinRows rows on a tile tier (sparse24_bf16_uses_tiles) the weight of each
// 64-column panel is expanded once per task into dense bf16 B tiles (the pruned positions +0.0) and multiplied
// with tdpbf16ps (amx_bf16-inl.h): the same products, accumulated as the instruction does (EmulatedTiles::dot_bf16:
// per 32 k of the dense K, an even-k and an odd-k fp32 chain summed into the accumulator) instead of the
// per-value steps above, then the same bias add and bf16 rounding. Not the bits of the vector
// tiers: within (K + 2) * 2^-24 * sum_k |x w| (+ K * 2^-126 for flushed partial sums) of the exact sum before
// the rounding to bf16, like them (reference.sparse24_bf16_linear_bound); the amx tier equals its scalar model
// (amx_emulated) bit for bit. Measured on Sapphire Rapids (2 threads, K = N = 4096, ratio to bf16 F.linear,
// tiles / avx512bf16 kernel): M = 4: 1.22x / 1.82x; M = 8: 1.19x / 1.0x; M = 16: 1.22x / 0.48x; M = 64:
// 1.37x / 0.23x; M = 256: 0.97x / 0.13x. The expansion into tiles is a cost per call that the vector kernel,
// which reads only the compressed weight, does not pay; from 8 rows its fp32 work costs more.
constexpr int64_t kSparse24Bf16TileMinRows = 8;
bool sparse24_bf16_uses_tiles(int64_t m);
void sparse24_bf16_tiles_run(const Sparse24Bf16Args& a, const Int8GemmPlan& plan, int64_t task_begin, int64_t task_end);
struct Sparse24Bf16TileKernels {
  void (*run)(const Sparse24Bf16Args& a, const Int8GemmPlan& plan, int64_t task_begin, int64_t task_end);
};
// Only the tile tiers have this kernel (amx_emulated is also the table's portable entry, so that the walk always
// ends; sparse24_bf16_uses_tiles gates its use).
extern const Sparse24Bf16TileKernels sparse24_bf16_tile_kernels_amx, sparse24_bf16_tile_kernels_amx_emulated;
extern const TierTable<Sparse24Bf16TileKernels> sparse24_bf16_tile_tiers;

// ---------------------------------------------------------------- conv2d as rows of patches
//
// A 2:4 conv's K is kh x kw x in_channels in (kernel row, kernel column, channel) order: every
// group of four is four input channels at one kernel tap (NVIDIA's convention for 2:4 convs; the
// Python side's sparse24_layout.weight_rows). An input row is then kh x kw runs of C contiguous
// NHWC bytes, gathered a chunk of rows at a time.
struct ConvGeometry {
  int64_t n = 0, h = 0, w = 0, c = 0;  // input [n, h, w, c], contiguous (channels_last)
  int64_t kh = 1, kw = 1, sh = 1, sw = 1, ph = 0, pw = 0, dh = 1, dw = 1;
  int64_t oh = 0, ow = 0;
  int64_t k() const { return c * kh * kw; }
  int64_t rows() const { return n * oh * ow; }
};

// out[r - row_begin][(ky * kw + kx) * c + ci] = x[img, oy * sh - ph + ky * dh, ox * sw - pw + kx * dw, ci]
// for rows r = (img * oh + oy) * ow + ox in [row_begin, row_end); positions in the padding are
// pad_value (the input zero point, or 0.0f). out has row stride g.k() elements.
template <typename T>
void sparse24_gather_patches(const T* x, const ConvGeometry& g, int64_t row_begin, int64_t row_end, T pad_value,
                             T* out) {
  const int64_t k = g.k();
  for (int64_t r = row_begin; r < row_end; ++r) {
    const int64_t img = r / (g.oh * g.ow), oy = (r / g.ow) % g.oh, ox = r % g.ow;
    T* dst = out + (r - row_begin) * k;
    for (int64_t ky = 0; ky < g.kh; ++ky) {
      const int64_t iy = oy * g.sh - g.ph + ky * g.dh;
      for (int64_t kx = 0; kx < g.kw; ++kx, dst += g.c) {
        const int64_t ix = ox * g.sw - g.pw + kx * g.dw;
        if (iy < 0 || iy >= g.h || ix < 0 || ix >= g.w) {
          std::fill(dst, dst + g.c, pad_value);
        } else {
          std::memcpy(dst, x + ((img * g.h + iy) * g.w + ix) * g.c, static_cast<size_t>(g.c) * sizeof(T));
        }
      }
    }
  }
}
void sparse24_int8_run_portable(const Sparse24Int8Args& a, const Sparse24Int8Plan& plan, int64_t task_begin,
                                int64_t task_end);

// Expands block `block` (the 80-byte pairs of one 16-column block of the int8 packed layout, `pairs`
// of them) into the tile layout of the AMX int8 GEMM: group g (k 4g .. 4g + 3) of column i at
// tiles[g * 64 + 4 * i + j], for g < groups (a multiple of 16, >= 2 * pairs; groups past the
// packed ones are zero). A stored value goes to its meta position; every other byte is 0. Where a
// nibble names one position twice (only in zero padding), the second value is the one kept.
inline void sparse24_int8_block_to_tiles_portable(const int8_t* block, int64_t pairs, int64_t groups, uint8_t* tiles) {
  std::memset(tiles, 0, static_cast<size_t>(groups) * 64);
  for (int64_t h = 0; h < pairs; ++h) {
    const uint8_t* v = reinterpret_cast<const uint8_t*>(block + h * 80);
    for (int i = 0; i < 16; ++i) {
      const uint8_t m = v[64 + i];
      for (int half = 0; half < 2; ++half) {
        const int nibble = (m >> (4 * half)) & 15;
        uint8_t* dst = tiles + (2 * h + half) * 64 + 4 * i;
        dst[nibble & 3] = v[4 * i + 2 * half];
        dst[nibble >> 2] = v[4 * i + 2 * half + 1];
      }
    }
  }
}

}  // namespace ck::cpu
