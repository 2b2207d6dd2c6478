// int8 x int8 -> int32 GEMM with a fused output stage (torch-free).
//
// Packed weight layout (what int8_pack_weight writes after the header rows of ck/packed_header.h,
// and what the kernels read: an int32 buffer of n * (k_pad / 4 + 2) words):
//   k_pad = round_up(k, 4). Rows are grouped in blocks of 16 (the last block holds n % 16 rows when
//   n is not a multiple of 16). Block b starts at byte 16 * b * k_pad and stores, for each group of
//   four k (g = 0 .. k_pad / 4 - 1), the four bytes w[16b + i, 4g .. 4g + 3] of each of its rows i:
//   byte offset (g * rows_in_block + i) * 4 + j. k beyond the real k is zero. This is the operand
//   order of VNNI `vpdpbusd`: one 64-byte load feeds 16 output columns with four k each.
//   After the n * k_pad weight bytes: int32 row_sum[n] (sum_k w[n, k], for zero-point and
//   signed-input corrections), then int32 k[n] (the unpadded k, repeated, to validate inputs).
#pragma once

#include <cstdint>
#include <cstring>
#include <limits>

#include "dispatch.h"
#include "requantize.h"

namespace ck::cpu {

constexpr int64_t kInt8BlockRows = 16;   // output columns per VNNI vector
constexpr int64_t kInt8PanelBlocks = 4;  // blocks per panel: 64 columns share each A broadcast
constexpr int64_t kInt8PanelCols = kInt8BlockRows * kInt8PanelBlocks;
constexpr int64_t kInt8TileRows = 6;     // rows of A per microkernel: 6 x 4 = 24 zmm accumulators

inline int64_t int8_padded_k(int64_t k) { return (k + 3) / 4 * 4; }
inline int64_t int8_packed_words_per_row(int64_t k) { return int8_padded_k(k) / 4 + 2; }

struct PackedInt8Weight {
  const int8_t* data;
  const int32_t* row_sum;
  int64_t n, k, k_pad;
};

// Writes the packed layout of w [n, k] (row stride ldw) into out (n * int8_packed_words_per_row(k)).
void int8_pack_weight(const int8_t* w, int64_t n, int64_t k, int64_t ldw, int32_t* out);
// Views a packed buffer of n rows; the unpadded k is read back from its trailer.
PackedInt8Weight int8_packed_view(const int32_t* packed, int64_t n, int64_t words_per_row);

enum class EpilogueKind : int {
  kInt32 = 0,       // out[m, n] = acc (int32)
  kRequantize = 1,  // out[m, n] = clamp(requant(acc) + zero_point) as int8 / uint8 / int32
  kFloat = 2,       // out[m, n] = float(acc) * x_scale[m] * w_scale[n] + bias_f[n] (fp32, no FMA)
};

// acc[m, n] = sum_k w[n, k] * (x[m, k] - x_zero_point) + bias_i32[n], computed modulo 2^32 like
// int32 hardware (exact whenever the true value fits in int32, which callers guarantee for the sum).
struct Int8GemmArgs {
  const void* x = nullptr;  // [m, k], row stride ldx; int8 (x_signed) or uint8
  bool x_signed = false;
  int64_t m = 0, ldx = 0;
  int32_t x_zero_point = 0;
  PackedInt8Weight w{};
  const int32_t* bias_i32 = nullptr;  // [n] or null
  EpilogueKind kind = EpilogueKind::kInt32;
  RequantParams requant{};            // kRequantize
  const float* x_scale = nullptr;     // kFloat: [m] or [1] (x_scale_per_row)
  bool x_scale_per_row = false;
  const float* w_scale = nullptr;     // kFloat: [n] or [1] (w_scale_per_channel)
  bool w_scale_per_channel = false;
  const float* bias_f = nullptr;      // kFloat: [n] or null
  void* out = nullptr;                // [m, n], type by kind / requant.out_type
  int64_t ldo = 0;                    // row stride of out in elements; 0 means n (contiguous)
  int64_t out_stride() const { return ldo > 0 ? ldo : w.n; }
};

// The scalar output stage of args for one accumulator: writes out[m, n] (per kind, per channel n).
void write_output(const Int8GemmArgs& args, int64_t m, int64_t n, int32_t acc);

// sum_k w[n, k] * (x - x_zero_point) + bias[n], given acc = sum_k w[n, k] * x, modulo 2^32.
inline int32_t int8_corrected_acc(const Int8GemmArgs& a, int64_t n, int32_t acc) {
  uint32_t v =
      static_cast<uint32_t>(acc) - static_cast<uint32_t>(a.x_zero_point) * static_cast<uint32_t>(a.w.row_sum[n]);
  if (a.bias_i32 != nullptr) v += static_cast<uint32_t>(a.bias_i32[n]);
  return static_cast<int32_t>(v);
}

// Work split: tasks are (panel of 64 columns, chunk of rows), panel-major so that a thread's
// consecutive tasks reuse one weight panel from L2. amx: the tasks run on the AMX kernel (hardware or
// emulated, per tile_unit()); else on the vector kernel of the active ISA.
// chunk_major: task t is (panel t % panels, chunk t / panels) instead (tasks sharing a chunk of x).
struct Int8GemmPlan {
  int64_t panels = 0, row_chunks = 0, chunk_rows = 0;
  bool amx = false;
  bool chunk_major = false;
  int64_t tasks() const { return panels * row_chunks; }
  int64_t panel_of(int64_t t) const { return chunk_major ? t % panels : t / row_chunks; }
  int64_t chunk_of(int64_t t) const { return chunk_major ? t / panels : t % row_chunks; }
};
// Whether an int8 GEMM of m rows, n columns and depth k runs on the AMX kernel now (tiles
// available, and the rule measured on Sapphire Rapids, 2 threads, int8_linear against the VNNI
// kernel): m >= 9 always (M = 12: 1.2-1.3x VNNI); m = 8 while the weight is at most 4 MiB (K = N =
// 1024: 1.15x, 2048: 1.08x; at 4096 the weight streams from memory and VNNI is 1.15x faster);
// m < 8 never (M = 4: VNNI 1.1-1.15x; a tile row holds 16 rows, so half or more of it is padding).
bool int8_gemm_uses_amx(int64_t m, int64_t n, int64_t k);
// Bytes of x per row chunk of the AMX kernel.
constexpr int64_t kAmxChunkBytes = 1 << 20;
// Rows per chunk are a multiple of 32 (two row tiles) on the AMX kernel, of 6 on the VNNI kernel.
// k is the depth (int8_gemm_uses_amx, kAmxChunkBytes).
Int8GemmPlan int8_gemm_plan(int64_t m, int64_t n, int64_t threads, int64_t k);

// The task split of the AMX bf16 GEMMs on decoded weights (amx_bf16-inl.h): panels of 64 columns, each
// decoded once per task, rows in as few chunks (of 32-row tile pairs) as give every thread two tasks.
Int8GemmPlan amx_bf16_plan(int64_t m, int64_t n, int64_t threads);
// Runs tasks [task_begin, task_end) on the kernel of the active tier (a tile tier only when
// plan.amx).
void int8_gemm_run(const Int8GemmArgs& args, const Int8GemmPlan& plan, int64_t task_begin, int64_t task_end);
void int8_gemm_run_portable(const Int8GemmArgs& args, const Int8GemmPlan& plan, int64_t task_begin, int64_t task_end);
// The rows of the direct AMX conv (stride 1, groups 1, in_channels % 64 == 0): the input is copied
// once into a zero-point-padded NHWC image of height hp and width wp, and GEMM row v is the padded
// pixel v (all images one after another). The output pixel (img, oh, ow) then reads padded pixel
// v + kh * dilation_h * wp + kw * dilation_w for tap (kh, kw) with v = (img * hp + oh) * wp + ow, so
// every tap of every row tile is one tile load of stride C: no gathered rows. Rows with oh >= out_h
// or ow >= out_w (the padding's rows and columns) are computed and dropped.
struct VirtualConvRows {
  int64_t images = 0, hp = 0, wp = 0, out_h = 0, out_w = 0;
  int64_t rows() const { return images * hp * wp; }
  // A position on the grid, advanced without divisions (the output stage walks rows in order).
  struct Cursor {
    int64_t img = 0, oh = 0, ow = 0;
  };
  Cursor cursor(int64_t v) const {
    const int64_t rem = v % (hp * wp);
    return {v / (hp * wp), rem / wp, rem % wp};
  }
  // The run of at most `limit` GEMM rows from c that are all output rows, consecutive from
  // *first, or all dropped (*first = -1): its length (>= 1; runs end where a padded row does).
  // Advances c past the run.
  int64_t run(Cursor& c, int64_t limit, int64_t* first) const {
    const bool out = c.img < images && c.oh < out_h && c.ow < out_w;
    *first = out ? (c.img * out_h + c.oh) * out_w + c.ow : -1;
    const int64_t end = out ? out_w : wp;  // a dropped run reaches the padded row's end
    const int64_t length = end - c.ow < limit ? end - c.ow : limit;
    c.ow += length;
    if (c.ow == wp) {
      c.ow = 0;
      if (++c.oh == hp) {
        c.oh = 0;
        ++c.img;
      }
    }
    return length;
  }
};
// Tasks of plan over args (x: the padded image, ldx = C, m: a multiple of 16 >= rows.rows(), the
// image followed by enough readable bytes for the last tile's taps) with A chunk c at byte
// a_offsets[c] of each row, on the AMX kernel of the active tile tier. Only for a plan with
// plan.amx (int8_gemm_uses_amx), which guarantees that a tile tier is enabled.
void int8_conv_direct_run(const Int8GemmArgs& args, const Int8GemmPlan& plan, const int64_t* a_offsets,
                          const VirtualConvRows& rows, int64_t task_begin, int64_t task_end);

// The int8 GEMM kernels of one tier (dispatch.h).
struct Int8GemmKernels {
  void (*run)(const Int8GemmArgs& args, const Int8GemmPlan& plan, int64_t task_begin, int64_t task_end);
  // int8_conv_direct_run's kernel; null on the vector tiers (the direct conv runs only on a plan
  // with plan.amx).
  void (*conv_direct_run)(const Int8GemmArgs& args, const Int8GemmPlan& plan, const int64_t* a_offsets,
                          const VirtualConvRows& rows, int64_t task_begin, int64_t task_end);
};
extern const Int8GemmKernels int8_gemm_kernels_portable, int8_gemm_kernels_avx2, int8_gemm_kernels_avx512vnni,
    int8_gemm_kernels_amx, int8_gemm_kernels_amx_emulated;
extern const TierTable<Int8GemmKernels> int8_gemm_tiers;

// The register-only tile loop (4 independent accumulator tiles, no memory traffic) that bounds
// every AMX kernel: runs `iterations` x 4 tdpbssd (or tdpbf16ps) on the calling thread and returns
// the operations done. Only with tile_unit() == kHardware.
int64_t amx_register_loop(bool bf16, int64_t iterations);

// Symmetric per-row quantization for dynamic activations: scale[r] = max|x[r, :]| / qmax
// (1 when the row is all zero), q = clamp(round_half_even(x / scale), qmin, qmax), computed with a
// true fp32 division so every path and the reference agree exactly.
// A row holding any NaN or +-Inf gets scale[r] = NaN (kNonFiniteRowScale) and q[r, :] = 0, so the
// float epilogue acc * scale gives NaN for every output of that row and never touches another row.
// Detection rides along the max pass: max|x| is taken over the bit patterns of |x| as integers
// (the same order as the floats for non-negative values, exact in any order), and a row is
// non-finite exactly when that maximum is >= kFloatExponentMask (Inf is 0x7f800000, NaN above).
constexpr uint32_t kFloatAbsMask = 0x7fffffffu;
constexpr uint32_t kFloatExponentMask = 0x7f800000u;
constexpr float kNonFiniteRowScale = std::numeric_limits<float>::quiet_NaN();
// The scale of one row from amax_bits, the integer maximum of its |x| bit patterns, written once for
// every tier: *scale = amax / qmax in fp32 (1 when the row is all zero) and true; for a row with a NaN
// or +-Inf (amax_bits >= kFloatExponentMask), *scale = kNonFiniteRowScale, the row's cols q bytes are
// zeroed and false (nothing left to quantize).
inline bool quantize_rows_scale(uint32_t amax_bits, int32_t qmax, int64_t cols, int8_t* q_row, float* scale) {
  if (amax_bits >= kFloatExponentMask) {
    *scale = kNonFiniteRowScale;
    std::memset(q_row, 0, static_cast<size_t>(cols));
    return false;
  }
  float amax;
  std::memcpy(&amax, &amax_bits, sizeof(amax));
  const float s = amax / static_cast<float>(qmax);
  *scale = s == 0.0f ? 1.0f : s;
  return true;
}
void quantize_rows(const float* x, int64_t rows, int64_t cols, int64_t row_begin, int64_t row_end, int32_t qmin,
                   int32_t qmax, int8_t* q, float* scale);
void quantize_rows_portable(const float* x, int64_t cols, int64_t row_begin, int64_t row_end, int32_t qmin,
                            int32_t qmax, int8_t* q, float* scale);
// quantize_per_tensor over rows [row_begin, row_end) of a contiguous fp32 x [rows, cols]:
// q = clamp(round_half_even(x / scale) + zero_point, qmin, qmax) as int8 (out_signed) or uint8, with
// one correctly rounded fp32 division x / scale per element (not x * (1 / scale)), rounding half to
// even, then the clamp: the bits of numerics.quantize. An element that is NaN or +-Inf gives
// q = zero_point and sets nonfinite_row[r] (else it is cleared), so that callers can compute such
// rows another way; a finite x whose x / scale overflows saturates like any other.
struct QuantizePerTensorParams {
  float scale = 1.0f;
  int32_t zero_point = 0, qmin = 0, qmax = 255;
  bool out_signed = false;
};
void quantize_per_tensor(const float* x, int64_t cols, int64_t row_begin, int64_t row_end,
                         const QuantizePerTensorParams& p, void* q, bool* nonfinite_row);
void quantize_per_tensor_portable(const float* x, int64_t cols, int64_t row_begin, int64_t row_end,
                                  const QuantizePerTensorParams& p, void* q, bool* nonfinite_row);

// The quantize_rows and quantize_per_tensor kernels of one tier (dispatch.h).
struct QuantizeRowsKernels {
  void (*rows)(const float* x, int64_t cols, int64_t row_begin, int64_t row_end, int32_t qmin, int32_t qmax, int8_t* q,
               float* scale);
  void (*per_tensor)(const float* x, int64_t cols, int64_t row_begin, int64_t row_end, const QuantizePerTensorParams& p,
                     void* q, bool* nonfinite_row);
};
extern const QuantizeRowsKernels quantize_rows_kernels_portable, quantize_rows_kernels_avx2,
    quantize_rows_kernels_avx512vnni;
extern const TierTable<QuantizeRowsKernels> quantize_rows_tiers;

}  // namespace ck::cpu
