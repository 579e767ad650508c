#include "fattn/build_info.hpp"

#include "fattn/parallel.hpp"
#include "runtime/isa.hpp"

namespace fattn {

BuildInfo build_info() {
  BuildInfo info;
  info.version = FATTN_VERSION;
#if defined(__clang__)
  info.compiler = "clang " __clang_version__;
#elif defined(__GNUC__)
  info.compiler = "gcc " __VERSION__;
#else
  info.compiler = "unknown";
#endif
#ifdef NDEBUG
  info.build_type = "release";
#else
  info.build_type = "debug";
#endif
#if defined(__x86_64__)
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx2")) info.cpu_features.push_back("avx2");
  if (__builtin_cpu_supports("fma")) info.cpu_features.push_back("fma");
  if (simd::cpu_has_f16c()) info.cpu_features.push_back("f16c");
  if (__builtin_cpu_supports("avx512f")) info.cpu_features.push_back("avx512f");
  if (__builtin_cpu_supports("avx512bw")) info.cpu_features.push_back("avx512bw");
  if (__builtin_cpu_supports("avx512vl")) info.cpu_features.push_back("avx512vl");
  if (__builtin_cpu_supports("avx512bf16")) info.cpu_features.push_back("avx512bf16");
#endif
  info.isa = simd::isa_name(simd::active_isa());
  info.num_threads = get_num_threads();
  return info;
}

}  // namespace fattn
