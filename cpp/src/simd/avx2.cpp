// Target avx2 (simd/targets.hpp): every kernel family compiled for
// AVX2 + FMA + F16C with the 8-lane traits.
#define FATTN_TARGET avx2
#define FATTN_TARGET_FEATURES FATTN_ISA_AVX2
#define FATTN_TARGET_TRAITS "simd/vec_avx2.hpp"
#include "simd/target_kernels.inl"
