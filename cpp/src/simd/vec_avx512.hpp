#pragma once
// 16 f32 lanes on AVX-512 (F, BW, VL, DQ + FMA, F16C). Include only inside a
// `#pragma GCC target` region enabling those: everything here is inline.
#include <immintrin.h>

#include <cstdint>
#include <cstring>

#include "fattn/dtype.hpp"
#include "simd/avx512_choices.hpp"

namespace fattn::simd {
namespace {  // internal linkage: simd/target.hpp

struct Vec512 : Avx512Choices {
  using F = __m512;
  using I = __m512i;
  using M = __mmask16;

  static M first(std::int64_t n) { return n >= W ? M(0xffff) : M((1u << n) - 1u); }
  static F load(const float* p) { return _mm512_loadu_ps(p); }
  static void store(float* p, F v) { _mm512_storeu_ps(p, v); }
  // The first n lanes (all when n >= W); the rest read as 0 and are not written.
  static F load_n(const float* p, std::int64_t n) { return _mm512_maskz_loadu_ps(first(n), p); }
  static void store_n(float* p, F v, std::int64_t n) { _mm512_mask_storeu_ps(p, first(n), v); }
  static F widen_n(const float* p, std::int64_t n) { return load_n(p, n); }
  static F widen_n(const float16* p, std::int64_t n) { return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(first(n), p)); }
  static F widen_n(const bfloat16* p, std::int64_t n) {
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(first(n), p)), 16));
  }
  static F in_register(F x) { return x; }  // 32 registers: the compiler's choice stands
  static F set1(float x) { return _mm512_set1_ps(x); }
  // The 32 bits at p (two bf16, the first in the low half) in every lane,
  // and the f32 each half stands for: low << 16, high with the low cleared.
  static F bcast_bf16_pair(const bfloat16* p) {
    std::uint32_t pair;
    std::memcpy(&pair, p, 4);
    return _mm512_castsi512_ps(_mm512_set1_epi32(std::int32_t(pair)));
  }
  static F bcast_bf16_lone(const bfloat16* p) {  // one bf16, the high half 0
    std::uint16_t x;
    std::memcpy(&x, p, 2);
    return _mm512_castsi512_ps(_mm512_set1_epi32(std::int32_t(x)));
  }
  static F bf16_low(F pair) { return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_castps_si512(pair), 16)); }
  static F bf16_high(F pair) {
    return _mm512_castsi512_ps(_mm512_and_si512(_mm512_castps_si512(pair), _mm512_set1_epi32(std::int32_t(0xFFFF0000u))));
  }
  static F zero() { return _mm512_setzero_ps(); }
  static F add(F a, F b) { return _mm512_add_ps(a, b); }
  static F sub(F a, F b) { return _mm512_sub_ps(a, b); }
  static F mul(F a, F b) { return _mm512_mul_ps(a, b); }
  static F div(F a, F b) { return _mm512_div_ps(a, b); }
  static F fmadd(F a, F b, F c) { return _mm512_fmadd_ps(a, b, c); }   // a*b + c, one rounding
  static F fnmadd(F a, F b, F c) { return _mm512_fnmadd_ps(a, b, c); } // c - a*b, one rounding
  static F max(F a, F b) { return _mm512_max_ps(a, b); }               // a > b ? a : b (b on ties, NaN)
  static F round_nearest(F x) { return _mm512_roundscale_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }
  static I to_int(F x) { return _mm512_cvttps_epi32(x); }
  static I srai1(I n) { return _mm512_srai_epi32(n, 1); }
  static I isub(I a, I b) { return _mm512_sub_epi32(a, b); }
  static F pow2(I n) {  // 2^n for n in [-126, 127]
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_add_epi32(n, _mm512_set1_epi32(127)), 23));
  }
  // a * 2^floor(b), rounded once (MXCSR's mode: nearest-even): simd/vexp.hpp.
  static constexpr bool kScalef = true;
  static F scalef(F a, F b) { return _mm512_scalef_ps(a, b); }
  static I iota(std::int32_t start) {
    return _mm512_add_epi32(_mm512_set1_epi32(start),
                            _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15));
  }
  static I iset1(std::int32_t x) { return _mm512_set1_epi32(x); }
  static M int_gt(I a, I b) { return _mm512_cmpgt_epi32_mask(a, b); }
  static M lt(F a, F b) { return _mm512_cmp_ps_mask(a, b, _CMP_LT_OQ); }
  static M gt(F a, F b) { return _mm512_cmp_ps_mask(a, b, _CMP_GT_OQ); }
  static M is_nan(F a) { return _mm512_cmp_ps_mask(a, a, _CMP_UNORD_Q); }
  static M ne(F a, F b) { return _mm512_cmp_ps_mask(a, b, _CMP_NEQ_UQ); }  // as a != b (NaN: true)
  static M and_mask(M a, M b) { return M(a & b); }
  static F blend(M m, F a, F b) { return _mm512_mask_blend_ps(m, a, b); }  // b where m, else a
  static M from_bits(std::uint32_t bits) { return M(bits & 0xffffu); }
  static bool any(M m) { return m != 0; }
  static M outside(F x, float bound) {  // |x| > bound, or NaN
    return _mm512_cmp_ps_mask(_mm512_abs_ps(x), _mm512_set1_ps(bound), _CMP_NLE_UQ);
  }
  template <int kImm>
  static F shuffle(F a, F b) { return _mm512_shuffle_ps(a, b, kImm); }  // within each 128-bit lane
  static F unpacklo(F a, F b) { return _mm512_unpacklo_ps(a, b); }  // within each 128-bit lane
  static F unpackhi(F a, F b) { return _mm512_unpackhi_ps(a, b); }
  // [even 128-bit lanes of a, of b] + [odd 128-bit lanes of a, of b].
  static F fold128(F a, F b) {
    return _mm512_add_ps(_mm512_shuffle_f32x4(a, b, 0x88), _mm512_shuffle_f32x4(a, b, 0xDD));
  }
  // dst[c * dst_stride + r] = src[r * src_stride + c] for r, c < W (see Vec256::transpose).
  static void transpose(const float* src, std::int64_t src_stride, float* dst, std::int64_t dst_stride) {
    F r[16], t[16];
    for (int i = 0; i < 16; ++i) r[i] = load(src + i * src_stride);
    // Within each 128-bit lane as Vec256's first two steps: r[i + 2j + k] holds
    // rows i..i+3, column 4l + 2j + k of 128-bit lane l.
    for (int i = 0; i < 16; i += 2) {
      t[i] = _mm512_unpacklo_ps(r[i], r[i + 1]);
      t[i + 1] = _mm512_unpackhi_ps(r[i], r[i + 1]);
    }
    for (int i = 0; i < 16; i += 4)
      for (int j = 0; j < 2; ++j) {
        r[i + 2 * j] = _mm512_shuffle_ps(t[i + j], t[i + j + 2], 0x44);
        r[i + 2 * j + 1] = _mm512_shuffle_ps(t[i + j], t[i + j + 2], 0xEE);
      }
    // Then the 128-bit lanes: column 4l + c gathers lane l of the four row groups.
    for (int c = 0; c < 4; ++c) {
      const F a = _mm512_shuffle_f32x4(r[c], r[c + 4], 0x88);       // lanes 0, 2 of groups 0, 1
      const F b = _mm512_shuffle_f32x4(r[c + 8], r[c + 12], 0x88);  // lanes 0, 2 of groups 2, 3
      const F e = _mm512_shuffle_f32x4(r[c], r[c + 4], 0xDD);       // lanes 1, 3
      const F f = _mm512_shuffle_f32x4(r[c + 8], r[c + 12], 0xDD);
      store(dst + c * dst_stride, _mm512_shuffle_f32x4(a, b, 0x88));         // lane 0
      store(dst + (c + 8) * dst_stride, _mm512_shuffle_f32x4(a, b, 0xDD));   // lane 2
      store(dst + (c + 4) * dst_stride, _mm512_shuffle_f32x4(e, f, 0x88));   // lane 1
      store(dst + (c + 12) * dst_stride, _mm512_shuffle_f32x4(e, f, 0xDD));  // lane 3
    }
  }
  // After transpose4 (decode/vector_kernel.inl) element 4l + i holds item 4i + l;
  // this puts item g back at element g.
  static F untranspose(F a) {
    return _mm512_permutexvar_ps(_mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15), a);
  }
};

}  // namespace
}  // namespace fattn::simd
