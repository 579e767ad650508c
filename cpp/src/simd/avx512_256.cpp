// Target avx512_256 (simd/targets.hpp): every kernel family on 256-bit
// vectors with AVX-512's 32 registers (simd/vec_avx512_256.hpp).
#define FATTN_TARGET avx512_256
#define FATTN_TARGET_FEATURES FATTN_ISA_AVX512
#define FATTN_TARGET_TRAITS "simd/vec_avx512_256.hpp"
#include "simd/target_kernels.inl"
