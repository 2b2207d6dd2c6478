// The AMX int8 GEMM on the tile instructions, with the AVX-512 output stage. Chosen at run time
// (tile_unit() == kHardware) and only on a CPU whose AMX the OS has enabled for this process.
#include "int8_gemm.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,amx-tile,amx-int8,amx-bf16")
// GCC 12 reports its own intrinsics' _mm512_undefined_* placeholders as uninitialized.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#include "amx_hardware_tiles-inl.h"
#include "int8_gemm_amx-inl.h"
#include "int8_output_avx512vnni-inl.h"

namespace ck::cpu {

void int8_gemm_run_amx(const Int8GemmArgs& args, const Int8GemmPlan& plan, int64_t task_begin, int64_t task_end) {
  amx_int8_tasks<HardwareTiles, Avx512Output>(args, plan, task_begin, task_end);
}

void int8_conv_direct_run_amx(const Int8GemmArgs& args, const Int8GemmPlan& plan, const int64_t* a_offsets,
                              const VirtualConvRows& rows, int64_t task_begin, int64_t task_end) {
  AmxInt8Options options;
  options.a_offsets = a_offsets;
  options.rows = &rows;
  amx_int8_tasks<HardwareTiles, Avx512Output>(args, plan, task_begin, task_end, options);
}

int64_t amx_register_loop(bool bf16, int64_t iterations) {
  HardwareTiles::configure(amx_config(kAmxTileRows));
  alignas(64) static const uint8_t operand[1024] = {};
  HardwareTiles::zero<0>();
  HardwareTiles::zero<1>();
  HardwareTiles::zero<2>();
  HardwareTiles::zero<3>();
  HardwareTiles::load<4>(operand, 64);
  HardwareTiles::load<5>(operand, 64);
  HardwareTiles::load<6>(operand, 64);
  HardwareTiles::load<7>(operand, 64);
  for (int64_t i = 0; i < iterations; ++i) {
    if (bf16) {
      HardwareTiles::dot_bf16<0, 4, 6>();
      HardwareTiles::dot_bf16<1, 4, 7>();
      HardwareTiles::dot_bf16<2, 5, 6>();
      HardwareTiles::dot_bf16<3, 5, 7>();
    } else {
      HardwareTiles::dot_ss<0, 4, 6>();
      HardwareTiles::dot_ss<1, 4, 7>();
      HardwareTiles::dot_ss<2, 5, 6>();
      HardwareTiles::dot_ss<3, 5, 7>();
    }
  }
  HardwareTiles::release();
  // Operations: 4 tiles x 16 x 16 outputs x (64 int8 or 32 bf16 products) x 2 per iteration.
  return iterations * 4 * 16 * 16 * (bf16 ? 32 : 64) * 2;
}

}  // namespace ck::cpu
#else  // not x86-64 GCC/Clang: never selected (detected_isa() is portable there)
namespace ck::cpu {
void int8_gemm_run_amx(const Int8GemmArgs& args, const Int8GemmPlan& plan, int64_t task_begin, int64_t task_end) {
  int8_gemm_run_portable(args, plan, task_begin, task_end);
}
int64_t amx_register_loop(bool, int64_t) { return 0; }  // never called: amx_peak refuses without AMX
void int8_conv_direct_run_amx(const Int8GemmArgs& args, const Int8GemmPlan& plan, const int64_t* a_offsets,
                              const VirtualConvRows& rows, int64_t task_begin, int64_t task_end) {
  int8_gemm_kernels_amx_emulated.conv_direct_run(args, plan, a_offsets, rows, task_begin, task_end);
}
}  // namespace ck::cpu
#endif

namespace ck::cpu {
const Int8GemmKernels int8_gemm_kernels_amx = {&int8_gemm_run_amx, &int8_conv_direct_run_amx};
}  // namespace ck::cpu
