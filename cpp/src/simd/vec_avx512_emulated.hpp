#pragma once
// The AVX-512 traits (simd/vec_avx512.hpp) emulated with two AVX2 vectors:
// 16 lanes, the same choices (simd/avx512_choices.hpp), each operation the
// same lane by lane (Vec512's 128-bit-lane shuffles are Vec256's on each
// half; the cross-lane ones are spelled out). It runs the AVX-512 path's code
// on a machine without AVX-512, so tests hold that code to the scalar model
// there too. Slow, and meant only for that. Include only inside an AVX2
// target region.
#include <algorithm>
#include <cstdint>

#include "simd/avx512_choices.hpp"
#include "simd/vec_avx2.hpp"

namespace fattn::simd {
namespace {  // internal linkage: simd/target.hpp

struct Vec512Emulated : Avx512Choices {
  using H = Vec256;  // each half: 8 lanes
  struct F { H::F lo, hi; };
  struct I { H::I lo, hi; };
  struct M { H::M lo, hi; };
  static constexpr std::int64_t kHalf = H::W;

  static F load(const float* p) { return {H::load(p), H::load(p + kHalf)}; }
  static void store(float* p, F v) {
    H::store(p, v.lo);
    H::store(p + kHalf, v.hi);
  }
  // Lanes past n read as 0 and are not written, as with AVX-512's masks.
  template <class T>
  static F widen_n(const T* p, std::int64_t n) {
    return {H::widen_n(p, std::min(n, kHalf)), n > kHalf ? H::widen_n(p + kHalf, n - kHalf) : H::zero()};
  }
  static F load_n(const float* p, std::int64_t n) { return widen_n(p, n); }
  static void store_n(float* p, F v, std::int64_t n) {
    H::store_n(p, v.lo, std::min(n, kHalf));
    if (n > kHalf) H::store_n(p + kHalf, v.hi, n - kHalf);
  }
  static F in_register(F x) { return x; }  // as Vec512's
  static F set1(float x) { return {H::set1(x), H::set1(x)}; }
  static F bcast_bf16_pair(const bfloat16* p) { return {H::bcast_bf16_pair(p), H::bcast_bf16_pair(p)}; }
  static F bcast_bf16_lone(const bfloat16* p) { return {H::bcast_bf16_lone(p), H::bcast_bf16_lone(p)}; }
  static F bf16_low(F pair) { return {H::bf16_low(pair.lo), H::bf16_low(pair.hi)}; }
  static F bf16_high(F pair) { return {H::bf16_high(pair.lo), H::bf16_high(pair.hi)}; }
  static F zero() { return {H::zero(), H::zero()}; }
  static F add(F a, F b) { return {H::add(a.lo, b.lo), H::add(a.hi, b.hi)}; }
  static F sub(F a, F b) { return {H::sub(a.lo, b.lo), H::sub(a.hi, b.hi)}; }
  static F mul(F a, F b) { return {H::mul(a.lo, b.lo), H::mul(a.hi, b.hi)}; }
  static F div(F a, F b) { return {H::div(a.lo, b.lo), H::div(a.hi, b.hi)}; }
  static F fmadd(F a, F b, F c) { return {H::fmadd(a.lo, b.lo, c.lo), H::fmadd(a.hi, b.hi, c.hi)}; }
  static F fnmadd(F a, F b, F c) { return {H::fnmadd(a.lo, b.lo, c.lo), H::fnmadd(a.hi, b.hi, c.hi)}; }
  static F max(F a, F b) { return {H::max(a.lo, b.lo), H::max(a.hi, b.hi)}; }
  static F round_nearest(F x) { return {H::round_nearest(x.lo), H::round_nearest(x.hi)}; }
  static I to_int(F x) { return {H::to_int(x.lo), H::to_int(x.hi)}; }
  static I srai1(I n) { return {H::srai1(n.lo), H::srai1(n.hi)}; }
  static I isub(I a, I b) { return {H::isub(a.lo, b.lo), H::isub(a.hi, b.hi)}; }
  static F pow2(I n) { return {H::pow2(n.lo), H::pow2(n.hi)}; }
  static I iota(std::int32_t start) { return {H::iota(start), H::iota(start + std::int32_t(kHalf))}; }
  static I iset1(std::int32_t x) { return {H::iset1(x), H::iset1(x)}; }
  static M int_gt(I a, I b) { return {H::int_gt(a.lo, b.lo), H::int_gt(a.hi, b.hi)}; }
  static M lt(F a, F b) { return {H::lt(a.lo, b.lo), H::lt(a.hi, b.hi)}; }
  static M gt(F a, F b) { return {H::gt(a.lo, b.lo), H::gt(a.hi, b.hi)}; }
  static M is_nan(F a) { return {H::is_nan(a.lo), H::is_nan(a.hi)}; }
  static M ne(F a, F b) { return {H::ne(a.lo, b.lo), H::ne(a.hi, b.hi)}; }
  static M and_mask(M a, M b) { return {H::and_mask(a.lo, b.lo), H::and_mask(a.hi, b.hi)}; }
  static F blend(M m, F a, F b) { return {H::blend(m.lo, a.lo, b.lo), H::blend(m.hi, a.hi, b.hi)}; }
  static M from_bits(std::uint32_t bits) { return {H::from_bits(bits & 0xffu), H::from_bits((bits >> 8) & 0xffu)}; }
  static bool any(M m) { return H::any(m.lo) || H::any(m.hi); }
  static M outside(F x, float bound) { return {H::outside(x.lo, bound), H::outside(x.hi, bound)}; }
  template <int kImm>
  static F shuffle(F a, F b) { return {H::shuffle<kImm>(a.lo, b.lo), H::shuffle<kImm>(a.hi, b.hi)}; }
  static F unpacklo(F a, F b) { return {H::unpacklo(a.lo, b.lo), H::unpacklo(a.hi, b.hi)}; }
  static F unpackhi(F a, F b) { return {H::unpackhi(a.lo, b.lo), H::unpackhi(a.hi, b.hi)}; }
  // Vec512::fold128: [lanes 0+1, 2+3 of a] in the low half, the same of b in the high.
  static F fold128(F a, F b) { return {H::fold128(a.lo, a.hi), H::fold128(b.lo, b.hi)}; }
  // Vec512::transpose: four of Vec256's 8 x 8 blocks, each to its mirror place.
  static void transpose(const float* src, std::int64_t src_stride, float* dst, std::int64_t dst_stride) {
    for (std::int64_t i = 0; i < 2; ++i)
      for (std::int64_t j = 0; j < 2; ++j)
        H::transpose(src + i * kHalf * src_stride + j * kHalf, src_stride, dst + j * kHalf * dst_stride + i * kHalf,
                     dst_stride);
  }
  // Vec512::untranspose: element i takes element 4 (i mod 4) + i / 4.
  static F untranspose(F a) {
    alignas(32) float in[16], out[16];
    store(in, a);
    for (int i = 0; i < 16; ++i) out[i] = in[4 * (i % 4) + i / 4];
    return load(out);
  }
};

// The AVX512_BF16 traits (simd/vec_avx512_bf16.hpp) emulated the same way:
// VDPBF16PS as two FMAs, the odd halves then the even ones, which give the
// instruction's bits inside FtzDazScope (where the kernels call it).
struct Vec512Bf16Emulated : Vec512Emulated {
  static constexpr bool kBf16Dot = true;
  static F dot_bf16(F acc, F a, F b) {
    return fmadd(bf16_low(a), bf16_low(b), fmadd(bf16_high(a), bf16_high(b), acc));
  }
};

}  // namespace
}  // namespace fattn::simd
