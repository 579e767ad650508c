#pragma once
#include <string>
#include <utility>
#include <vector>

namespace fattn {

struct BuildInfo {
  std::string version;
  std::string compiler;
  std::string build_type;
  std::vector<std::string> cpu_features;  // what this CPU offers that fattn can use
  std::string isa;                        // the setting: "auto" (the default) or a fixed path
  // The path each kernel family runs with now: {"prefill", "avx512"}, ...
  // (under "auto", measured on first use; asking measures what is not yet).
  std::vector<std::pair<std::string, std::string>> isa_paths;
  std::string isa_reason;                 // why: the setting's origin and, under auto, the times
  std::string cpu;                        // CPUID's brand string
  int cpu_family = 0, cpu_model = 0;      // CPUID's display family and model
  long l1d_bytes = 0;                     // one core's L1 data cache (32 KiB where the OS says nothing)
  int num_threads = 1;
};

BuildInfo build_info();

}  // namespace fattn
