#pragma once
// Compiles a region of a file for one instruction set, with GCC and clang:
//
//   FATTN_TARGET_BEGIN(FATTN_ISA_AVX2)   (a target's features, simd/targets.hpp)
//   ... functions for that set ...
//   FATTN_TARGET_END
//
// GCC takes `#pragma GCC target`; clang ignores that pragma and instead
// applies __attribute__((target(...))) to every function declared in the
// region through `#pragma clang attribute`. Either way only the functions
// written inside the region get the instructions, so nothing shared with
// the portable code (inline functions, standard-library templates) is ever
// emitted with them, and the runtime dispatch (runtime/isa.cpp, CPUID) decides
// whether they run. Include system headers before the region: a header first
// seen inside it would have its functions retargeted too.
//
// Everything written inside a region has internal linkage (an unnamed
// namespace: the kernels, the traits, simd/vexp.hpp). An inline function or
// template instance with external linkage is emitted by every file that uses
// it, and the linker keeps one copy for all: two targets sharing traits
// (avx512_256 and its AVX2-compiled twin) once shared an exp whose kept copy
// was the AVX-512 one, and the twin died of SIGILL on a CPU without AVX-512.
// tests_cpp/check_target_objects.py checks the built library for such copies.
// x86-64 only: include it where FATTN_SIMD_X86 (simd/targets.hpp) is set.
#if defined(__clang__)
#define FATTN_TARGET_PRAGMA_(x) _Pragma(#x)
#define FATTN_TARGET_BEGIN(isa) FATTN_TARGET_PRAGMA_(clang attribute push(__attribute__((target(isa))), apply_to = function))
#define FATTN_TARGET_END _Pragma("clang attribute pop")
#elif defined(__GNUC__)
#define FATTN_TARGET_PRAGMA_(x) _Pragma(#x)
#define FATTN_TARGET_BEGIN(isa) _Pragma("GCC push_options") FATTN_TARGET_PRAGMA_(GCC target(isa))
#define FATTN_TARGET_END _Pragma("GCC pop_options")
#else
#error "fattn's vector paths need GCC or clang"
#endif
