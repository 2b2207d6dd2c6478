// The AMX int8 2:4 kernel on the scalar tile model with the scalar expansion and output stage
// (any CPU; the tests' amx_emulated path).
#include "amx_tiles.h"
#include "int8_gemm_amx-inl.h"
#include "int8_output_scalar-inl.h"
#include "sparse24.h"
#include "sparse24_int8_amx-inl.h"

namespace ck::cpu {
namespace {

struct PortableExpand {
  static void pairs(const int8_t* block, int64_t pairs, int64_t groups, uint8_t* tiles) {
    sparse24_int8_block_to_tiles_portable(block, pairs, groups, tiles);
  }
};

}  // namespace

void sparse24_int8_run_amx_emulated(const Sparse24Int8Args& a, const Sparse24Int8Plan& plan, int64_t task_begin,
                                    int64_t task_end) {
  sparse24_int8_amx_tasks<EmulatedTiles, ScalarOutput, PortableExpand>(a, plan, task_begin, task_end);
}

const Sparse24Int8Kernels sparse24_int8_kernels_amx_emulated = {&sparse24_int8_run_amx_emulated};

}  // namespace ck::cpu
