// AVX-512 2:4 sparse kernels; compiled for AVX-512 by the pragma below, chosen at run time.
//
// fp32 (vectorized over rows of x, so no shuffles are needed): x is first transposed per tile of
// 48 rows into xt[k][48] (the caller's workspace, once per call). A task owns a tile and 256
// output columns; for each block of 512 k, each output column walks its stored values j in order:
// broadcast values[n, j] and fused-multiply-add it with the 16-row vectors xt[k_j][...]. Every FMA
// does useful work (half the FMAs of dense) and its x operand is a plain aligned load whose
// address is one byte of the packed offsets area (decoding the nibbles instead took seven scalar
// instructions per value and held the kernel at half its FMA rate). Partial sums live in a transposed accumulator tile
// yt[256 columns][48 rows] between k blocks, and are written to out (plus bias) at the end. The accumulation order per
// output is the order of the portable path, so results are bit-identical.
//
// int8 (VNNI, vectorized over 16 output columns): per pair of groups h (eight k), the eight x bytes
// of a row are broadcast to every 128-bit lane, one `vpshufb` with the packed per-column control
// gathers each column's four x bytes, and one `vpdpbusd` multiplies them with the column's four
// stored weights: one shuffle plus one dot product per eight k, where dense needs two dot
// products. int8 x is biased to uint8 by flipping its sign bit and corrected in the epilogue, as
// in int8_gemm_avx512vnni.cpp; the epilogue is the shared fixed-point output stage.
#include "sparse24.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,avx2,fma")
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#include <algorithm>
#include <cstring>

#include "requant_avx512.h"

namespace ck::cpu {
namespace {

// MV: 16-row vectors in use (1..3; fewer for the last rows of x). The eight columns of one packed
// block are interleaved: 8 x MV independent accumulators hide the FMA latency, and the block's
// 16 values of a group are one sequential 64-byte read.
// Runs groups [g_begin, g_end) of packed block `blk` (offsets area `ob`) against the transposed x
// tile `xt` (kS24TileRows floats per k, k of the tile's first column = 0), accumulating into
// yt[8][48]. Per stored value: one byte load gives the address of its x vector (offset byte * 8
// bytes past the group's first k), one broadcast gives the weight, MV FMAs with memory operands.
template <int MV>
void f32_block(const float* blk, const uint8_t* ob, int64_t g_begin, int64_t g_end, const float* xt,
               float* yt, bool first) {
  constexpr int64_t ls = kS24TileRows;
  constexpr int64_t ys = kS24TileRows;
  __m512 acc[8][MV];
  for (int c = 0; c < 8; ++c)
    for (int q = 0; q < MV; ++q) acc[c][q] = first ? _mm512_setzero_ps() : _mm512_load_ps(yt + c * ys + 16 * q);
  for (int64_t g = g_begin; g < g_end; ++g) {
    const float* vg = blk + 16 * g;
    const uint8_t* og = ob + 16 * g;
    const char* xg = reinterpret_cast<const char*>(xt + 4 * g * ls);
    for (int c = 0; c < 8; ++c) {
      const float* x0 = reinterpret_cast<const float*>(xg + 8 * static_cast<int64_t>(og[c]));
      const float* x1 = reinterpret_cast<const float*>(xg + 8 * static_cast<int64_t>(og[8 + c]));
      const __m512 w0 = _mm512_set1_ps(vg[c]);
      const __m512 w1 = _mm512_set1_ps(vg[8 + c]);
      for (int q = 0; q < MV; ++q) acc[c][q] = _mm512_fmadd_ps(w0, _mm512_load_ps(x0 + 16 * q), acc[c][q]);
      for (int q = 0; q < MV; ++q) acc[c][q] = _mm512_fmadd_ps(w1, _mm512_load_ps(x1 + 16 * q), acc[c][q]);
    }
  }
  for (int c = 0; c < 8; ++c)
    for (int q = 0; q < MV; ++q) _mm512_store_ps(yt + c * ys + 16 * q, acc[c][q]);
}

template <int MV>
void f32_task(const Sparse24F32Args& a, int64_t tile, int64_t n_begin, int64_t n_end, float* yt) {
  const int64_t k = a.k, block = sparse24_f32_block_floats(k), offsets_at = sparse24_f32_offsets_at(k);
  const int64_t m_begin = tile * kS24TileRows, rows = std::min(kS24TileRows, a.m - m_begin);
  const float* xt = a.xt + tile * kS24TileRows * k;
  // k blocks of kS24DepthBlock: the transposed x of a block (48 x 512 floats = 96 KiB) stays in L2
  // while every column block of the panel walks it, and each column block's values and offsets
  // for the k block are one sequential stream (short interleaved streams defeat the hardware
  // prefetcher).
  for (int64_t kb = 0; kb < k; kb += kS24DepthBlock) {
    const int64_t g_begin = kb / 4, g_end = std::min(k, kb + kS24DepthBlock) / 4;
    for (int64_t n = n_begin; n < n_end; n += 8) {
      const float* blk = a.packed + (n / 8) * block;
      f32_block<MV>(blk, reinterpret_cast<const uint8_t*>(blk + offsets_at), g_begin, g_end, xt,
                    yt + (n - n_begin) * kS24TileRows, kb == 0);
    }
  }
  // yt[column][row] -> out[row][column] (+ bias): the one rounding after the dot product.
  for (int64_t r = 0; r < rows; ++r) {
    float* o = a.out + (m_begin + r) * a.n;
    for (int64_t n = n_begin; n < n_end; ++n) {
      const float acc = yt[(n - n_begin) * kS24TileRows + r];
      o[n] = a.bias != nullptr ? acc + a.bias[n] : acc;
    }
  }
}

// One row of x, vectorized over the eight columns of a packed block: the four x of a group are
// broadcast to both 128-bit lanes and one `vpermilps` per stored value picks each column's x by
// the low two bits of its metadata (bits [1:0] of the control are the position; the higher bits
// of the shifted meta byte are ignored by the instruction). NB blocks run side by side so that NB
// independent FMA chains hide the latency (each column's chain is sequential in k, the order of
// the portable path). No transposition, no gathers, no padded lanes.
template <int NB>
void f32_row_blocks(const Sparse24F32Args& a, int64_t m, int64_t n) {
  const int64_t k = a.k, half = k / 2, block = sparse24_f32_block_floats(k), groups = k / 4;
  const float* xr = a.x + m * a.ldx;
  const float* v[NB];
  const uint8_t* mb[NB];
  __m256 acc[NB];
  for (int b = 0; b < NB; ++b) {
    v[b] = a.packed + (n / 8 + b) * block;
    mb[b] = reinterpret_cast<const uint8_t*>(v[b] + 8 * half);
    acc[b] = _mm256_setzero_ps();
  }
  auto meta_lanes = [&](int b, int64_t pair) {
    return _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(mb[b] + pair * 8)));
  };
  int64_t g = 0;
  for (; g + 2 <= groups; g += 2) {
    const __m256 xa = _mm256_broadcast_ps(reinterpret_cast<const __m128*>(xr + 4 * g));
    const __m256 xb = _mm256_broadcast_ps(reinterpret_cast<const __m128*>(xr + 4 * g + 4));
    for (int b = 0; b < NB; ++b) {
      const __m256i ctl = meta_lanes(b, g / 2);
      const float* vg = v[b] + 16 * g;
      acc[b] = _mm256_fmadd_ps(_mm256_loadu_ps(vg), _mm256_permutevar_ps(xa, ctl), acc[b]);
      acc[b] = _mm256_fmadd_ps(_mm256_loadu_ps(vg + 8), _mm256_permutevar_ps(xa, _mm256_srli_epi32(ctl, 2)), acc[b]);
      acc[b] = _mm256_fmadd_ps(_mm256_loadu_ps(vg + 16), _mm256_permutevar_ps(xb, _mm256_srli_epi32(ctl, 4)), acc[b]);
      acc[b] = _mm256_fmadd_ps(_mm256_loadu_ps(vg + 24), _mm256_permutevar_ps(xb, _mm256_srli_epi32(ctl, 6)), acc[b]);
    }
  }
  if (g < groups) {  // K % 8 == 4: the last group is the low nibble of the last meta byte
    const __m256 xa = _mm256_broadcast_ps(reinterpret_cast<const __m128*>(xr + 4 * g));
    for (int b = 0; b < NB; ++b) {
      const __m256i ctl = meta_lanes(b, g / 2);
      const float* vg = v[b] + 16 * g;
      acc[b] = _mm256_fmadd_ps(_mm256_loadu_ps(vg), _mm256_permutevar_ps(xa, ctl), acc[b]);
      acc[b] = _mm256_fmadd_ps(_mm256_loadu_ps(vg + 8), _mm256_permutevar_ps(xa, _mm256_srli_epi32(ctl, 2)), acc[b]);
    }
  }
  float* o = a.out + m * a.n;
  for (int b = 0; b < NB; ++b) {
    alignas(32) float y[8];
    _mm256_store_ps(y, acc[b]);
    const int64_t n0 = n + 8 * b;
    for (int64_t c = 0; c < 8 && n0 + c < a.n; ++c) o[n0 + c] = a.bias != nullptr ? y[c] + a.bias[n0 + c] : y[c];
  }
}

void f32_single_row(const Sparse24F32Args& a, int64_t m, int64_t n_begin, int64_t n_end) {
  constexpr int64_t kRowBlocks = 4;
  // Panels are whole blocks; only the block that holds column N - 1 can be partial.
  const int64_t blocks = (n_end - n_begin + 7) / 8;
  int64_t b = 0;
  for (; b + kRowBlocks <= blocks; b += kRowBlocks) f32_row_blocks<kRowBlocks>(a, m, n_begin + 8 * b);
  switch (blocks - b) {
    case 3:
      f32_row_blocks<3>(a, m, n_begin + 8 * b);
      break;
    case 2:
      f32_row_blocks<2>(a, m, n_begin + 8 * b);
      break;
    case 1:
      f32_row_blocks<1>(a, m, n_begin + 8 * b);
      break;
    default:
      break;
  }
}

}  // namespace

void sparse24_f32_run_avx512(const Sparse24F32Args& a, const Sparse24Plan& plan, int64_t task_begin,
                             int64_t task_end) {
  static_assert(kS24TileRows == 48 && kS24PanelCols % 8 == 0, "tiles of 3 x 16 rows, panels of 8-column blocks");
  alignas(64) float yt[kS24PanelCols * kS24TileRows];
  for (int64_t t = task_begin; t < task_end; ++t) {
    const int64_t tile = t % plan.row_tiles, panel = t / plan.row_tiles;
    const int64_t rows = std::min(kS24TileRows, a.m - tile * kS24TileRows);
    const int64_t n_begin = panel * kS24PanelCols, n_end = std::min(a.n, n_begin + kS24PanelCols);
    if (rows == 1) {  // sparse24_f32_needs_workspace(): the transposed tile is filled but unused here
      f32_single_row(a, tile * kS24TileRows, n_begin, n_end);
      continue;
    }
    switch ((rows + 15) / 16) {
      case 1:
        f32_task<1>(a, tile, n_begin, n_end, yt);
        break;
      case 2:
        f32_task<2>(a, tile, n_begin, n_end, yt);
        break;
      default:
        f32_task<3>(a, tile, n_begin, n_end, yt);
        break;
    }
  }
}

// ---------------------------------------------------------------- int8

namespace {

// The eight x bytes of pair h in both halves of every 128-bit lane; only `bytes` (4 or 8) exist.
inline __m512i broadcast_x_pair(const uint8_t* p, int64_t bytes) {
  int64_t v = 0;
  std::memcpy(&v, p, static_cast<size_t>(bytes));
  return _mm512_set1_epi64(v);
}

// MR: rows of x in the tile (1..6). NV: blocks of 16 columns (1..2). kSigned: int8 x (sign flip).
template <int MR, int NV, bool kSigned>
void int8_tile(const Sparse24Int8Args& a, int64_t m0, int64_t n0) {
  const int64_t k = a.w.k, pairs = a.w.pairs, full_pairs = k / 8;
  const uint8_t* x = static_cast<const uint8_t*>(a.x) + m0 * a.ldx;
  const int8_t* wb[NV];
  for (int v = 0; v < NV; ++v) wb[v] = a.w.data + ((n0 / 16 + v) * pairs) * 128;
  const __m512i flip = _mm512_set1_epi8(static_cast<char>(0x80));

  __m512i acc[MR][NV];
  for (int r = 0; r < MR; ++r)
    for (int v = 0; v < NV; ++v) acc[r][v] = _mm512_setzero_si512();

  auto step = [&](int64_t h, int64_t bytes) {
    __m512i val[NV], ctl[NV];
    for (int v = 0; v < NV; ++v) {
      val[v] = _mm512_loadu_si512(wb[v] + h * 128);
      ctl[v] = _mm512_loadu_si512(wb[v] + h * 128 + 64);
    }
    for (int r = 0; r < MR; ++r) {
      __m512i xb = broadcast_x_pair(x + r * a.ldx + 8 * h, bytes);
      if (kSigned) xb = _mm512_xor_si512(xb, flip);
      for (int v = 0; v < NV; ++v)
        acc[r][v] = _mm512_dpbusd_epi32(acc[r][v], _mm512_shuffle_epi8(xb, ctl[v]), val[v]);
    }
  };
  for (int64_t h = 0; h < full_pairs; ++h) step(h, 8);
  if (pairs > full_pairs) step(full_pairs, 4);

  // bias[n] - (x_zero_point + 128 * kSigned) * row_sum[n], modulo 2^32.
  const __m512i zp_total = _mm512_set1_epi32(-(a.x_zero_point + (kSigned ? 128 : 0)));
  const RequantParams& p = a.requant;
  const ClampLanes clamp = clamp_lanes(p);
  const int64_t ldo = a.w.n;
  for (int v = 0; v < NV; ++v) {
    const int64_t n = n0 + 16 * v;
    const __mmask16 valid = lane_mask(a.w.n - n);
    __m512i column_term = _mm512_mullo_epi32(_mm512_maskz_loadu_epi32(valid, a.w.row_sum + n), zp_total);
    if (a.bias_i32 != nullptr) column_term = _mm512_add_epi32(column_term, _mm512_maskz_loadu_epi32(valid, a.bias_i32 + n));
    const RequantLanes lanes = p.per_channel ? requant_lanes(_mm512_maskz_loadu_epi32(valid, p.m0 + n),
                                                             _mm512_maskz_loadu_epi32(valid, p.shift + n))
                                             : requant_lanes(_mm512_set1_epi32(p.m0[0]), _mm512_set1_epi32(p.shift[0]));
    for (int r = 0; r < MR; ++r) {
      const __m512i y = multiply_by_quantized_multiplier(_mm512_add_epi32(acc[r][v], column_term), lanes, p.rounding);
      store_lanes(a.out, (m0 + r) * ldo + n, clamp_add_zero_point(y, clamp), valid, p.out_type);
    }
  }
}

using Int8TileFn = void (*)(const Sparse24Int8Args&, int64_t, int64_t);

template <bool kSigned, int MR>
constexpr Int8TileFn int8_tile_row[2] = {int8_tile<MR, 1, kSigned>, int8_tile<MR, 2, kSigned>};

template <bool kSigned>
Int8TileFn pick_int8_tile(int mr, int nv) {
  static constexpr const Int8TileFn* rows[6] = {int8_tile_row<kSigned, 1>, int8_tile_row<kSigned, 2>,
                                                int8_tile_row<kSigned, 3>, int8_tile_row<kSigned, 4>,
                                                int8_tile_row<kSigned, 5>, int8_tile_row<kSigned, 6>};
  return rows[mr - 1][nv - 1];
}

}  // namespace

void sparse24_int8_run_avx512vnni(const Sparse24Int8Args& a, const Sparse24Int8Plan& plan, int64_t task_begin,
                                  int64_t task_end) {
  static_assert(kS24I8TileRows == 6 && kS24I8PanelBlocks == 2, "tile tables assume 6 x 2");
  constexpr int64_t panel_cols = kS24I8BlockCols * kS24I8PanelBlocks;
  for (int64_t t = task_begin; t < task_end; ++t) {
    const int64_t panel = t / plan.row_chunks, chunk = t % plan.row_chunks;
    const int64_t m_begin = chunk * plan.chunk_rows, m_end = std::min(a.m, m_begin + plan.chunk_rows);
    const int64_t n0 = panel * panel_cols;
    const int nv = static_cast<int>(std::min<int64_t>(kS24I8PanelBlocks, (a.w.n - n0 + 15) / 16));
    for (int64_t m = m_begin; m < m_end; m += kS24I8TileRows) {
      const int mr = static_cast<int>(std::min<int64_t>(kS24I8TileRows, m_end - m));
      Int8TileFn fn = a.x_signed ? pick_int8_tile<true>(mr, nv) : pick_int8_tile<false>(mr, nv);
      fn(a, m, n0);
    }
  }
}

}  // namespace ck::cpu

#else  // not x86-64 GCC/Clang: never selected (detected_isa() is portable there)

namespace ck::cpu {
void sparse24_f32_run_avx512(const Sparse24F32Args& a, const Sparse24Plan& plan, int64_t b, int64_t e) {
  sparse24_f32_run_portable(a, plan, b, e);
}
void sparse24_int8_run_avx512vnni(const Sparse24Int8Args& a, const Sparse24Int8Plan& plan, int64_t b, int64_t e) {
  sparse24_int8_run_portable(a, plan, b, e);
}
}  // namespace ck::cpu

#endif
