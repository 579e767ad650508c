// Target avx512_256_emulated (simd/targets.hpp): the avx512_256 path's code
// compiled for AVX2 (16 registers, so it spills), held to the scalar model on
// machines without AVX-512.
#define FATTN_TARGET avx512_256_emulated
#define FATTN_TARGET_FEATURES FATTN_ISA_AVX2
#define FATTN_TARGET_TRAITS "simd/vec_avx512_256.hpp"
#include "simd/target_kernels.inl"
