// Run-time choice of the CPU instruction-set path. Every path computes bit-identical results;
// the choice only changes speed. Tests force each path and compare.
#pragma once

#include <string>

namespace ck::cpu {

// Ordered: a CPU that runs one path runs every lower one. Kernels are chosen from the path by the
// tier tables of dispatch.h: a family without a kernel for the active path uses the best lower one
// it has (e.g. AVX2 -> portable).
enum class Isa : int {
  kPortable = 0,    // plain C++, any CPU
  kAvx2 = 1,        // AVX2 + FMA + F16C (Intel Haswell+, AMD Zen 1-3)
  kAvx512Vnni = 2,  // AVX-512 F/BW/VL/DQ + VNNI (Intel Cascade Lake+, AMD Zen 4+)
  kAvx512Vbmi = 3,  // the above + VBMI (Intel Ice Lake+, AMD Zen 4+; not Cascade / Cooper Lake)
  kAmx = 4,         // the above + AMX-TILE/INT8/BF16 with the OS's tile-data permission (Sapphire Rapids+)
};

// The best path this CPU supports.
Isa detected_isa();
// The path kernels use now: detected_isa() unless overridden by set_isa().
Isa active_isa();
// Overrides the active path; returns false (and changes nothing) when the CPU lacks it. Clears the
// AMX emulation.
bool set_isa(Isa isa);
const char* isa_name(Isa isa);
// AVX512_BF16 (vdpbf16ps; Cooper Lake, Sapphire Rapids+, Zen 4+): not one of the ordered paths
// (Ice Lake has VBMI without it, Cooper Lake it without VBMI); the bf16 2:4 kernel needs both and
// runs when the active path is avx512vbmi and this is true.
bool cpu_has_avx512bf16();

// How the families that have an AMX kernel reach the tiles now.
enum class TileUnit : int {
  kNone = 0,      // no AMX kernel runs: the family uses its kernel for active_isa()
  kHardware = 1,  // active_isa() is kAmx: tile instructions
  kEmulated = 2,  // the AMX kernels run on a scalar model of the tile instructions (any CPU), with a
                  // scalar output stage; every other family uses its kernel for active_isa()
};
TileUnit tile_unit();
// Runs the AMX kernels on the scalar tile model and every other family on the best non-AMX path
// of this CPU (the "amx_emulated" path of the tests: blocking, packing and tails checked anywhere).
void set_amx_emulation();
// One line: the CPU features seen, the path chosen and, when AMX was not taken, why.
std::string isa_report();

}  // namespace ck::cpu
