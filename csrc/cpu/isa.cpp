#include "isa.h"

#include <atomic>
#include <string>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <cpuid.h>
#endif
#if defined(__linux__)
#include <sys/syscall.h>
#include <unistd.h>
#endif

namespace ck::cpu {
namespace {

// Why AMX was not taken on this machine ("" when it was).
std::string& amx_refusal() {
  static std::string reason;
  return reason;
}

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
// AMX needs three things: the CPUID bits (leaf 7, EDX bit 24 AMX-TILE, 25 AMX-INT8, 22 AMX-BF16),
// the OS enabling the tile state in XCR0 (bits 17 XTILECFG and 18 XTILEDATA), and on Linux the
// per-process permission for the 8 KB tile-data state, requested once with
// arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) before the first tile instruction (a kernel
// older than 5.16 does not know the request; without the permission a tile instruction faults).
bool amx_usable() {
  unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
  if (!__get_cpuid_count(7, 0, &eax, &ebx, &ecx, &edx)) {
    amx_refusal() = "no CPUID leaf 7";
    return false;
  }
  const bool tile = (edx >> 24) & 1, int8 = (edx >> 25) & 1, bf16 = (edx >> 22) & 1;
  if (!(tile && int8 && bf16)) {
    amx_refusal() = "the CPU lacks AMX-TILE/AMX-INT8/AMX-BF16";
    return false;
  }
  __get_cpuid(1, &eax, &ebx, &ecx, &edx);
  if (!((ecx >> 27) & 1)) {  // OSXSAVE: xgetbv is allowed
    amx_refusal() = "the OS has not enabled XSAVE";
    return false;
  }
  unsigned xcr0_lo = 0, xcr0_hi = 0;
  __asm__ volatile("xgetbv" : "=a"(xcr0_lo), "=d"(xcr0_hi) : "c"(0));
  if (((xcr0_lo >> 17) & 3) != 3) {
    amx_refusal() = "the OS has not enabled the AMX tile state in XCR0";
    return false;
  }
#if defined(__linux__)
  constexpr long kArchReqXcompPerm = 0x1023;
  constexpr long kXfeatureXtiledata = 18;
  if (syscall(SYS_arch_prctl, kArchReqXcompPerm, kXfeatureXtiledata) != 0) {
    amx_refusal() = "Linux refused arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) (kernel older than 5.16?)";
    return false;
  }
#endif
  return true;
}
#endif

Isa detect() {
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") &&
      __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vnni")) {
    if (!__builtin_cpu_supports("avx512vbmi")) {
      amx_refusal() = "the CPU lacks AVX-512 VBMI, below which the AMX tier does not go";
      return Isa::kAvx512Vnni;
    }
    return amx_usable() ? Isa::kAmx : Isa::kAvx512Vbmi;
  }
  amx_refusal() = "the CPU lacks AVX-512 VNNI";
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
    return Isa::kAvx2;
  }
#else
  amx_refusal() = "not an x86-64 GCC/Clang build";
#endif
  return Isa::kPortable;
}

std::atomic<int>& active_slot() {
  static std::atomic<int> slot{static_cast<int>(detected_isa())};
  return slot;
}

std::atomic<bool>& emulation_slot() {
  static std::atomic<bool> slot{false};
  return slot;
}

}  // namespace

Isa detected_isa() {
  static const Isa isa = detect();
  return isa;
}

Isa active_isa() { return static_cast<Isa>(active_slot().load(std::memory_order_relaxed)); }

bool set_isa(Isa isa) {
  if (static_cast<int>(isa) > static_cast<int>(detected_isa())) return false;
  emulation_slot().store(false, std::memory_order_relaxed);
  active_slot().store(static_cast<int>(isa), std::memory_order_relaxed);
  return true;
}

TileUnit tile_unit() {
  if (emulation_slot().load(std::memory_order_relaxed)) return TileUnit::kEmulated;
  return active_isa() == Isa::kAmx ? TileUnit::kHardware : TileUnit::kNone;
}

void set_amx_emulation() {
  const Isa below_amx = detected_isa() == Isa::kAmx ? Isa::kAvx512Vbmi : detected_isa();
  active_slot().store(static_cast<int>(below_amx), std::memory_order_relaxed);
  emulation_slot().store(true, std::memory_order_relaxed);
}

std::string isa_report() {
  std::string line = std::string("detected ") + isa_name(detected_isa()) + ", active ";
  line += tile_unit() == TileUnit::kEmulated ? "amx_emulated" : isa_name(active_isa());
  if (detected_isa() != Isa::kAmx) line += "; AMX not used: " + amx_refusal();
  if (cpu_has_avx512bf16()) line += "; avx512bf16";
  return line;
}

bool cpu_has_avx512bf16() {
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
  static const bool has = [] {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512bf16") != 0;
  }();
  return has;
#else
  return false;
#endif
}

const char* isa_name(Isa isa) {
  switch (isa) {
    case Isa::kAmx:
      return "amx";
    case Isa::kAvx512Vbmi:
      return "avx512vbmi";
    case Isa::kAvx512Vnni:
      return "avx512vnni";
    case Isa::kAvx2:
      return "avx2";
    case Isa::kPortable:
    default:
      return "portable";
  }
}

}  // namespace ck::cpu
