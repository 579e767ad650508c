// Target avx512_emulated (simd/targets.hpp): the AVX-512 path's code with its
// traits emulated on AVX2 (simd/vec_avx512_emulated.hpp), so it runs and is
// tested on machines without AVX-512. Compiled for AVX2 + FMA + F16C.
#define FATTN_TARGET avx512_emulated
#define FATTN_TARGET_FEATURES FATTN_ISA_AVX2
#define FATTN_TARGET_TRAITS "simd/vec_avx512_emulated.hpp"
#include "simd/target_kernels.inl"
