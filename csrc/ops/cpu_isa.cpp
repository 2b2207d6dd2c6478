// The CPU path control ops (testing / benchmarking): query or force the instruction-set path, the
// report of what was detected, the kernel tier each family runs now, and the AMX peak rate.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <atomic>
#include <chrono>
#include <string>
#include <utility>
#include <vector>

#include "../cpu/codebook.h"
#include "../cpu/dispatch.h"
#include "../cpu/int4.h"
#include "../cpu/int8_gemm.h"
#include "../cpu/isa.h"
#include "../cpu/requantize.h"
#include "../cpu/sparse24.h"

// fake_quant.h and sparse24.h both define the bf16 conversions (one translation unit cannot include
// both), so the fake-quant table is declared here as in fake_quant.h; select() reads only pointers.
namespace ck::cpu {
struct FakeQuantKernels;
extern const TierTable<FakeQuantKernels> fake_quant_tiers;
}  // namespace ck::cpu

namespace ck::ops {
namespace {

std::string cpu_isa(c10::string_view isa) {
  const std::pair<const char*, cpu::Isa> paths[] = {{"portable", cpu::Isa::kPortable},
                                                    {"avx2", cpu::Isa::kAvx2},
                                                    {"avx512vnni", cpu::Isa::kAvx512Vnni},
                                                    {"avx512vbmi", cpu::Isa::kAvx512Vbmi},
                                                    {"amx", cpu::Isa::kAmx}};
  bool known = isa.empty();
  for (const auto& [name, path] : paths) {
    if (isa == name) {
      TORCH_CHECK(cpu::set_isa(path), "_cpu_isa: this CPU lacks ", name,
                  " (detected: ", cpu::isa_name(cpu::detected_isa()), "; ", cpu::isa_report(), ")");
      known = true;
    }
  }
  if (isa == "amx_emulated") {
    cpu::set_amx_emulation();
    known = true;
  } else if (isa == "auto") {
    cpu::set_isa(cpu::detected_isa());
    known = true;
  }
  TORCH_CHECK(known,
              "_cpu_isa: isa must be \"\", \"auto\", \"portable\", \"avx2\", \"avx512vnni\", \"avx512vbmi\", "
              "\"amx\" or \"amx_emulated\", got \"",
              std::string(isa), "\"");
  return cpu::tile_unit() == cpu::TileUnit::kEmulated ? "amx_emulated" : cpu::isa_name(cpu::active_isa());
}

std::string cpu_isa_report() { return cpu::isa_report(); }

// The AMX limit of this machine now, in operations per second on every torch thread at once: the
// register-only tile loop (amx_register_loop) timed for about `seconds`. Benchmarks quote kernel
// speed as a share of it, because the machines' clocks drift between hours.
double amx_peak_ops(c10::string_view kind, double seconds) {
  TORCH_CHECK(kind == "int8" || kind == "bf16", "_amx_peak: kind must be \"int8\" or \"bf16\", got \"",
              std::string(kind), "\"");
  TORCH_CHECK(seconds > 0 && seconds <= 10, "_amx_peak: seconds must be in (0, 10], got ", seconds);
  TORCH_CHECK(cpu::detected_isa() == cpu::Isa::kAmx, "_amx_peak: this CPU path has no AMX (", cpu::isa_report(), ")");
  const bool bf16 = kind == "bf16";
  const int64_t threads = at::get_num_threads();
  cpu::amx_register_loop(bf16, 1 << 16);  // warm-up: the tile unit powers up on first use
  int64_t iterations = 1 << 18;
  for (;;) {
    std::atomic<int64_t> ops{0};
    const auto start = std::chrono::steady_clock::now();
    at::parallel_for(0, threads, 1, [&](int64_t b, int64_t e) {
      for (int64_t t = b; t < e; ++t) ops += cpu::amx_register_loop(bf16, iterations);
    });
    const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    if (elapsed >= seconds || iterations > (int64_t{1} << 34)) return static_cast<double>(ops.load()) / elapsed;
    iterations *= 2;
  }
}

// The bf16 kernel path that runs now: "avx512bf16" (vdpbf16ps), "avx2" (fp32 FMAs under FTZ/DAZ)
// or "portable"; all give the same bits.
std::string cpu_bf16_path() { return cpu::sparse24_bf16_path(); }

// "family=tier" for every kernel family, in a fixed order: the tier whose kernels a call would run
// now. The int8 GEMM and int8 2:4 families are listed twice: "<family>" for a plan that takes the
// AMX kernel (plan.amx) and "<family>_vector" for one that does not.
std::vector<std::string> cpu_kernel_tiers() {
  const cpu::TierMask all = cpu::enabled_tiers(), vector = cpu::enabled_tiers(false);
  const std::pair<const char*, cpu::Tier> families[] = {
      {"requantize", cpu::requantize_tiers.select(all)},
      {"quantize_rows", cpu::quantize_rows_tiers.select(all)},
      {"int8_gemm", cpu::int8_gemm_tiers.select(all)},
      {"int8_gemm_vector", cpu::int8_gemm_tiers.select(vector)},
      {"codebook", cpu::codebook_tiers.select(all)},
      {"fake_quant", cpu::fake_quant_tiers.select(all)},
      {"sparse24_f32", cpu::sparse24_f32_tiers.select(all)},
      {"sparse24_int8", cpu::sparse24_int8_tiers.select(all)},
      {"sparse24_int8_vector", cpu::sparse24_int8_tiers.select(vector)},
      {"sparse24_bf16", cpu::sparse24_bf16_tiers.select(all)},
      {"int4_w4a8", cpu::int4_w4a8_tiers.select(all)},
      {"int4_w4a8_vector", cpu::int4_w4a8_tiers.select(vector)},
      {"int4_f32", cpu::int4_f32_tiers.select(all)},
      {"int4_f32_vector", cpu::int4_f32_tiers.select(vector)},
  };
  std::vector<std::string> out;
  for (const auto& [family, tier] : families) out.push_back(std::string(family) + "=" + cpu::tier_name(tier));
  return out;
}

}  // namespace
}  // namespace ck::ops

TORCH_LIBRARY_IMPL(compress_kernels, CompositeExplicitAutograd, m) {
  m.impl("_cpu_isa", &ck::ops::cpu_isa);
  m.impl("_cpu_bf16_path", &ck::ops::cpu_bf16_path);
  m.impl("_cpu_isa_report", &ck::ops::cpu_isa_report);
  m.impl("_cpu_kernel_tiers", &ck::ops::cpu_kernel_tiers);
  m.impl("_amx_peak", &ck::ops::amx_peak_ops);
}
