// Included by sparse24_avx2.cpp (target avx2,fma) and sparse24_avx512vnni.cpp (target avx512f/bw/vl/dq/vnni + avx2,fma)
// only. The fp32 2:4 kernels on 256-bit vectors (AVX2 + FMA), shared by sparse24_avx512vnni.cpp and sparse24_avx2.cpp:
// each includes this inside its own namespace after its target pragma and after defining
//   constexpr int kF32Rows, kF32Blocks;      rows (<= 4) x blocks of accumulators per microkernel
//   __m256 load_columns(const float* p, int count);          the first `count` (1..8) floats, 0 after
//   void store_columns(float* p, int count, __m256 v);       the first `count` lanes of v
// Design and cost: see the top of sparse24_avx512vnni.cpp. Every path computes each output as
// acc = fma(v[j], x[k_j], acc) for j = 0 .. K/2 - 1 in order, then + bias, like the portable path.

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

// R rows x NB blocks of 8 columns, vectorized over columns like f32_row_blocks: the ctl vectors
// and the values of a block are loaded once per pair of groups and used by all R rows. Partial
// sums live in out between k blocks (exact fp32, so the chains continue unchanged).
template <int R, int NB>
void f32_rows_blocks(const Sparse24F32Args& a, int64_t m, int64_t n, int64_t g_begin, int64_t g_end, bool first) {
  const int64_t k = a.k, half = k / 2, block = sparse24_f32_block_floats(k);
  const float* v[NB];
  const uint8_t* mb[NB];
  for (int b = 0; b < NB; ++b) {
    v[b] = a.packed + (n / 8 + b) * block;
    mb[b] = reinterpret_cast<const uint8_t*>(v[b] + 8 * half);
  }
  int valid[NB];  // columns of the block that exist (1..8)
  for (int b = 0; b < NB; ++b) valid[b] = static_cast<int>(std::min<int64_t>(8, a.n - (n + 8 * b)));
  __m256 acc[R][NB];
  for (int r = 0; r < R; ++r)
    for (int b = 0; b < NB; ++b)
      acc[r][b] = first ? _mm256_setzero_ps() : load_columns(a.out + (m + r) * a.n + n + 8 * b, valid[b]);
  int64_t g = g_begin;
  for (; g + 2 <= g_end; g += 2) {
    __m256i c0[NB], c1[NB], c2[NB], c3[NB];
    for (int b = 0; b < NB; ++b) {
      c0[b] = _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(mb[b] + (g / 2) * 8)));
      c1[b] = _mm256_srli_epi32(c0[b], 2);
      c2[b] = _mm256_srli_epi32(c0[b], 4);
      c3[b] = _mm256_srli_epi32(c0[b], 6);
    }
    for (int r = 0; r < R; ++r) {
      const float* xr = a.x + (m + r) * a.ldx + 4 * g;
      const __m256 xa = _mm256_broadcast_ps(reinterpret_cast<const __m128*>(xr));
      const __m256 xb = _mm256_broadcast_ps(reinterpret_cast<const __m128*>(xr + 4));
      for (int b = 0; b < NB; ++b) {
        const float* vg = v[b] + 16 * g;
        acc[r][b] = _mm256_fmadd_ps(_mm256_loadu_ps(vg), _mm256_permutevar_ps(xa, c0[b]), acc[r][b]);
        acc[r][b] = _mm256_fmadd_ps(_mm256_loadu_ps(vg + 8), _mm256_permutevar_ps(xa, c1[b]), acc[r][b]);
        acc[r][b] = _mm256_fmadd_ps(_mm256_loadu_ps(vg + 16), _mm256_permutevar_ps(xb, c2[b]), acc[r][b]);
        acc[r][b] = _mm256_fmadd_ps(_mm256_loadu_ps(vg + 24), _mm256_permutevar_ps(xb, c3[b]), acc[r][b]);
      }
    }
  }
  if (g < g_end) {  // an odd group: the low nibble of its meta byte
    for (int r = 0; r < R; ++r) {
      const __m256 xa = _mm256_broadcast_ps(reinterpret_cast<const __m128*>(a.x + (m + r) * a.ldx + 4 * g));
      for (int b = 0; b < NB; ++b) {
        const __m256i c = _mm256_srli_epi32(
            _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(mb[b] + (g / 2) * 8))),
            static_cast<int>(g & 1) * 4);
        const float* vg = v[b] + 16 * g;
        acc[r][b] = _mm256_fmadd_ps(_mm256_loadu_ps(vg), _mm256_permutevar_ps(xa, c), acc[r][b]);
        acc[r][b] =
            _mm256_fmadd_ps(_mm256_loadu_ps(vg + 8), _mm256_permutevar_ps(xa, _mm256_srli_epi32(c, 2)), acc[r][b]);
      }
    }
  }
  for (int r = 0; r < R; ++r)
    for (int b = 0; b < NB; ++b) store_columns(a.out + (m + r) * a.n + n + 8 * b, valid[b], acc[r][b]);
}

template <int R>
void f32_rows_panel(const Sparse24F32Args& a, int64_t m, int64_t n_begin, int64_t blocks, int64_t g_begin,
                    int64_t g_end, bool first) {
  int64_t b = 0;
  for (; b + kF32Blocks <= blocks; b += kF32Blocks)
    f32_rows_blocks<R, kF32Blocks>(a, m, n_begin + 8 * b, g_begin, g_end, first);
  for (; b < blocks; ++b) f32_rows_blocks<R, 1>(a, m, n_begin + 8 * b, g_begin, g_end, first);
}

void f32_task_rows(const Sparse24F32Args& a, int64_t m_begin, int64_t m_end, int64_t n_begin, int64_t n_end) {
  const int64_t k = a.k, blocks = (n_end - n_begin + 7) / 8;
  for (int64_t kb = 0; kb < k; kb += kS24DepthBlock) {
    const int64_t g_begin = kb / 4, g_end = std::min(k, kb + kS24DepthBlock) / 4;
    int64_t m = m_begin;
    for (; m + kF32Rows <= m_end; m += kF32Rows)
      f32_rows_panel<kF32Rows>(a, m, n_begin, blocks, g_begin, g_end, kb == 0);
    switch (m_end - m) {  // kF32Rows <= 4
      case 3:
        f32_rows_panel<3>(a, m, n_begin, blocks, g_begin, g_end, kb == 0);
        break;
      case 2:
        f32_rows_panel<2>(a, m, n_begin, blocks, g_begin, g_end, kb == 0);
        break;
      case 1:
        f32_rows_panel<1>(a, m, n_begin, blocks, g_begin, g_end, kb == 0);
        break;
      default:
        break;
    }
  }
  if (a.bias != nullptr) {
    for (int64_t m = m_begin; m < m_end; ++m)
      for (int64_t n = n_begin; n < n_end; ++n) a.out[m * a.n + n] += a.bias[n];
  }
}

// One task's rows [m_begin, m_end) x columns [n_begin, n_end) on the ymm kernels.
inline void f32_task_ymm(const Sparse24F32Args& a, int64_t m_begin, int64_t m_end, int64_t n_begin, int64_t n_end) {
  static_assert(kS24PanelCols % 8 == 0 && kS24DepthBlock % 8 == 0, "panels of 8-column blocks, depth of meta bytes");
  if (m_end - m_begin == 1) {
    f32_single_row(a, m_begin, n_begin, n_end);
  } else {
    f32_task_rows(a, m_begin, m_end, n_begin, n_end);
  }
}
