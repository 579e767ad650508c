// The naive SDPA (sdpa/vector_kernel.inl) with the AVX-512 path's
// traits emulated on AVX2 (simd/vec_avx512_emulated.hpp): the AVX-512 code,
// run and tested on machines without AVX-512. Compiled for AVX2 + FMA + F16C
// inside a target region (simd/target.hpp), like simd/sdpa_avx2.cpp.
#include <immintrin.h>

#include <algorithm>
#include <cstdint>
#include <type_traits>
#include <vector>

#include "sdpa/engine.hpp"
#include "numerics/exp.hpp"
#include "simd/target.hpp"

FATTN_TARGET_AVX2_BEGIN
#include "simd/vec_avx512_emulated.hpp"
#define FATTN_SDPA_ROWS sdpa_rows_avx512_emulated
#define FATTN_VEC simd::Vec512Emulated
#include "sdpa/vector_entry.inl"
FATTN_TARGET_END
