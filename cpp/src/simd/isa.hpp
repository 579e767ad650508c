#pragma once
// Which instruction set the kernels run with: detected once, lowered on
// request (tests run every path the machine has against the scalar model).
#include <string>
#include <vector>

namespace fattn::simd {

enum class Isa { scalar = 0, avx2 = 1, avx512 = 2 };

// The best path this CPU supports: AVX-512 (F/BW/VL/DQ with FMA and F16C),
// AVX2 (with FMA and F16C), or scalar.
Isa best_isa();
// The path kernels use now (default: best_isa()).
Isa active_isa();
// Selects a path; InvalidArgument if the CPU cannot run it.
void set_active_isa(Isa isa);
std::string isa_name(Isa isa);
Isa isa_from_name(const std::string& name);
std::vector<std::string> available_isas();
// CPUID's F16C bit (clang 14's __builtin_cpu_supports has no "f16c").
bool cpu_has_f16c();

}  // namespace fattn::simd
