// The bf16 2:4 linear on the scalar tile model, with the scalar expansion and output stage: runs on any CPU, so the
// tests check the tile path's expansion, blocking and tails everywhere (and the amx tier against this model where
// the CPU has the instructions).
#include "amx_tiles.h"
#include "sparse24.h"
#include "sparse24_bf16_amx-inl.h"

namespace ck::cpu {

void sparse24_bf16_tiles_run_amx_emulated(const Sparse24Bf16Args& args, const Int8GemmPlan& plan, int64_t task_begin,
                                          int64_t task_end) {
  amx_bf16_family_tasks<EmulatedTiles, ScalarBf16Row, ScalarSparse24Decode>(args, plan, task_begin, task_end);
}

const Sparse24Bf16TileKernels sparse24_bf16_tile_kernels_amx_emulated = {&sparse24_bf16_tiles_run_amx_emulated};

}  // namespace ck::cpu
