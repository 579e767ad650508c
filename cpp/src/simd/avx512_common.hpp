#pragma once
// Pieces every AVX-512 path shares: the vector twin of simd/exp.hpp and
// widening loads. Include only inside a `#pragma GCC target` region that
// enables avx512f/bw/vl/dq, fma and f16c (everything here is inline and
// would otherwise be emitted for the baseline ISA, or fail to compile).
#include <immintrin.h>

#include <cmath>
#include <cstdint>

#include "fattn/dtype.hpp"
#include "simd/exp.hpp"

namespace fattn::simd::avx512 {

constexpr std::int64_t kLanes = 16;

// --- the exp of simd/exp.hpp, lane by lane ------------------------------------------
inline __m512 pow2_int(__m512i n) {
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_add_epi32(n, _mm512_set1_epi32(127)), 23));
}

inline __m512 scale_by_pow2(__m512 p, __m512 n_float) {
  const __m512i n = _mm512_cvttps_epi32(n_float);
  const __m512i n1 = _mm512_srai_epi32(n, 1);
  return _mm512_mul_ps(_mm512_mul_ps(p, pow2_int(n1)), pow2_int(_mm512_sub_epi32(n, n1)));
}

inline __m512 special_cases(__m512 x, __m512 r, float lo, float hi) {
  r = _mm512_mask_blend_ps(_mm512_cmp_ps_mask(x, _mm512_set1_ps(lo), _CMP_LT_OQ), r, _mm512_setzero_ps());
  r = _mm512_mask_blend_ps(_mm512_cmp_ps_mask(x, _mm512_set1_ps(hi), _CMP_GT_OQ), r, _mm512_set1_ps(INFINITY));
  return _mm512_mask_blend_ps(_mm512_cmp_ps_mask(x, x, _CMP_UNORD_Q), r, x);
}

inline __m512 exp2_v(__m512 x) {
  using C = ExpConstants;
  const __m512 n = _mm512_roundscale_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  const __m512 f = _mm512_sub_ps(x, n);
  __m512 p = _mm512_set1_ps(C::exp2_c[5]);
  for (int i = 4; i >= 0; --i) p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(C::exp2_c[i]));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(1.0f));
  return special_cases(x, scale_by_pow2(p, n), C::exp2_min, C::exp2_max);
}

inline __m512 exp_v(__m512 x) {
  using C = ExpConstants;
  const __m512 n =
      _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(C::log2e)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(C::ln2_hi), x);
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(C::ln2_lo), r);
  __m512 p = _mm512_set1_ps(C::exp_c[5]);
  for (int i = 4; i >= 0; --i) p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(C::exp_c[i]));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
  return special_cases(x, scale_by_pow2(p, n), C::exp_min, C::exp_max);
}


// --- loads of 16 elements widened to f32 (masked tails read nothing) ------------
inline __m512 load16(const float* p, __mmask16 m) { return _mm512_maskz_loadu_ps(m, p); }
inline __m512 load16(const float16* p, __mmask16 m) {
  return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, p));
}
inline __m512 load16(const bfloat16* p, __mmask16 m) {
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(m, p)), 16));
}

inline __mmask16 tail_mask(std::int64_t n) { return n >= kLanes ? __mmask16(0xffff) : __mmask16((1u << n) - 1u); }


}  // namespace fattn::simd::avx512
