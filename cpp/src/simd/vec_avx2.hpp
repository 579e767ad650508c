#pragma once
// 8 f32 lanes on AVX2 + FMA + F16C. Include only inside a `#pragma GCC
// target` region enabling those: everything here is inline. Masks are
// vectors of all-ones / all-zeros lanes.
#include <immintrin.h>

#include <cstdint>
#include <cstring>

#include "fattn/dtype.hpp"

namespace fattn::simd {
namespace {  // internal linkage: simd/target.hpp

struct Vec256 {
  using F = __m256;
  using I = __m256i;
  using M = __m256;
  static constexpr std::int64_t W = 8;
  static constexpr int kScoreKeys = 2;  // 16 ymm registers: 2 keys x 4 row vectors in flight
  // Prefill P·V with the query rows in the lanes (prefill/vector_kernel.inl):
  // the row form's broadcasts per FMA cost FMA-pipe slots here (Zen 1).
  static constexpr bool kPvRowsInLanes = true;
  static constexpr int kPvLaneAccumulators = 8;  // the lanes form's: kD elements x NV row vectors
  // D vectors per row held in registers when `rows` rows share each V load
  // (the prefill row form, which still serves blocks of at most 4 rows, and
  // the decode P·V over a KV head's query heads): at least 8 accumulators in
  // all, so the 5-cycle FMA chains overlap.
  static constexpr int pv_vectors(int rows) { return rows >= 4 ? 2 : 8 / rows; }
  // No bf16 dot-product instruction: the prefill's bf16 Q·Kᵀ is two FMAs
  // per pair under FtzDazScope (prefill/vector_kernel.inl).
  static constexpr bool kBf16Dot = false;
  // bf16 K rows read in place as pairs (widening them into an f32 tile cost
  // ~10% on Zen 1, whose vector ALU ops do not take the FMA pipes' slots).
  static constexpr bool kWidenBf16Keys = false;
  static constexpr bool kScalef = false;  // exp scales by 2^n with two multiplies (simd/vexp.hpp)
  // Decode scores a K row at a time by pair sums (decode/vector_kernel.inl,
  // row_block_scores): on this target the K-planes form was bound by loads
  // and stores, and the earlier positions-in-lanes form (8 rows' float4
  // groups transposed in registers) by its transposes: the row form ran
  // decode 1.3-2x faster (Zen 4 with AVX2 only, f16 and f32, groups 1-8).
  static constexpr bool kDecodeRowScores = true;

  static I lanes() { return _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7); }
  static I first_int(std::int64_t n) {
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(std::int32_t(n < W ? n : W)), lanes());
  }
  static F load(const float* p) { return _mm256_loadu_ps(p); }
  static void store(float* p, F v) { _mm256_storeu_ps(p, v); }
  static F load_n(const float* p, std::int64_t n) {
    return n >= W ? _mm256_loadu_ps(p) : _mm256_maskload_ps(p, first_int(n));
  }
  static void store_n(float* p, F v, std::int64_t n) {
    if (n >= W) _mm256_storeu_ps(p, v);
    else _mm256_maskstore_ps(p, first_int(n), v);
  }
  static __m128i load16_n(const void* p, std::int64_t n) {  // 8 x 16 bits, zeros past n
    if (n >= W) return _mm_loadu_si128(static_cast<const __m128i*>(p));
    alignas(16) std::uint16_t tmp[8] = {};
    std::memcpy(tmp, p, std::size_t(n > 0 ? n : 0) * 2);  // bytes: the past-Lk row is float storage
    return _mm_load_si128(reinterpret_cast<const __m128i*>(tmp));
  }
  static F widen_n(const float* p, std::int64_t n) { return load_n(p, n); }
  static F widen_n(const float16* p, std::int64_t n) { return _mm256_cvtph_ps(load16_n(p, n)); }
  static F widen_n(const bfloat16* p, std::int64_t n) {
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(load16_n(p, n)), 16));
  }
  // x, held in a register: stops the compiler from folding one load into
  // several FMAs as memory operands (each a full 256-bit load: Zen 1 can issue
  // one per cycle, so a loop of them is bound by loads, not FMAs).
  static F in_register(F x) {
    asm("" : "+x"(x));
    return x;
  }
  static F set1(float x) { return _mm256_set1_ps(x); }
  // The 32 bits at p (two bf16, the first in the low half) in every lane,
  // and the f32 each half stands for: low << 16, high with the low cleared.
  static F bcast_bf16_pair(const bfloat16* p) {
    std::uint32_t pair;
    std::memcpy(&pair, p, 4);
    return _mm256_castsi256_ps(_mm256_set1_epi32(std::int32_t(pair)));
  }
  // One bf16 as a pair whose high half is 0 (the last element of an odd D).
  static F bcast_bf16_lone(const bfloat16* p) {
    std::uint16_t x;
    std::memcpy(&x, p, 2);
    return _mm256_castsi256_ps(_mm256_set1_epi32(std::int32_t(x)));
  }
  static F bf16_low(F pair) { return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_castps_si256(pair), 16)); }
  static F bf16_high(F pair) {
    return _mm256_castsi256_ps(_mm256_and_si256(_mm256_castps_si256(pair), _mm256_set1_epi32(std::int32_t(0xFFFF0000u))));
  }
  static F zero() { return _mm256_setzero_ps(); }
  static F add(F a, F b) { return _mm256_add_ps(a, b); }
  static F sub(F a, F b) { return _mm256_sub_ps(a, b); }
  static F mul(F a, F b) { return _mm256_mul_ps(a, b); }
  static F div(F a, F b) { return _mm256_div_ps(a, b); }
  static F fmadd(F a, F b, F c) { return _mm256_fmadd_ps(a, b, c); }
  static F fnmadd(F a, F b, F c) { return _mm256_fnmadd_ps(a, b, c); }
  static F max(F a, F b) { return _mm256_max_ps(a, b); }  // a > b ? a : b (b on ties, NaN), as MAXPS
  static F round_nearest(F x) { return _mm256_round_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }
  static I to_int(F x) { return _mm256_cvttps_epi32(x); }
  static I srai1(I n) { return _mm256_srai_epi32(n, 1); }
  static I isub(I a, I b) { return _mm256_sub_epi32(a, b); }
  static F pow2(I n) {
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(n, _mm256_set1_epi32(127)), 23));
  }
  static I iota(std::int32_t start) { return _mm256_add_epi32(_mm256_set1_epi32(start), lanes()); }
  static I iset1(std::int32_t x) { return _mm256_set1_epi32(x); }
  static M int_gt(I a, I b) { return _mm256_castsi256_ps(_mm256_cmpgt_epi32(a, b)); }
  static M lt(F a, F b) { return _mm256_cmp_ps(a, b, _CMP_LT_OQ); }
  static M gt(F a, F b) { return _mm256_cmp_ps(a, b, _CMP_GT_OQ); }
  static M is_nan(F a) { return _mm256_cmp_ps(a, a, _CMP_UNORD_Q); }
  static M ne(F a, F b) { return _mm256_cmp_ps(a, b, _CMP_NEQ_UQ); }  // as a != b (NaN: true)
  static M and_mask(M a, M b) { return _mm256_and_ps(a, b); }
  static F blend(M m, F a, F b) { return _mm256_blendv_ps(a, b, m); }
  static M from_bits(std::uint32_t bits) {
    const I bit = _mm256_sllv_epi32(_mm256_set1_epi32(1), lanes());
    return _mm256_castsi256_ps(_mm256_cmpeq_epi32(_mm256_and_si256(_mm256_set1_epi32(std::int32_t(bits)), bit), bit));
  }
  static bool any(M m) { return _mm256_movemask_ps(m) != 0; }
  static M outside(F x, float bound) {  // |x| > bound, or NaN
    const F magnitude = _mm256_andnot_ps(_mm256_set1_ps(-0.0f), x);
    return _mm256_cmp_ps(magnitude, _mm256_set1_ps(bound), _CMP_NLE_UQ);
  }
  template <int kImm>
  static F shuffle(F a, F b) { return _mm256_shuffle_ps(a, b, kImm); }  // within each 128-bit lane
  static F unpacklo(F a, F b) { return _mm256_unpacklo_ps(a, b); }  // within each 128-bit lane
  static F unpackhi(F a, F b) { return _mm256_unpackhi_ps(a, b); }
  // [low 128-bit lanes of a, b] + [high 128-bit lanes of a, b].
  static F fold128(F a, F b) {
    return _mm256_add_ps(_mm256_permute2f128_ps(a, b, 0x20), _mm256_permute2f128_ps(a, b, 0x31));
  }
  // dst[c * dst_stride + r] = src[r * src_stride + c] for r, c < W: a W x W
  // block moved between a row-major and a lanes-major buffer (the prefill's
  // staged Q and its output), 24 shuffles instead of 64 single-lane moves.
  static void transpose(const float* src, std::int64_t src_stride, float* dst, std::int64_t dst_stride) {
    F r[8], t[8];
    for (int i = 0; i < 8; ++i) r[i] = load(src + i * src_stride);
    for (int i = 0; i < 8; i += 2) {
      t[i] = _mm256_unpacklo_ps(r[i], r[i + 1]);      // rows i, i+1: columns 0 1 | 4 5 interleaved
      t[i + 1] = _mm256_unpackhi_ps(r[i], r[i + 1]);  // columns 2 3 | 6 7
    }
    for (int i = 0; i < 8; i += 4)
      for (int j = 0; j < 2; ++j) {
        r[i + 2 * j] = _mm256_shuffle_ps(t[i + j], t[i + j + 2], 0x44);      // rows i..i+3, column 2j (| +4)
        r[i + 2 * j + 1] = _mm256_shuffle_ps(t[i + j], t[i + j + 2], 0xEE);  // column 2j + 1 (| +4)
      }
    for (int c = 0; c < 4; ++c) {
      store(dst + c * dst_stride, _mm256_permute2f128_ps(r[c], r[c + 4], 0x20));
      store(dst + (c + 4) * dst_stride, _mm256_permute2f128_ps(r[c], r[c + 4], 0x31));
    }
  }
  // After transpose4 (decode/vector_kernel.inl) element 4l + i holds item 2i + l;
  // this puts item g back at element g.
  static F untranspose(F a) { return _mm256_permutevar8x32_ps(a, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7)); }
};

}  // namespace
}  // namespace fattn::simd
