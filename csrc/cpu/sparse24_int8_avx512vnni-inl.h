// Included by sparse24_avx512vnni.cpp and sparse24_avx512vbmi.cpp only (targets with avx512f/bw/vl/dq/vnni).
// The int8 2:4 kernel on 512-bit vectors (AVX-512 BW + VNNI), shared by sparse24_avx512vnni.cpp and
// sparse24_avx512vbmi.cpp: each includes this inside its own anonymous namespace after its target
// pragma and after defining
//   __m512i shuffle_control(const int8_t* meta16);   the vpshufb controls of 16 columns (see
//                                                     the packed layout in sparse24.h)
// The two differ only there: with VBMI's vpmultishiftqb the expansion takes two vector ops (after
// two broadcast loads) instead of seven.
// Design: see the top of sparse24_avx512vnni.cpp.

// kExpanded: `controls` holds the panel's controls expanded once per task by int8_run_zmm (block v,
// pair h at controls[v * pairs + h]); else they are expanded in registers per pair (controls unused).
// Every loop over the accumulators is unrolled by pragma: GCC otherwise shuffles them between
// registers and the stack on every pair.
template <int MR, int NV, bool kSigned, bool kExpanded>
void int8_tile(const Sparse24Int8Args& a, int64_t m0, int64_t n0, const __m512i* controls) {
  const int64_t k = a.w.k, pairs = a.w.pairs, full_pairs = k / 8;
  const uint8_t* x = static_cast<const uint8_t*>(a.x) + m0 * a.ldx;
  const int8_t* wb[NV];
  for (int v = 0; v < NV; ++v) wb[v] = a.w.data + ((n0 / 16 + v) * pairs) * 80;
  const __m512i flip = _mm512_set1_epi8(static_cast<char>(0x80));

  __m512i acc[MR][NV];
#pragma GCC unroll 8
  for (int r = 0; r < MR; ++r)
#pragma GCC unroll 2
    for (int v = 0; v < NV; ++v) acc[r][v] = _mm512_setzero_si512();

  // x of the last pair when K % 8 == 4: its four bytes, then four zeros (the packed weights there
  // are 0), so that every pair reads eight bytes in one loop (one loop keeps the accumulators in
  // registers; a second copy of the body for the tail made GCC shuffle them).
  alignas(8) uint8_t tail[MR][8] = {};
  if (pairs > full_pairs) {
    for (int r = 0; r < MR; ++r) std::memcpy(tail[r], x + r * a.ldx + 8 * full_pairs, 4);
  }
  // In-register expansion runs one pair ahead (software pipelining): the shuffles of pair h do not
  // wait for the loads and shuffles that make their controls (+20% at M = 8, where they are shared
  // by only 8 rows).
  __m512i next_ctl[NV];
  if (!kExpanded) {
#pragma GCC unroll 2
    for (int v = 0; v < NV; ++v) next_ctl[v] = shuffle_control(wb[v] + 64);
  }
  for (int64_t h = 0; h < pairs; ++h) {
    __m512i val[NV], ctl[NV];
    const int64_t ahead = std::min(h + 1, pairs - 1);
#pragma GCC unroll 2
    for (int v = 0; v < NV; ++v) {
      val[v] = _mm512_loadu_si512(wb[v] + h * 80);
      if (kExpanded) {
        ctl[v] = _mm512_load_si512(controls + v * pairs + h);
      } else {
        ctl[v] = next_ctl[v];
        next_ctl[v] = shuffle_control(wb[v] + ahead * 80 + 64);
      }
    }
    const bool last = h == full_pairs;
#pragma GCC unroll 8
    for (int r = 0; r < MR; ++r) {
      int64_t bytes = 0;
      std::memcpy(&bytes, last ? tail[r] : x + r * a.ldx + 8 * h, 8);
      __m512i xb = _mm512_set1_epi64(bytes);
      if (kSigned) xb = _mm512_xor_si512(xb, flip);
#pragma GCC unroll 2
      for (int v = 0; v < NV; ++v) acc[r][v] = _mm512_dpbusd_epi32(acc[r][v], _mm512_shuffle_epi8(xb, ctl[v]), val[v]);
    }
  }

  // bias[n] - (x_zero_point + 128 * kSigned) * row_sum[n], modulo 2^32.
  const __m512i zp_total = _mm512_set1_epi32(-(a.x_zero_point + (kSigned ? 128 : 0)));
  const RequantParams& p = a.requant;
  const ClampLanes clamp = clamp_lanes(p);
  const int64_t ldo = a.w.n;
#pragma GCC unroll 2
  for (int v = 0; v < NV; ++v) {
    const int64_t n = n0 + 16 * v;
    const __mmask16 valid = lane_mask(a.w.n - n);
    __m512i column_term = _mm512_mullo_epi32(_mm512_maskz_loadu_epi32(valid, a.w.row_sum + n), zp_total);
    if (a.bias_i32 != nullptr)
      column_term = _mm512_add_epi32(column_term, _mm512_maskz_loadu_epi32(valid, a.bias_i32 + n));
    const RequantLanes lanes = p.per_channel ? requant_lanes(_mm512_maskz_loadu_epi32(valid, p.m0 + n),
                                                             _mm512_maskz_loadu_epi32(valid, p.shift + n))
                                             : requant_lanes(_mm512_set1_epi32(p.m0[0]), _mm512_set1_epi32(p.shift[0]));
#pragma GCC unroll 8
    for (int r = 0; r < MR; ++r) {
      const __m512i y = multiply_by_quantized_multiplier(_mm512_add_epi32(acc[r][v], column_term), lanes, p.rounding);
      store_lanes(a.out, (m0 + r) * ldo + n, clamp_add_zero_point(y, clamp), valid, p);
    }
  }
}

using Int8TileFn = void (*)(const Sparse24Int8Args&, int64_t, int64_t, const __m512i*);

template <bool kSigned, bool kExpanded, int MR>
constexpr Int8TileFn int8_tile_row[2] = {int8_tile<MR, 1, kSigned, kExpanded>, int8_tile<MR, 2, kSigned, kExpanded>};

template <bool kSigned, bool kExpanded>
Int8TileFn pick_int8_tile(int mr, int nv) {
  static constexpr const Int8TileFn* rows[8] = {
      int8_tile_row<kSigned, kExpanded, 1>, int8_tile_row<kSigned, kExpanded, 2>, int8_tile_row<kSigned, kExpanded, 3>,
      int8_tile_row<kSigned, kExpanded, 4>, int8_tile_row<kSigned, kExpanded, 5>, int8_tile_row<kSigned, kExpanded, 6>,
      int8_tile_row<kSigned, kExpanded, 7>, int8_tile_row<kSigned, kExpanded, 8>};
  return rows[mr - 1][nv - 1];
}

// Tasks [task_begin, task_end) of `plan`.
inline void int8_run_zmm(const Sparse24Int8Args& a, const Sparse24Int8Plan& plan, int64_t task_begin,
                         int64_t task_end) {
  static_assert(kS24I8TileRows == 8 && kS24I8PanelBlocks == 2, "tile tables assume 8 x 2");
  // A task with more than one tile of rows expands its panel's controls once (64 bytes per block
  // and pair, K * 16 bytes for the panel, kept in L2) instead of once per tile: the expansion is
  // two (VBMI) or seven vector ops per block and pair, shared by only the 8 rows of a tile.
  // Grown once per thread, reused by every later call.
  struct alignas(64) Control {
    int8_t bytes[64];
  };
  thread_local std::unique_ptr<Control[]> controls;
  thread_local int64_t capacity = 0;
  for (int64_t t = task_begin; t < task_end; ++t) {
    int64_t m_begin = 0, m_end = 0, n0 = 0, n_end = 0;
    plan.task_bounds(a.m, a.w.n, t, &m_begin, &m_end, &n0, &n_end);
    const int nv = static_cast<int>(std::min<int64_t>(kS24I8PanelBlocks, (a.w.n - n0 + 15) / 16));
    const __m512i* expanded = nullptr;
    if (m_end - m_begin > kS24I8TileRows) {
      const int64_t pairs = a.w.pairs;
      if (capacity < kS24I8PanelBlocks * pairs) {
        capacity = kS24I8PanelBlocks * pairs;
        controls.reset(new Control[capacity]);  // C++17 aligned new: 64-byte aligned
      }
      for (int v = 0; v < nv; ++v) {
        const int8_t* wb = a.w.data + ((n0 / 16 + v) * pairs) * 80;
        for (int64_t h = 0; h < pairs; ++h)
          _mm512_store_si512(controls[v * pairs + h].bytes, shuffle_control(wb + h * 80 + 64));
      }
      expanded = reinterpret_cast<const __m512i*>(controls.get());
    }
    for (int64_t m = m_begin; m < m_end; m += kS24I8TileRows) {
      const int mr = static_cast<int>(std::min<int64_t>(kS24I8TileRows, m_end - m));
      Int8TileFn fn =
          a.x_signed
              ? (expanded != nullptr ? pick_int8_tile<true, true>(mr, nv) : pick_int8_tile<true, false>(mr, nv))
              : (expanded != nullptr ? pick_int8_tile<false, true>(mr, nv) : pick_int8_tile<false, false>(mr, nv));
      fn(a, m, n0, expanded);
    }
  }
}
