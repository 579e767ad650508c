#include "runtime/isa.hpp"

#include <atomic>
#include <cstdlib>
#include <iterator>
#include <mutex>

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

constexpr int kAuto = -1;

// The setting: kAuto or a fixed Isa; FATTN_ISA sets its first value.
struct Setting {
  std::atomic<int> value{kAuto};
  std::string origin = "default";  // what set the current value (for isa_reason)
  std::mutex mutex;                // guards origin
  Setting() {
    const char* env = std::getenv("FATTN_ISA");
    if (!env || !*env) return;
    const std::string name = env;
    if (name == "auto") {
      origin = "FATTN_ISA=auto";
      return;
    }
    try {
      const Isa isa = isa_from_name(name);
      require(can_run(isa), "this build or CPU cannot run it");
      value = int(isa);
      origin = "FATTN_ISA=" + name;
    } catch (const std::exception& e) {
      origin = "FATTN_ISA='" + name + "' ignored (" + e.what() + "), so auto";
    }
  }
};

Setting& setting() {
  static Setting s;
  return s;
}

thread_local int t_forced = kAuto;  // ForcedIsa

// Under auto: each family's measured choice, made once.
struct Choice {
  std::once_flag once;
  Isa isa = Isa::scalar;
  std::string report;
};
Choice g_choice[kFamilies];

}  // namespace

const char* family_name(Family f) {
  switch (f) {
    case Family::decode: return "decode";
    case Family::sdpa: return "sdpa";
    case Family::prefill_short: return "prefill_short";
    case Family::prefill_f32: return "prefill_f32";
    case Family::prefill: break;
  }
  return "prefill";
}

Isa best_isa() {
  static const Isa best = detect();
  return best;
}

Isa isa_for(Family f) {
  if (t_forced != kAuto) return Isa(t_forced);
  const int v = setting().value.load(std::memory_order_relaxed);
  if (v != kAuto) return Isa(v);
  Choice& c = g_choice[int(f)];
  std::call_once(c.once, [&] {
    std::vector<Isa> candidates;
    for (const Target& t : kTargets)
      if (!t.emulated && runs(t)) candidates.push_back(t.isa);
    if (candidates.size() <= 1) {
      c.isa = candidates.empty() ? Isa::scalar : candidates[0];
      c.report = std::string(family_name(f)) + " " + isa_name(c.isa) + " (the only vector path)";
    } else {
      c.isa = detail::measure_fastest(f, candidates, c.report);
    }
  });
  return c.isa;
}

bool isa_is_auto() { return setting().value.load() == kAuto; }

std::string isa_setting() { return isa_is_auto() ? "auto" : isa_name(Isa(setting().value.load())); }

void set_isa_auto() {
  Setting& s = setting();
  std::lock_guard<std::mutex> lock(s.mutex);
  s.value = kAuto;
  s.origin = "set_isa('auto')";
}

std::string isa_origin() {
  Setting& s = setting();
  std::lock_guard<std::mutex> lock(s.mutex);
  return s.origin;
}

std::string isa_reason() {
  Setting& s = setting();
  std::string origin;
  {
    std::lock_guard<std::mutex> lock(s.mutex);
    origin = s.origin;
  }
  if (!isa_is_auto()) return isa_setting() + " for every family (" + origin + ")";
  std::string out = "auto (" + origin + "): the fastest path per family, measured on this CPU: ";
  for (int f = 0; f < kFamilies; ++f) {
    isa_for(Family(f));
    out += (f ? "; " : "") + g_choice[f].report;
  }
  return out;
}

Isa active_isa() {
  const int v = setting().value.load(std::memory_order_relaxed);
  return v == kAuto ? best_isa() : Isa(v);
}

ForcedIsa::ForcedIsa(Isa isa) : saved_(t_forced) { t_forced = int(isa); }
ForcedIsa::~ForcedIsa() { t_forced = saved_; }

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
  Setting& st = setting();
  std::lock_guard<std::mutex> lock(st.mutex);
  st.value = int(isa);
  st.origin = "set_isa('" + isa_name(isa) + "')";
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
