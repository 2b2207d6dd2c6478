// Run-time choice of the CPU instruction-set path. Every path computes bit-identical results;
// the choice only changes speed. Tests force each path and compare.
#pragma once

namespace ck::cpu {

enum class Isa : int {
  kPortable = 0,    // plain C++, any CPU
  kAvx512Vnni = 1,  // AVX-512 F/BW/VL/DQ + VNNI (Intel Cascade Lake+, AMD Zen 4+)
};

// The best path this CPU supports.
Isa detected_isa();
// The path kernels use now: detected_isa() unless overridden by set_isa().
Isa active_isa();
// Overrides the active path; returns false (and changes nothing) when the CPU lacks it.
bool set_isa(Isa isa);
const char* isa_name(Isa isa);

}  // namespace ck::cpu
