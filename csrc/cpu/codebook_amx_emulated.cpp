// The bf16 codebook_linear on the scalar tile model, with the scalar decoder and output stage: runs on any CPU,
// so the tests check the tile kernel's decode, blocking, padding and tails everywhere (and the amx tier against
// this model where the CPU has the instructions).
#include "amx_tiles.h"
#include "codebook.h"
#include "codebook_amx-inl.h"

namespace ck::cpu {

void codebook_bf16_run_amx_emulated(const CodebookBf16Args& args, const Int8GemmPlan& plan, int64_t task_begin,
                                    int64_t task_end) {
  amx_bf16_family_tasks<EmulatedTiles, ScalarBf16Row, ScalarCodebookDecode>(args, plan, task_begin, task_end);
}

const CodebookBf16Kernels codebook_bf16_kernels_amx_emulated = {&codebook_bf16_run_amx_emulated};

}  // namespace ck::cpu
