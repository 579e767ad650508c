// The vec decode (simd/decode_simd.inl) compiled for AVX2 + FMA + F16C. Only the code
// after the target pragma is compiled for it, so no inline function shared
// with the portable code is ever emitted with its instructions.
#include "decode_engine.hpp"

#pragma GCC push_options
#pragma GCC target("avx2,fma,f16c")
#include "simd/vec_avx2.hpp"
#define FATTN_DECODE_GROUPS decode_groups_avx2
#define FATTN_VEC simd::Vec256
#include "simd/decode_entry.inl"
#pragma GCC pop_options
