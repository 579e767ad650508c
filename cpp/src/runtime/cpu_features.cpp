#include "runtime/cpu_features.hpp"

#include <cstring>

#if defined(__linux__)
#include <unistd.h>
#endif

#if defined(__x86_64__) && defined(__GNUC__)
#include <cpuid.h>
#endif

namespace fattn::simd {
namespace {

#if defined(__x86_64__) && defined(__GNUC__)
// The brand string of CPUID leaves 0x80000002-4, without its padding.
std::string brand_string() {
  if (unsigned(__get_cpuid_max(0x80000000, nullptr)) < 0x80000004) return "";
  unsigned regs[12] = {};
  for (unsigned i = 0; i < 3; ++i)
    __get_cpuid(0x80000002 + i, &regs[4 * i], &regs[4 * i + 1], &regs[4 * i + 2], &regs[4 * i + 3]);
  char text[sizeof regs + 1] = {};
  std::memcpy(text, regs, sizeof regs);
  std::string brand(text);
  const auto first = brand.find_first_not_of(' '), last = brand.find_last_not_of(' ');
  return first == std::string::npos ? "" : brand.substr(first, last - first + 1);
}

CpuFeatures detect() {
  CpuFeatures f;
  // libgcc's (and compiler-rt's) checks, which include the OS's support for
  // the AVX and AVX-512 registers.
  __builtin_cpu_init();
#define FATTN_DETECT_builtin(member, name) f.member = __builtin_cpu_supports(name);
#define FATTN_DETECT_cpuid(member, name)
#define FATTN_X(member, name, source) FATTN_DETECT_##source(member, name)
  FATTN_CPU_FEATURES(FATTN_X)
#undef FATTN_X
#undef FATTN_DETECT_cpuid
#undef FATTN_DETECT_builtin
  unsigned a = 0, b = 0, c = 0, d = 0;
  if (__get_cpuid(1, &a, &b, &c, &d)) {
    // F16C from CPUID leaf 1 directly: clang 14's __builtin_cpu_supports does
    // not know "f16c". (It only matters where AVX is usable, which every
    // target that needs it also asks for, OS support included.)
    f.f16c = (c & bit_F16C) != 0;
    const unsigned family = (a >> 8) & 0xf, model = (a >> 4) & 0xf;
    f.family = int(family == 0xf ? family + ((a >> 20) & 0xff) : family);
    f.model = int(family == 0x6 || family == 0xf ? model | (((a >> 16) & 0xf) << 4) : model);
  }
  f.brand = brand_string();
#if defined(__linux__) && defined(_SC_LEVEL1_DCACHE_SIZE)
  const long l1d = sysconf(_SC_LEVEL1_DCACHE_SIZE);  // glibc reads CPUID's cache leaves
  if (l1d >= 4096 && l1d <= (long(1) << 24)) f.l1d_bytes = l1d;
#endif
  return f;
}
#else
CpuFeatures detect() { return {}; }
#endif

}  // namespace

const bool* CpuFeatures::find(std::string_view name) const {
#define FATTN_X(member, spelling, source) \
  if (name == spelling) return &member;
  FATTN_CPU_FEATURES(FATTN_X)
#undef FATTN_X
  return nullptr;
}

bool CpuFeatures::has(std::string_view name) const {
  const bool* flag = find(name);
  return flag && *flag;
}

bool CpuFeatures::has_all(std::string_view names) const {
  for (;;) {
    const auto comma = names.find(',');
    if (!has(names.substr(0, comma))) return false;
    if (comma == std::string_view::npos) return true;
    names.remove_prefix(comma + 1);
  }
}

bool CpuFeatures::known(std::string_view name) { return CpuFeatures{}.find(name) != nullptr; }

const CpuFeatures& cpu_features() {
  static const CpuFeatures features = detect();
  return features;
}

}  // namespace fattn::simd
