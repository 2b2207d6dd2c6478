// The AMX int8 GEMM on the scalar tile model, with the scalar output stage: runs on any CPU, so the
// tests check the AMX blocking, padding and tails bit for bit against the portable path everywhere.
#include "amx_tiles.h"
#include "int8_gemm.h"
#include "int8_gemm_amx-inl.h"
#include "int8_output_scalar-inl.h"

namespace ck::cpu {

void int8_gemm_run_amx_emulated(const Int8GemmArgs& args, const Int8GemmPlan& plan, int64_t task_begin,
                                int64_t task_end) {
  amx_int8_tasks<EmulatedTiles, ScalarOutput>(args, plan, task_begin, task_end);
}

void int8_conv_direct_run_amx_emulated(const Int8GemmArgs& args, const Int8GemmPlan& plan, const int64_t* a_offsets,
                                       const VirtualConvRows& rows, int64_t task_begin, int64_t task_end) {
  AmxInt8Options options;
  options.a_offsets = a_offsets;
  options.rows = &rows;
  amx_int8_tasks<EmulatedTiles, ScalarOutput>(args, plan, task_begin, task_end, options);
}

const Int8GemmKernels int8_gemm_kernels_amx_emulated = {&int8_gemm_run_amx_emulated,
                                                        &int8_conv_direct_run_amx_emulated};

}  // namespace ck::cpu
