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

// The kernel families, each of which gets its own path under "auto", and
// the classes of calls that get their own too: a prefill of at most
// kShortPrefillRows query rows (a speculative-decoding check, a chunk's
// tail) fills a fraction of a wide vector, and on this project's Intel Xeon
// ran 6-22% faster on AVX2 than on AVX-512 (bench/run.py --section short);
// an f32 prefill of more rows is timed apart from the 16-bit ones, whose
// bf16 Q·Kᵀ can run on AVX512_BF16 (a path that is AVX-512 for f32).
enum class Family { prefill = 0, decode = 1, sdpa = 2, prefill_short = 3, prefill_f32 = 4 };
inline constexpr int kFamilies = 5;
inline constexpr long kShortPrefillRows = 8;
const char* family_name(Family f);

// The best path this build and CPU can run: the last native target of
// simd/targets.hpp that it can run, or scalar.
Isa best_isa();
// The path a family's kernels run with: a fixed setting (set_active_isa), or
// under "auto" (the default) the native path measured fastest for that family
// on this CPU, timed once per process on small calls of a few milliseconds in
// all, on the family's first use (runtime/autotune.cpp). Every path gives
// the same bits, so the choice changes no result. FATTN_ISA in the
// environment ("auto" or a path name) sets the initial setting.
Isa isa_for(Family f);
// Whether the setting is "auto"; its name ("auto" or the fixed path).
bool isa_is_auto();
std::string isa_setting();
// Back to "auto" (the measurements already made are kept).
void set_isa_auto();
// Why each family runs what it runs, for build_info: the setting's origin
// and, under auto, the measured times (measuring the families not yet used).
std::string isa_reason();
// Only what made the setting ("default", "FATTN_ISA=avx2", "set_isa('auto')",
// or why a FATTN_ISA value was ignored); measures nothing.
std::string isa_origin();
// The fixed setting, or under "auto" best_isa() (what isa_for chooses
// among; kept for callers that want one path for everything).
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

// While alive, every family on this thread runs `isa` whatever the setting
// (the autotuner times each candidate this way; a kernel's path is chosen
// once per call, on the calling thread).
class ForcedIsa {
 public:
  explicit ForcedIsa(Isa isa);
  ~ForcedIsa();
  ForcedIsa(const ForcedIsa&) = delete;
  ForcedIsa& operator=(const ForcedIsa&) = delete;

 private:
  int saved_;
};

namespace detail {
// runtime/autotune.cpp: the fastest of `candidates` for `f`, and a line
// saying what was measured.
Isa measure_fastest(Family f, const std::vector<Isa>& candidates, std::string& report);
}  // namespace detail

}  // namespace fattn::simd
