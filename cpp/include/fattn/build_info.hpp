#pragma once
#include <string>
#include <vector>

namespace fattn {

struct BuildInfo {
  std::string version;
  std::string compiler;
  std::string build_type;
  std::vector<std::string> cpu_features;  // what this CPU offers that fattn can use
  std::string isa;                        // the instruction set the kernels run with
  int num_threads = 1;
};

BuildInfo build_info();

}  // namespace fattn
