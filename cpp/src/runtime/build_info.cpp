#include "fattn/build_info.hpp"

#include "fattn/parallel.hpp"
#include "runtime/cpu_features.hpp"
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
  // The names and order build_info() has always reported.
  for (const char* name : {"avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512bf16"})
    if (simd::cpu_features().has(name)) info.cpu_features.push_back(name);
  info.isa = simd::isa_setting();
  for (int f = 0; f < simd::kFamilies; ++f)
    info.isa_paths.emplace_back(simd::family_name(simd::Family(f)), simd::isa_name(simd::isa_for(simd::Family(f))));
  info.isa_reason = simd::isa_reason();
  info.cpu = simd::cpu_features().brand;
  info.cpu_family = simd::cpu_features().family;
  info.cpu_model = simd::cpu_features().model;
  info.l1d_bytes = simd::cpu_features().l1d_bytes;
  info.num_threads = get_num_threads();
  return info;
}

}  // namespace fattn
