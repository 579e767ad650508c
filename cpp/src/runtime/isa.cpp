#include "runtime/isa.hpp"

#include <atomic>

#if defined(__x86_64__) && defined(__GNUC__)
#include <cpuid.h>
#endif

#include "fattn/error.hpp"

namespace fattn::simd {
namespace {

#if defined(__x86_64__) && defined(__GNUC__)
// F16C from CPUID leaf 1 directly: clang 14's __builtin_cpu_supports does not
// know "f16c". (It only matters where AVX is usable, which the AVX2 and
// AVX-512 checks below establish, OS support included.)
bool has_f16c() {
  unsigned a = 0, b = 0, c = 0, d = 0;
  return __get_cpuid(1, &a, &b, &c, &d) && (c & bit_F16C) != 0;
}
#else
bool has_f16c() { return false; }
#endif

Isa detect() {
#if defined(__x86_64__) && defined(__GNUC__)
  __builtin_cpu_init();
  const bool f16c = has_f16c();
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
      __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("fma") &&
      f16c)
    return Isa::avx512;
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && f16c) return Isa::avx2;
#endif
  return Isa::scalar;
}

std::atomic<int>& active() {
  static std::atomic<int> isa{int(best_isa())};
  return isa;
}

}  // namespace

bool cpu_has_f16c() {
  static const bool f16c = has_f16c();
  return f16c;
}

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
