// The prefill engine (prefill/vector_kernel.inl) compiled for AVX-512. Only the
// code inside the target region (simd/target.hpp) is compiled for it, so no inline function
// shared with the portable code is ever emitted with its instructions.
#include <immintrin.h>

#include <algorithm>
#include <cstdint>
#include <type_traits>
#include <vector>

#include "prefill/engine.hpp"
#include "numerics/exp.hpp"
#include "simd/target.hpp"

FATTN_TARGET_AVX512_BEGIN
#include "simd/vec_avx512.hpp"
#define FATTN_PREFILL_ROWS prefill_rows_avx512
#define FATTN_VEC simd::Vec512
#include "prefill/vector_entry.inl"
FATTN_TARGET_END
