#pragma once
// Which instruction set the kernels run with: detected once, lowered on
// request (tests run every path the machine has against the scalar model).
// The vector targets and their names come from simd/targets.hpp.
#include <string>
#include <vector>

#include "simd/targets.hpp"

namespace fattn::simd {

enum class Isa {
  scalar = 0,
#define FATTN_X(id, code, traits, features, kind) id = code,
  FATTN_VECTOR_TARGETS(FATTN_X)
#undef FATTN_X
};

// The best path this build and CPU can run: the last native target of
// simd/targets.hpp that it can run, or scalar.
Isa best_isa();
// The path kernels use now (default: best_isa()).
Isa active_isa();
// Whether this build has the path compiled in and this CPU can run it.
bool can_run(Isa isa);
// Selects a path; InvalidArgument if this build or CPU cannot run it.
void set_active_isa(Isa isa);
std::string isa_name(Isa isa);
Isa isa_from_name(const std::string& name);
// The paths this build and CPU can run: scalar, then the native targets, best
// last; with include_emulated, also the emulated ones (after them).
std::vector<std::string> available_isas(bool include_emulated = false);

}  // namespace fattn::simd
