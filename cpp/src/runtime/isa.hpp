#pragma once
// Which instruction set the kernels run with: detected once, lowered on
// request (tests run every path the machine has against the scalar model).
#include <string>
#include <vector>

namespace fattn::simd {

// avx512_emulated runs the AVX-512 path's code with its 16 lanes emulated on
// AVX2 (simd/vec_avx512_emulated.hpp): slow, for testing that code on machines
// without AVX-512; any CPU with the AVX2 path can run it.
enum class Isa { scalar = 0, avx2 = 1, avx512 = 2, avx512_emulated = 3 };

// The best path this CPU supports: AVX-512 (F/BW/VL/DQ with FMA and F16C),
// AVX2 (with FMA and F16C), or scalar.
Isa best_isa();
// The path kernels use now (default: best_isa()).
Isa active_isa();
// Whether this CPU can run the path.
bool can_run(Isa isa);
// Selects a path; InvalidArgument if the CPU cannot run it.
void set_active_isa(Isa isa);
std::string isa_name(Isa isa);
// Of one kernel's vector paths, the one for `isa` (not scalar: the caller runs
// its model itself); one choice for every kernel family.
template <class Fn>
Fn vector_path(Isa isa, Fn avx512, Fn avx512_emulated, Fn avx2) {
  switch (isa) {
    case Isa::avx512: return avx512;
    case Isa::avx512_emulated: return avx512_emulated;
    default: return avx2;
  }
}
Isa isa_from_name(const std::string& name);
// The paths this CPU can run, best last; with include_emulated, also
// avx512_emulated (after them) where the CPU can run it.
std::vector<std::string> available_isas(bool include_emulated = false);

}  // namespace fattn::simd
