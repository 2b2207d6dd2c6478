// Included by int8_gemm_amx.cpp, sparse24_amx.cpp, int4_amx.cpp, codebook_amx.cpp and sparse24_bf16_amx.cpp only (amx
// tier: target avx512f/bw/vl/dq/vnni + amx-tile/int8/bf16). The tile interface of amx_tiles.h on the real AMX
// instructions. Include only from translation units that the AMX tier compiles for AMX; everything here has internal
// linkage.
//
// Written as inline assembly (AT&T operand order: sources first) rather than with GCC's
// _tile_* macros, which stringify their tile-number argument (a template parameter would become
// the text "T") and whose tileloadd carries no memory clobber (a load could move above the stores
// that filled a zero-padded buffer).
#pragma once

#include <cstdint>

#include "amx_tiles.h"

namespace ck::cpu {
namespace {

template <int T>
struct HardwareTile;

#define CK_AMX_TILE(T)                                                                        \
  template <>                                                                                 \
  struct HardwareTile<T> {                                                                    \
    static void zero() { __asm__ volatile("tilezero %%tmm" #T::); }                           \
    static void load(const void* p, int64_t stride) {                                         \
      __asm__ volatile("tileloadd (%0,%1,1), %%tmm" #T::"r"(p), "r"(stride) : "memory");      \
    }                                                                                         \
    static void store(void* p, int64_t stride) {                                              \
      __asm__ volatile("tilestored %%tmm" #T ", (%0,%1,1)" ::"r"(p), "r"(stride) : "memory"); \
    }                                                                                         \
  };
CK_AMX_TILE(0)
CK_AMX_TILE(1)
CK_AMX_TILE(2)
CK_AMX_TILE(3)
CK_AMX_TILE(4)
CK_AMX_TILE(5)
CK_AMX_TILE(6)
CK_AMX_TILE(7)
#undef CK_AMX_TILE

// The kernels' accumulator map: C tile 2 * (A - 4) + (B - 6) holds A tile (4 or 5) x B tile (6 or 7).
template <int C, int A, int B>
struct HardwareDot;

#define CK_AMX_DOT(C, A, B)                                                                    \
  template <>                                                                                  \
  struct HardwareDot<C, A, B> {                                                                \
    static void us() { __asm__ volatile("tdpbusd %%tmm" #B ", %%tmm" #A ", %%tmm" #C::); }     \
    static void ss() { __asm__ volatile("tdpbssd %%tmm" #B ", %%tmm" #A ", %%tmm" #C::); }     \
    static void bf16() { __asm__ volatile("tdpbf16ps %%tmm" #B ", %%tmm" #A ", %%tmm" #C::); } \
  };
CK_AMX_DOT(0, 4, 6)
CK_AMX_DOT(1, 4, 7)
CK_AMX_DOT(2, 5, 6)
CK_AMX_DOT(3, 5, 7)
#undef CK_AMX_DOT

struct HardwareTiles {
  static void configure(const AmxTileConfig& c) { __asm__ volatile("ldtilecfg %0" ::"m"(c) : "memory"); }
  static void release() { __asm__ volatile("tilerelease" ::: "memory"); }
  template <int T>
  static void zero() {
    HardwareTile<T>::zero();
  }
  template <int T>
  static void load(const void* p, int64_t stride) {
    HardwareTile<T>::load(p, stride);
  }
  template <int T>
  static void store(void* p, int64_t stride) {
    HardwareTile<T>::store(p, stride);
  }
  template <int C, int A, int B>
  static void dot_us() {
    HardwareDot<C, A, B>::us();
  }
  template <int C, int A, int B>
  static void dot_ss() {
    HardwareDot<C, A, B>::ss();
  }
  template <int C, int A, int B>
  static void dot_bf16() {
    HardwareDot<C, A, B>::bf16();
  }
};

}  // namespace
}  // namespace ck::cpu
