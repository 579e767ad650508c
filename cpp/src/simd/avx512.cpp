// Target avx512 (simd/targets.hpp): every kernel family compiled for
// AVX-512 (F, BW, VL, DQ) + FMA + F16C with the 16-lane traits.
#define FATTN_TARGET avx512
#define FATTN_TARGET_FEATURES FATTN_ISA_AVX512
#define FATTN_TARGET_TRAITS "simd/vec_avx512.hpp"
#include "simd/target_kernels.inl"
