// Target avx512_bf16_emulated (simd/targets.hpp): the avx512_bf16 path's code
// on AVX2, VDPBF16PS as two FMAs (simd/vec_avx512_emulated.hpp), so that code
// is held to the scalar model on machines without AVX512_BF16.
#define FATTN_TARGET avx512_bf16_emulated
#define FATTN_TARGET_FEATURES FATTN_ISA_AVX2
#define FATTN_TARGET_TRAITS "simd/vec_avx512_emulated.hpp"
#include "simd/target_kernels.inl"
