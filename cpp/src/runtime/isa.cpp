#include "runtime/isa.hpp"

#include <atomic>
#include <iterator>

#include "fattn/error.hpp"
#include "runtime/cpu_features.hpp"
#include "simd/dispatch.hpp"

namespace fattn::simd {
namespace {

// A target's row of the dispatch table, or null where this build does not
// compile it (FATTN_SIMD off, or not x86-64).
#if FATTN_SIMD_X86
#define FATTN_KERNELS_OF(id) &id##_kernels
#else
#define FATTN_KERNELS_OF(id) nullptr
#endif

struct Target {
  Isa isa;
  const char* name;
  const char* features;
  bool emulated;
  const VectorKernels* kernels;
};

constexpr Target kTargets[] = {
#define FATTN_X(id, code, traits, features, kind) \
  {Isa::id, #id, features, TargetKind::kind == TargetKind::emulated, FATTN_KERNELS_OF(id)},
    FATTN_VECTOR_TARGETS(FATTN_X)
#undef FATTN_X
};

const Target* find(Isa isa) {
  for (const Target& t : kTargets)
    if (t.isa == isa) return &t;
  return nullptr;
}

bool runs(const Target& t) { return t.kernels && cpu_features().has_all(t.features); }

Isa detect() {
  Isa best = Isa::scalar;
  for (const Target& t : kTargets)
    if (!t.emulated && runs(t)) best = t.isa;
  return best;
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
  const Target* t = find(isa);
  return isa == Isa::scalar || (t && runs(*t));
}

void set_active_isa(Isa isa) {
  const Target* t = find(isa);
  require(isa == Isa::scalar || t, "isa: unknown instruction set code ", int(isa));
  if (t) {
    require(t->kernels, "isa: this build has no '", t->name, "' path (built with FATTN_SIMD off, or not for x86-64)");
    require(runs(*t), "isa: this CPU cannot run '", t->name, "' (best: '", isa_name(best_isa()), "')");
  }
  active().store(int(isa));
}

std::string isa_name(Isa isa) {
  const Target* t = find(isa);
  return t ? t->name : "scalar";
}

Isa isa_from_name(const std::string& name) {
  if (name == "scalar") return Isa::scalar;
  std::string names = "'scalar'";
  const std::size_t n = std::size(kTargets);
  for (std::size_t i = 0; i < n; ++i) {
    if (name == kTargets[i].name) return kTargets[i].isa;
    names += std::string(i + 1 < n ? ", '" : " or '") + kTargets[i].name + "'";
  }
  throw InvalidArgument("isa: must be " + names + ", got '" + name + "'");
}

std::vector<std::string> available_isas(bool include_emulated) {
  std::vector<std::string> names{"scalar"};
  for (bool emulated : {false, true})
    for (const Target& t : kTargets)
      if (t.emulated == emulated && (include_emulated || !emulated) && runs(t)) names.push_back(t.name);
  return names;
}

const VectorKernels& vector_kernels(Isa isa) { return *find(isa)->kernels; }

}  // namespace fattn::simd
