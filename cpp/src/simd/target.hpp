#pragma once
// Compiles a region of a file for one instruction set, with GCC and clang:
//
//   FATTN_TARGET_AVX2_BEGIN      (or FATTN_TARGET_AVX512_BEGIN)
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
#define FATTN_ISA_AVX512 "avx512f,avx512bw,avx512vl,avx512dq,fma,f16c"
#define FATTN_ISA_AVX2 "avx2,fma,f16c"

#if defined(__clang__)
#define FATTN_TARGET_PRAGMA_(x) _Pragma(#x)
#define FATTN_TARGET_BEGIN_(isa) FATTN_TARGET_PRAGMA_(clang attribute push(__attribute__((target(isa))), apply_to = function))
#define FATTN_TARGET_END _Pragma("clang attribute pop")
#elif defined(__GNUC__)
#define FATTN_TARGET_PRAGMA_(x) _Pragma(#x)
#define FATTN_TARGET_BEGIN_(isa) _Pragma("GCC push_options") FATTN_TARGET_PRAGMA_(GCC target(isa))
#define FATTN_TARGET_END _Pragma("GCC pop_options")
#else
#error "fattn's vector paths need GCC or clang"
#endif

#define FATTN_TARGET_AVX512_BEGIN FATTN_TARGET_BEGIN_(FATTN_ISA_AVX512)
#define FATTN_TARGET_AVX2_BEGIN FATTN_TARGET_BEGIN_(FATTN_ISA_AVX2)
