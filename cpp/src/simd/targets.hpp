#pragma once
// The vector targets: the one list the rest is generated from (the Isa values
// and names in runtime/isa.hpp, which targets this build and CPU can run and
// which is best in runtime/isa.cpp, the rows of the dispatch table in
// simd/dispatch.hpp). A target is one instruction set every kernel family is
// compiled for, in its own file simd/<id>.cpp. No intrinsics here: any file
// may include this.
//
// Adding a target: its line below (with a FATTN_ISA_* string if its features
// are new), its file simd/<id>.cpp (simd/avx2.cpp with its id, features and
// traits header), and a traits header simd/vec_*.hpp if none fits. A CPU
// feature fattn does not detect yet is one more line, in FATTN_CPU_FEATURES
// (runtime/cpu_features.hpp); tests_cpp/test_isa.cpp fails until it is there.
// The tests (tests_cpp/test_isa.cpp, tests_py/test_isa.py) hold every target
// the CPU runs to the scalar model.
#include <string_view>

// What a target's code is compiled for (its region, simd/target.hpp), which
// is also what the CPU must offer before the target can be chosen
// (runtime/cpu_features.hpp): one string for both, so they cannot disagree.
// GCC and clang target names.
#define FATTN_ISA_AVX2 "avx2,fma,f16c"
#define FATTN_ISA_AVX512 "avx512f,avx512bw,avx512vl,avx512dq,fma,f16c"
#define FATTN_ISA_AVX512_BF16 "avx512f,avx512bw,avx512vl,avx512dq,avx512bf16,fma,f16c"

// X(id, code, traits, features, kind), native targets best last:
//   id        its Isa enumerator, its name ("avx2") and its file simd/<id>.cpp
//   code      its Isa value (never reuse one)
//   traits    the vector traits its kernels are compiled with (simd/vec_*.hpp)
//   features  a FATTN_ISA_* string above
//   kind      native: the default where it is the best target the CPU runs;
//             emulated: another target's code on narrower vectors, for tests
//             only (listed by available_isas(true), never the default).
//             avx512_emulated runs the AVX-512 path's code with its 16 lanes
//             on AVX2 (simd/vec_avx512_emulated.hpp), so that code is held to
//             the scalar model on machines without AVX-512, and
//             avx512_bf16_emulated the avx512_bf16 path's (VDPBF16PS as
//             two FMAs under FTZ/DAZ) on machines without AVX512_BF16, and
//             avx512_256_emulated the avx512_256 path's (256-bit vectors,
//             AVX-512's register count) compiled for AVX2.
#define FATTN_VECTOR_TARGETS(X)                                                \
  X(avx2, 1, Vec256, FATTN_ISA_AVX2, native)                                   \
  X(avx512_256, 6, Vec256Wide, FATTN_ISA_AVX512, native)                       \
  X(avx512, 2, Vec512, FATTN_ISA_AVX512, native)                               \
  X(avx512_bf16, 4, Vec512Bf16, FATTN_ISA_AVX512_BF16, native)                 \
  X(avx512_emulated, 3, Vec512Emulated, FATTN_ISA_AVX2, emulated)              \
  X(avx512_256_emulated, 7, Vec256Wide, FATTN_ISA_AVX2, emulated)              \
  X(avx512_bf16_emulated, 5, Vec512Bf16Emulated, FATTN_ISA_AVX2, emulated)

// Whether this build compiles the targets: every one above is x86-64, built
// from simd/*.cpp when the CMake option FATTN_SIMD is on (its default on
// x86-64). Otherwise the core has the scalar path only, and no file includes
// <immintrin.h>.
#if defined(FATTN_SIMD) && defined(__x86_64__)
#define FATTN_SIMD_X86 1
#else
#define FATTN_SIMD_X86 0
#endif

#define FATTN_PASTE_(a, b) a##b
#define FATTN_PASTE(a, b) FATTN_PASTE_(a, b)

namespace fattn::simd {

enum class TargetKind { native, emulated };

// Each target's entry as a type (id_target), for its file
// (simd/target_kernels.inl); the traits types are defined in their headers.
// Both have internal linkage, as everything compiled in a target region must
// (simd/target.hpp).
namespace {
#define FATTN_X(id_, code_, traits_, features_, kind_)      \
  struct traits_;                                            \
  struct id_##_target {                                      \
    using Vec = traits_;                                     \
    static constexpr std::string_view features = features_; \
  };
FATTN_VECTOR_TARGETS(FATTN_X)
#undef FATTN_X
}  // namespace

}  // namespace fattn::simd
