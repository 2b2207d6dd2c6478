// The small tile interface every AMX kernel here is written against, and its scalar model.
//
// A kernel is a template over a `Tiles` policy with these static members (T, C, A, B are tile
// numbers, compile-time constants because the instructions encode them):
//   configure(cfg) / release()         ldtilecfg / tilerelease
//   zero<T>()                          tilezero
//   load<T>(ptr, stride)               tileloadd: rows[T] rows of colsb[T] bytes, row r at ptr + r * stride
//   store<T>(ptr, stride)              tilestored
//   dot_us<C, A, B>()                  tdpbusd: C[m][n] += sum_{k, j<4} u8(A[m][4k+j]) * s8(B[k][4n+j])
//   dot_ss<C, A, B>()                  tdpbssd: the same with s8 A
//   dot_bf16<C, A, B>()                tdpbf16ps (see EmulatedTiles for the exact rounding)
// EmulatedTiles implements them in plain C++ on any CPU, so the blocking, packing, tails and output
// stages of the AMX kernels are tested bit for bit everywhere; the hardware policy (HardwareTiles,
// amx_hardware_tiles-inl.h) is only compiled into translation units built for AMX.
//
// The kernels use one configuration per call, amx_config(rows): palette 1, every tile 64 bytes
// wide, the accumulator and A tiles (0-5) `rows` high, the B tiles (6-7) 16 high. rows is 16 except
// for an operand of fewer than 16 rows in all (M < 16), whose tiles then read exactly its rows;
// other tails are padded copies, never narrower tiles, so one ldtilecfg per call serves.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

namespace ck::cpu {

// The 64-byte operand of ldtilecfg (Intel SDM, "TILECFG").
struct alignas(64) AmxTileConfig {
  uint8_t palette_id = 0;
  uint8_t start_row = 0;
  uint8_t reserved[14] = {};
  uint16_t colsb[16] = {};
  uint8_t rows[16] = {};
};

inline AmxTileConfig amx_config(int rows) {
  AmxTileConfig c;
  c.palette_id = 1;
  for (int t = 0; t < 8; ++t) {
    c.colsb[t] = 64;
    c.rows[t] = static_cast<uint8_t>(t < 6 ? rows : 16);
  }
  return c;
}

constexpr int kAmxTileRows = 16;   // rows of A and C per tile
constexpr int kAmxTileBytes = 64;  // bytes per tile row: 64 int8 k, 16 int32 / fp32 columns

struct EmulatedTiles {
  struct State {
    AmxTileConfig cfg;
    alignas(64) uint8_t tile[8][16][64];
  };
  static State& state() {
    thread_local State s;
    return s;
  }
  static void configure(const AmxTileConfig& c) {
    state().cfg = c;
    std::memset(state().tile, 0, sizeof(state().tile));  // ldtilecfg zeroes every tile
  }
  static void release() { std::memset(state().tile, 0, sizeof(state().tile)); }
  template <int T>
  static void zero() {
    std::memset(state().tile[T], 0, sizeof(state().tile[T]));
  }
  // Bytes past colsb in a row and rows past `rows` read as zero, like the hardware.
  template <int T>
  static void load(const void* p, int64_t stride) {
    State& s = state();
    std::memset(s.tile[T], 0, sizeof(s.tile[T]));
    for (int r = 0; r < s.cfg.rows[T]; ++r) {
      std::memcpy(s.tile[T][r], static_cast<const uint8_t*>(p) + r * stride, s.cfg.colsb[T]);
    }
  }
  template <int T>
  static void store(void* p, int64_t stride) {
    State& s = state();
    for (int r = 0; r < s.cfg.rows[T]; ++r) {
      std::memcpy(static_cast<uint8_t*>(p) + r * stride, s.tile[T][r], s.cfg.colsb[T]);
    }
  }
  // Integer dot products: each four-product sum and the accumulation wrap modulo 2^32 (the
  // hardware's int32 adds; exact whenever the true sum fits in int32).
  template <int C, int A, int B, bool kSignedA>
  static void dot_int8() {
    State& s = state();
    const int m_rows = s.cfg.rows[C], n_cols = s.cfg.colsb[C] / 4, k_groups = s.cfg.colsb[A] / 4;
    for (int m = 0; m < m_rows; ++m) {
      for (int n = 0; n < n_cols; ++n) {
        uint32_t acc;
        std::memcpy(&acc, &s.tile[C][m][4 * n], 4);
        for (int k = 0; k < k_groups; ++k) {
          for (int j = 0; j < 4; ++j) {
            const uint8_t a_byte = s.tile[A][m][4 * k + j];
            const int32_t av =
                kSignedA ? static_cast<int32_t>(static_cast<int8_t>(a_byte)) : static_cast<int32_t>(a_byte);
            const int32_t bv = static_cast<int8_t>(s.tile[B][k][4 * n + j]);
            acc += static_cast<uint32_t>(av * bv);
          }
        }
        std::memcpy(&s.tile[C][m][4 * n], &acc, 4);
      }
    }
  }
  template <int C, int A, int B>
  static void dot_us() {
    dot_int8<C, A, B, false>();
  }
  template <int C, int A, int B>
  static void dot_ss() {
    dot_int8<C, A, B, true>();
  }
  // tdpbf16ps, as probed on Sapphire Rapids (bf16 inputs with subnormals read as zero, DAZ): per output,
  // the instruction keeps two chains, one over the even elements of the pairs and one over the odd, each
  // starting at +0 and adding its products in pair order with one rounding per add, sums them, and adds
  // that to the accumulator:
  //   e = o = +0; for each pair p in order: e = ftz(RN(e + A[m][2p] B[p][2n])), o = ftz(RN(o + A[m][2p+1] B[p][2n+1]))
  //   C[m][n] = ftz(RN(C[m][n] + ftz(RN(e + o))))
  // (products exact, RN to fp32 from the exact sum, ftz flushing a subnormal result to a zero of its sign).
  // Probes that fix the order, on k = 0..63 with C = 0 (pair p holds k = 2p, 2p + 1): 1 at k 0, 2^-24 at k 2,
  // 2^-60 at k 3, -1 at k 4 gives 2^-60 (the even chain loses 2^-24 to 1 + 2^-24 = 1, the odd chain keeps
  // 2^-60); 1 at k 1 (odd), 2^-24 at k 2, -1 at k 5 gives 2^-24; with C = 1 from an earlier instruction, 2^-24
  // at an even and an odd k then -1 in a later instruction gives 2^-23 (e + o is summed before C). A model
  // that rounds each pair's two products together, or one chain in k order, gives 0 in all three.
  static float bf16_daz(const uint8_t* p) {
    uint16_t h;
    std::memcpy(&h, p, 2);
    uint32_t bits = static_cast<uint32_t>(h) << 16;
    if ((bits & 0x7f800000u) == 0) bits &= 0x80000000u;
    float f;
    std::memcpy(&f, &bits, 4);
    return f;
  }
  static float ftz(float v) {
    uint32_t bits;
    std::memcpy(&bits, &v, 4);
    if ((bits & 0x7f800000u) == 0) bits &= 0x80000000u;
    std::memcpy(&v, &bits, 4);
    return v;
  }
  static double exact_product(float a, float b) { return static_cast<double>(a) * b; }  // 8-bit significands
  // RN(x + y) to fp32 for doubles x, y that are fp32 values or exact products: the double sum s is off by
  // err (TwoSum), and a nonzero err moves s one double ulp towards it, which changes the rounding to fp32
  // only where s is a tie: the rounding of the exact sum, with the exponent range of fp32 only at the end.
  static float round_sum(double x, double y) {
    double s = x + y;
    const double t = s - x;
    const double err = (x - (s - t)) + (y - t);
    if (err != 0.0 && std::isfinite(s)) s = std::nextafter(s, err > 0 ? HUGE_VAL : -HUGE_VAL);
    return static_cast<float>(s);
  }
  template <int C, int A, int B>
  static void dot_bf16() {
    State& s = state();
    const int m_rows = s.cfg.rows[C], n_cols = s.cfg.colsb[C] / 4, pairs = s.cfg.colsb[A] / 4;
    for (int m = 0; m < m_rows; ++m) {
      for (int n = 0; n < n_cols; ++n) {
        float acc;
        std::memcpy(&acc, &s.tile[C][m][4 * n], 4);
        float even = 0.0f, odd = 0.0f;
        for (int p = 0; p < pairs; ++p) {
          const float a0 = bf16_daz(&s.tile[A][m][4 * p]), a1 = bf16_daz(&s.tile[A][m][4 * p + 2]);
          const float b0 = bf16_daz(&s.tile[B][p][4 * n]), b1 = bf16_daz(&s.tile[B][p][4 * n + 2]);
          even = ftz(round_sum(even, exact_product(a0, b0)));
          odd = ftz(round_sum(odd, exact_product(a1, b1)));
        }
        acc = ftz(acc + ftz(even + odd));
        std::memcpy(&s.tile[C][m][4 * n], &acc, 4);
      }
    }
  }
};

}  // namespace ck::cpu
