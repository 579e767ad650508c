// The vec decode (simd/decode_simd.inl) compiled for AVX-512. Only the code
// after the target pragma is compiled for it, so no inline function shared
// with the portable code is ever emitted with its instructions.
#include "decode_engine.hpp"

#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq,fma,f16c")
#include "simd/vec_avx512.hpp"
#define FATTN_DECODE_GROUPS decode_groups_avx512
#define FATTN_VEC simd::Vec512
#include "simd/decode_entry.inl"
#pragma GCC pop_options
