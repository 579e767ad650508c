// Target avx512_bf16 (simd/targets.hpp): the AVX-512 path with the prefill's
// bf16 Q·Kᵀ on VDPBF16PS (simd/vec_avx512_bf16.hpp).
#define FATTN_TARGET avx512_bf16
#define FATTN_TARGET_FEATURES FATTN_ISA_AVX512_BF16
#define FATTN_TARGET_TRAITS "simd/vec_avx512_bf16.hpp"
#include "simd/target_kernels.inl"
