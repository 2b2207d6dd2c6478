// Included by sparse24_avx2.cpp (target avx2,fma) and sparse24_avx512vnni.cpp (target avx512f/bw/vl/dq/vnni + avx2,fma)
// only. The fp32 2:4 kernel for tasks of many rows, vectorized over rows, shared by sparse24_avx512vnni.cpp (zmm) and
// sparse24_avx2.cpp (ymm): each includes it inside its own namespace, after its target pragma, sparse24_f32_avx2-inl.h
// and the definitions of
//   RowsVec, kRowsLanes (floats per vector), kRowsColumns (columns per microkernel, 8 or 4),
//   kRowsVectors (row vectors per microkernel, <= 3), rows_zero / rows_load (aligned) /
//   rows_store (aligned) / rows_broadcast / rows_fma(a, b, c) = a * b + c, and
//   transpose_block(src, lds, rows, cols, dst, ldd, dst_lanes, add): dst[j * ldd + i] =
//   src[i * lds + j] + add[i] for j < cols, i < dst_lanes (kRowsLanes x kRowsLanes at most), src
//   read as 0 for i >= rows, add null or dst_lanes floats.
//
// x of the task is transposed a k block at a time into xt [kc][ld] (ld = the task's rows rounded up
// to whole vectors, padding rows 0). For every stored value (column c, slot j) the value is
// broadcast once and multiplied with up to kRowsVectors row vectors of xt at the k its metadata
// names (the address is computed in general-purpose registers from the meta byte). Loads select x,
// so the FP pipes do nothing but FMAs; the limit is the load ports (Zen 4: two 256-bit loads per
// cycle; 3 row vectors + 1 broadcast per 3 FMAs), ~75% of the FMA peak from L1 where the shuffle
// kernels of sparse24_f32_avx2-inl.h stay near 55% (one shuffle per FMA, and shuffles share a pipe with
// FMAs). The accumulators of a block wait in accT [panel columns][ld] between k blocks and are
// transposed into out (+ bias) at the end. Each output's chain is acc = fma(v[j], x[k_j], acc) for
// j in order, then + bias: the portable path's order, so the results are bit-identical.

constexpr int64_t kRowsDepth = 128;  // k per block: xt (128 x 48 floats = 24 KiB) stays in L1
constexpr int64_t kRowsMin = 16;  // tasks with fewer rows run the shuffle kernels (no transposition)
static_assert(kRowsDepth % 8 == 0 && kS24PanelCols % 16 == 0 && kS24TileRows % 16 == 0,
              "k blocks of whole meta bytes, output blocks and row tiles of whole vectors");

// kRowsColumns columns (from column c0 of a packed block) x RV row vectors over one k block:
// acc [column][ld] (loaded unless first) += values x xt. v / mb: the block's values and meta bytes
// from the k block's first pair; `pairs` full pairs of groups, then one more group when half_pair
// (the low nibble of the next meta byte).
template <int RV>
void f32_rows_kernel(const float* xt, int64_t ld, const float* v, const uint8_t* mb, int c0, int64_t pairs,
                     bool half_pair, float* acc_io, bool first) {
  const int64_t row_bytes = ld * 4;
  RowsVec acc[kRowsColumns][RV];
#pragma GCC unroll 8
  for (int c = 0; c < kRowsColumns; ++c)
#pragma GCC unroll 4
    for (int r = 0; r < RV; ++r) acc[c][r] = first ? rows_zero() : rows_load(acc_io + c * ld + kRowsLanes * r);
  const char* xg = reinterpret_cast<const char*>(xt);  // x of the pair's first group
  auto step = [&](uint64_t meta8, const float* vh, int slots) {
#pragma GCC unroll 8
    for (int c = 0; c < kRowsColumns; ++c) {
#pragma GCC unroll 4
      for (int j = 0; j < 4; ++j) {
        if (j >= slots) break;
        // Slot j of column c0 + c: position (meta >> (8 (c0 + c) + 2j)) & 3 of group j / 2 of the pair.
        const uint64_t position = (meta8 >> (8 * c + 2 * j)) & 3;
        const float* xp = reinterpret_cast<const float*>(xg + (position + (j / 2) * 4) * row_bytes);
        const RowsVec w = rows_broadcast(vh + j * 8 + c);
#pragma GCC unroll 4
        for (int r = 0; r < RV; ++r) acc[c][r] = rows_fma(w, rows_load(xp + kRowsLanes * r), acc[c][r]);
      }
    }
  };
  uint64_t meta8 = 0;
  for (int64_t h = 0; h < pairs; ++h) {
    std::memcpy(&meta8, mb + 8 * h, 8);
    step(meta8 >> (8 * c0), v + 32 * h + c0, 4);
    xg += 8 * row_bytes;
  }
  if (half_pair) {
    std::memcpy(&meta8, mb + 8 * pairs, 8);
    step(meta8 >> (8 * c0), v + 32 * pairs + c0, 2);
  }
#pragma GCC unroll 8
  for (int c = 0; c < kRowsColumns; ++c)
#pragma GCC unroll 4
    for (int r = 0; r < RV; ++r) rows_store(acc_io + c * ld + kRowsLanes * r, acc[c][r]);
}

// Thread-local and 64-byte aligned: xt [kRowsDepth][48] then accT [kS24PanelCols][48].
inline float* rows_workspace() {
  constexpr int64_t floats = (kRowsDepth + kS24PanelCols) * kS24TileRows + 16;
  thread_local std::unique_ptr<float[]> buffer(new float[floats]);
  const auto address = reinterpret_cast<uintptr_t>(buffer.get());
  return reinterpret_cast<float*>((address + 63) & ~static_cast<uintptr_t>(63));
}

inline void f32_task_rows_vec(const Sparse24F32Args& a, int64_t m_begin, int64_t m_end, int64_t n_begin,
                              int64_t n_end) {
  const int64_t k = a.k, rows = m_end - m_begin, cols = n_end - n_begin, blocks = (cols + 7) / 8;
  const int64_t half = k / 2, block = sparse24_f32_block_floats(k);
  const int64_t vectors = (rows + kRowsLanes - 1) / kRowsLanes, ld = vectors * kRowsLanes;
  float* xt = rows_workspace();
  float* acc = xt + kRowsDepth * kS24TileRows;
  for (int64_t kb = 0; kb < k; kb += kRowsDepth) {
    const int64_t kc = std::min(kRowsDepth, k - kb);
    for (int64_t r = 0; r < rows; r += kRowsLanes)
      for (int64_t k0 = 0; k0 < kc; k0 += kRowsLanes)
        transpose_block(a.x + (m_begin + r) * a.ldx + kb + k0, a.ldx, std::min(kRowsLanes, rows - r),
                        std::min(kRowsLanes, kc - k0), xt + k0 * ld + r, ld, kRowsLanes, nullptr);
    for (int64_t b = 0; b < blocks; ++b) {
      const float* v = a.packed + (n_begin / 8 + b) * block + (kb / 2) * 8;
      const uint8_t* mb = reinterpret_cast<const uint8_t*>(a.packed + (n_begin / 8 + b) * block + 8 * half) + kb;
      for (int c0 = 0; c0 < 8; c0 += kRowsColumns) {
        for (int64_t r0 = 0; r0 < vectors; r0 += kRowsVectors) {
          const float* x0 = xt + r0 * kRowsLanes;
          float* acc0 = acc + (8 * b + c0) * ld + r0 * kRowsLanes;
          const int64_t pairs = kc / 8;
          const bool half_pair = kc % 8 != 0, first = kb == 0;
          switch (std::min<int64_t>(kRowsVectors, vectors - r0)) {
            case 1:
              f32_rows_kernel<1>(x0, ld, v, mb, c0, pairs, half_pair, acc0, first);
              break;
            case 2:
              f32_rows_kernel<2>(x0, ld, v, mb, c0, pairs, half_pair, acc0, first);
              break;
            case 3:
              f32_rows_kernel<3>(x0, ld, v, mb, c0, pairs, half_pair, acc0, first);
              break;
            default:
              f32_rows_kernel<kRowsVectors>(x0, ld, v, mb, c0, pairs, half_pair, acc0, first);
              break;
          }
        }
      }
    }
  }
  for (int64_t r = 0; r < rows; r += kRowsLanes)
    for (int64_t c = 0; c < cols; c += kRowsLanes)
      transpose_block(acc + c * ld + r, ld, std::min(kRowsLanes, cols - c), std::min(kRowsLanes, rows - r),
                      a.out + (m_begin + r) * a.n + n_begin + c, a.n, std::min(kRowsLanes, cols - c),
                      a.bias != nullptr ? a.bias + n_begin + c : nullptr);
}

// Tasks [task_begin, task_end) of `plan`: the rows kernel for tasks of >= kRowsMin rows, the
// shuffle kernels of sparse24_f32_avx2-inl.h for fewer.
inline void f32_run_rows_or_ymm(const Sparse24F32Args& a, const Sparse24Plan& plan, int64_t task_begin,
                                int64_t task_end) {
  for (int64_t t = task_begin; t < task_end; ++t) {
    int64_t m_begin = 0, m_end = 0, n_begin = 0, n_end = 0;
    plan.task_bounds(a, t, &m_begin, &m_end, &n_begin, &n_end);
    if (m_end - m_begin >= kRowsMin) {
      f32_task_rows_vec(a, m_begin, m_end, n_begin, n_end);
    } else {
      f32_task_ymm(a, m_begin, m_end, n_begin, n_end);
    }
  }
}
