#include "runtime/isa.hpp"

#include <atomic>

#include "fattn/error.hpp"
#include "runtime/cpu_features.hpp"

namespace fattn::simd {
namespace {

Isa detect() {
  const CpuFeatures& cpu = cpu_features();
  if (cpu.avx512f && cpu.avx512bw && cpu.avx512vl && cpu.avx512dq && cpu.fma && cpu.f16c) return Isa::avx512;
  if (cpu.avx2 && cpu.fma && cpu.f16c) return Isa::avx2;
  return Isa::scalar;
}

std::atomic<int>& active() {
  static std::atomic<int> isa{int(best_isa())};
  return isa;
}

}  // namespace

Isa best_isa() {
  static const Isa best = detect();
  return best;
}

Isa active_isa() { return Isa(active().load(std::memory_order_relaxed)); }

bool can_run(Isa isa) {
  if (isa == Isa::avx512_emulated) return int(best_isa()) >= int(Isa::avx2);
  return int(isa) <= int(best_isa());
}

void set_active_isa(Isa isa) {
  require(int(isa) >= 0 && int(isa) <= 3, "isa: unknown instruction set code ", int(isa));
  require(can_run(isa), "isa: this CPU cannot run '", isa_name(isa), "' (best: '", isa_name(best_isa()), "')");
  active().store(int(isa));
}

std::string isa_name(Isa isa) {
  switch (isa) {
    case Isa::avx512: return "avx512";
    case Isa::avx2: return "avx2";
    case Isa::avx512_emulated: return "avx512_emulated";
    case Isa::scalar: break;
  }
  return "scalar";
}

Isa isa_from_name(const std::string& name) {
  if (name == "scalar") return Isa::scalar;
  if (name == "avx2") return Isa::avx2;
  if (name == "avx512") return Isa::avx512;
  if (name == "avx512_emulated") return Isa::avx512_emulated;
  throw InvalidArgument("isa: must be 'scalar', 'avx2', 'avx512' or 'avx512_emulated', got '" + name + "'");
}

std::vector<std::string> available_isas(bool include_emulated) {
  std::vector<std::string> names;
  for (int i = 0; i <= int(best_isa()); ++i) names.push_back(isa_name(Isa(i)));
  if (include_emulated && can_run(Isa::avx512_emulated)) names.push_back(isa_name(Isa::avx512_emulated));
  return names;
}

}  // namespace fattn::simd
