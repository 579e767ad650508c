#pragma once
// The AVX-512 traits (simd/vec_avx512.hpp) plus AVX512_BF16's dot product,
// which the prefill's bf16 Q·Kᵀ runs on (prefill/vector_kernel.inl): one
// VDPBF16PS per pair of elements where the other paths take two FMAs, with
// the same bits (numerics/bf16_dot.hpp). Include only inside a target region
// enabling FATTN_ISA_AVX512_BF16.
#include "simd/vec_avx512.hpp"

namespace fattn::simd {
namespace {  // internal linkage: simd/target.hpp

struct Vec512Bf16 : Vec512 {
  static constexpr bool kBf16Dot = true;
  // acc + a.high·b.high + a.low·b.low per 32-bit lane, a and b holding bf16 pairs.
  static F dot_bf16(F acc, F a, F b) {
    return _mm512_dpbf16_ps(acc, (__m512bh)_mm512_castps_si512(a), (__m512bh)_mm512_castps_si512(b));
  }
};

}  // namespace
}  // namespace fattn::simd
