// Included by int8_gemm_amx_emulated.cpp and sparse24_amx_emulated.cpp only (amx_emulated tier: no target flags).
// The int8 GEMM output stage of a block of raw dot products, one element at a time (the AMX
// kernels' output stage on the scalar tile model). Internal linkage.
#pragma once

#include "int8_gemm.h"
#include "int8_gemm_amx-inl.h"

namespace ck::cpu {
namespace {

struct ScalarOutput {
  using Columns = AmxBlockColumns;
  static void prepare(const Int8GemmArgs& a, int64_t n0, int cols, Columns& c) { Columns::prepare(a, n0, cols, c); }
  static void write(const Int8GemmArgs& a, const Columns& c, int64_t m0, int mr, const int32_t* sums, int64_t ld) {
    for (int r = 0; r < mr; ++r) {
      for (int j = 0; j < c.cols; ++j) {
        write_output(a, m0 + r, c.n0 + j, int8_corrected_acc(a, c.n0 + j, sums[r * ld + j]));
      }
    }
  }
};

}  // namespace
}  // namespace ck::cpu
