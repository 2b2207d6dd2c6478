#include "dispatch.h"

namespace ck::cpu {

TierMask enabled_tiers() {
  const Isa isa = active_isa();
  TierMask tiers = tier_bit(Tier::kPortable);
  if (isa >= Isa::kAvx2) tiers |= tier_bit(Tier::kAvx2);
  if (isa >= Isa::kAvx512Vnni) tiers |= tier_bit(Tier::kAvx512Vnni);
  if (isa >= Isa::kAvx512Vbmi) {
    tiers |= tier_bit(Tier::kAvx512Vbmi);
    if (cpu_has_avx512bf16()) tiers |= tier_bit(Tier::kAvx512Bf16);
  }
  switch (tile_unit()) {
    case TileUnit::kHardware:
      tiers |= tier_bit(Tier::kAmx);
      break;
    case TileUnit::kEmulated:
      tiers |= tier_bit(Tier::kAmxEmulated);
      break;
    case TileUnit::kNone:
      break;
  }
  return tiers;
}

const char* tier_name(Tier tier) {
  switch (tier) {
    case Tier::kAvx2:
      return "avx2";
    case Tier::kAvx512Vnni:
      return "avx512vnni";
    case Tier::kAvx512Vbmi:
      return "avx512vbmi";
    case Tier::kAvx512Bf16:
      return "avx512bf16";
    case Tier::kAmx:
      return "amx";
    case Tier::kAmxEmulated:
      return "amx_emulated";
    case Tier::kPortable:
    default:
      return "portable";
  }
}

}  // namespace ck::cpu
