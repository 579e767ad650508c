#pragma once
// What this CPU offers, detected once, for every part that asks: which vector
// targets can run (runtime/isa.cpp), what build_info() reports, which loops
// the probe times. All false off x86-64.
#include <string>
#include <string_view>

namespace fattn::simd {

// X(member, name, source): each feature, named as GCC and clang name it in
// target attributes, which is how a target's features (simd/targets.hpp) name
// it; source says how it is detected: builtin, by __builtin_cpu_supports(name)
// (which checks the OS's support for the registers too), or cpuid, read in
// cpu_features.cpp (F16C: clang 14's __builtin_cpu_supports does not know it).
#define FATTN_CPU_FEATURES(X)                                                                    \
  X(avx2, "avx2", builtin) X(fma, "fma", builtin) X(f16c, "f16c", cpuid)                        \
  X(avx512f, "avx512f", builtin) X(avx512bw, "avx512bw", builtin) X(avx512vl, "avx512vl", builtin) \
  X(avx512dq, "avx512dq", builtin) X(avx512_bf16, "avx512bf16", builtin)

struct CpuFeatures {
#define FATTN_X(member, name, source) bool member = false;
  FATTN_CPU_FEATURES(FATTN_X)
#undef FATTN_X
  std::string brand;          // CPUID's brand string ("" where there is none)
  int family = 0, model = 0;  // CPUID's display family and model
  // The L1 data cache of one core, in bytes, as the OS reports it (CPUID's
  // cache leaves); 32 KiB where it reports none. The prefill sizes its
  // deferred P·V batches by it (prefill/vector_kernel.inl).
  long l1d_bytes = 32 * 1024;

  // Whether the CPU has the feature named `name`; false for a name not listed above.
  bool has(std::string_view name) const;
  // Whether it has every feature of a comma-separated list (a target's).
  bool has_all(std::string_view names) const;
  // Whether `name` is listed above.
  static bool known(std::string_view name);

 private:
  const bool* find(std::string_view name) const;
};

// This CPU's features, detected on first use.
const CpuFeatures& cpu_features();

}  // namespace fattn::simd
