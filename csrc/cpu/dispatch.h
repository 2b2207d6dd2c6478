// The one run-time kernel selection of the CPU kernels: per family a struct of function pointers
// (the family's kernels), one instance per tier, and a TierTable that picks, once per call, the
// instance of the highest tier that may run now.
//
// A family header declares its kernel struct (e.g. Int8GemmKernels), the tier instances
// `<family>_kernels_<tier>` and the table `<family>_tiers`. Each instance is defined in its tier's
// own translation unit (`<family>_<tier>.cpp`, compiled for that tier by its `#pragma GCC target`;
// the portable one in the family's base file `<family>.cpp`), the table in the base file, one line
// per tier that has an entry. A tier without an entry for a family falls back to the next lower
// tier that is enabled and has one; every table has a portable entry, so the walk always ends.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <utility>

#include "isa.h"

namespace ck::cpu {

// The kernel tiers, in fallback order (lowest first). Each tier's kernels need the CPU features
// of its target pragma:
//   kPortable     plain C++
//   kAvx2         AVX2 + FMA (+ F16C)
//   kAvx512Vnni   AVX-512 F/BW/VL/DQ + VNNI
//   kAvx512Vbmi   kAvx512Vnni + VBMI
//   kAvx512Bf16   kAvx512Vbmi + AVX512_BF16 (not an Isa of its own: enabled on the avx512vbmi and
//                 amx paths of a CPU that has AVX512_BF16, see cpu_has_avx512bf16())
//   kAmx          AMX-TILE/INT8/BF16 on kAvx512Vbmi (the tile instructions)
//   kAmxEmulated  the AMX kernels on the scalar tile model (any CPU; the "amx_emulated" path)
enum class Tier : int {
  kPortable = 0,
  kAvx2 = 1,
  kAvx512Vnni = 2,
  kAvx512Vbmi = 3,
  kAvx512Bf16 = 4,
  kAmx = 5,
  kAmxEmulated = 6,
};
constexpr int kTierCount = 7;

// A set of tiers: bit t for Tier t.
using TierMask = uint32_t;
constexpr TierMask tier_bit(Tier tier) { return TierMask{1} << static_cast<int>(tier); }
// The tiers that run the AMX kernels (hardware or emulated tiles).
constexpr TierMask kTileTiers = tier_bit(Tier::kAmx) | tier_bit(Tier::kAmxEmulated);

// The tiers that may run now, from active_isa(), tile_unit() and cpu_has_avx512bf16():
//   kPortable always; kAvx2 / kAvx512Vnni / kAvx512Vbmi when active_isa() is that path or above;
//   kAvx512Bf16 when active_isa() >= kAvx512Vbmi and the CPU has AVX512_BF16;
//   kAmx when tile_unit() is kHardware (active_isa() == kAmx); kAmxEmulated when it is kEmulated
//   (active_isa() is then the best non-AMX path, so every family without an AMX kernel runs the
//   kernel of that path).
TierMask enabled_tiers();
// enabled_tiers() without the tile tiers unless with_tiles: the int8 GEMM and int8 2:4 plans decide
// per call whether the AMX kernel runs (plan.amx), and a plan without it runs the best vector tier.
inline TierMask enabled_tiers(bool with_tiles) { return with_tiles ? enabled_tiers() : enabled_tiers() & ~kTileTiers; }

// "portable", "avx2", "avx512vnni", "avx512vbmi", "avx512bf16", "amx", "amx_emulated".
const char* tier_name(Tier tier);

template <class Kernels>
class TierTable {
 public:
  // The portable entry is required; `others` lists (tier, entry) for each further tier that has
  // one (a null entry is the same as none).
  constexpr TierTable(const Kernels& portable, std::initializer_list<std::pair<Tier, const Kernels*>> others)
      : entries_{} {
    entries_[static_cast<int>(Tier::kPortable)] = &portable;
    for (const auto& [tier, kernels] : others) entries_[static_cast<int>(tier)] = kernels;
  }

  // The highest tier in `allowed` that has an entry (kPortable when no other does).
  Tier select(TierMask allowed) const {
    for (int t = kTierCount - 1; t > 0; --t) {
      if (((allowed >> t) & 1) != 0 && entries_[t] != nullptr) return static_cast<Tier>(t);
    }
    return Tier::kPortable;
  }
  const Kernels& kernels(TierMask allowed) const { return *entries_[static_cast<int>(select(allowed))]; }
  // The entry for the tiers enabled now.
  const Kernels& active() const { return kernels(enabled_tiers()); }

 private:
  const Kernels* entries_[kTierCount];
};

}  // namespace ck::cpu
