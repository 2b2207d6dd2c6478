// The AMX int8 GEMM on the scalar tile model, with the scalar output stage: runs on any CPU, so the
// tests check the AMX blocking, padding and tails bit for bit against the portable path everywhere.
#include "amx_tiles.h"
#include "int8_gemm.h"
#include "int8_gemm_amx.h"

namespace ck::cpu {
namespace {

struct ScalarOutput {
  static void write(const Int8GemmArgs& a, int64_t m0, int mr, int64_t n0, int cols, const int32_t* sums,
                    int64_t ld) {
    for (int r = 0; r < mr; ++r) {
      for (int j = 0; j < cols; ++j) {
        write_output(a, m0 + r, n0 + j, int8_corrected_acc(a, n0 + j, sums[r * ld + j]));
      }
    }
  }
};

}  // namespace

void int8_gemm_run_amx_emulated(const Int8GemmArgs& args, const Int8GemmPlan& plan, int64_t task_begin,
                                int64_t task_end) {
  amx_int8_tasks<EmulatedTiles, ScalarOutput>(args, plan, task_begin, task_end);
}

}  // namespace ck::cpu
