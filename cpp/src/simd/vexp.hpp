#pragma once
// simd/exp.hpp's exp2 and exp, lane by lane, for any vector traits V
// (Vec512, Vec256): the same operations in the same order, hence the same
// bits. Include inside the target region of V (after numerics/exp.hpp and
// numerics/tanh.hpp, which must be compiled outside it).
#include "numerics/exp.hpp"
#include "numerics/tanh.hpp"

namespace fattn::simd {
namespace {  // internal linkage: simd/target.hpp

// p * 2^n (n integral, p in [0.5, 2], the result's n within the callers'
// ranges): two multiplies by normal powers of two, the first exact, so the
// product is rounded once; or, where V has it (V::kScalef, AVX-512's
// VSCALEFPS), one instruction that rounds the same exact product once —
// the same bits, in one operation instead of nine.
template <class V>
inline typename V::F scale_by_pow2_v(typename V::F p, typename V::F n_float) {
  if constexpr (V::kScalef) return V::scalef(p, n_float);
  const typename V::I n = V::to_int(n_float);
  const typename V::I n1 = V::srai1(n);
  return V::mul(V::mul(p, V::pow2(n1)), V::pow2(V::isub(n, n1)));
}

// x below lo gives 0, above hi +inf, NaN itself; the usual vector, every
// lane within min(-lo, hi) of 0, needs none of the three blends.
template <class V>
inline typename V::F exp_special_cases(typename V::F x, typename V::F r, float lo, float hi) {
  if (!V::any(V::outside(x, -lo < hi ? -lo : hi))) return r;
  r = V::blend(V::lt(x, V::set1(lo)), r, V::zero());
  r = V::blend(V::gt(x, V::set1(hi)), r, V::set1(INFINITY));
  return V::blend(V::is_nan(x), r, x);
}

template <class V>
inline typename V::F exp2_v(typename V::F x) {
  using C = ExpConstants;
  const typename V::F n = V::round_nearest(x);
  const typename V::F f = V::sub(x, n);
  typename V::F p = V::set1(C::exp2_c[5]);
  for (int i = 4; i >= 0; --i) p = V::fmadd(p, f, V::set1(C::exp2_c[i]));
  p = V::fmadd(p, f, V::set1(1.0f));
  return exp_special_cases<V>(x, scale_by_pow2_v<V>(p, n), C::exp2_min, C::exp2_max);
}

template <class V>
inline typename V::F exp_v(typename V::F x) {
  using C = ExpConstants;
  const typename V::F n = V::round_nearest(V::mul(x, V::set1(C::log2e)));
  typename V::F r = V::fnmadd(n, V::set1(C::ln2_hi), x);
  r = V::fnmadd(n, V::set1(C::ln2_lo), r);
  typename V::F p = V::set1(C::exp_c[5]);
  for (int i = 4; i >= 0; --i) p = V::fmadd(p, r, V::set1(C::exp_c[i]));
  p = V::fmadd(p, r, V::set1(1.0f));
  return exp_special_cases<V>(x, scale_by_pow2_v<V>(p, n), C::exp_min, C::exp_max);
}


// numerics/tanh.hpp's tanh, lane by lane: each lane takes its own branch's
// result; a branch no lane takes is not computed (scores under a softcap
// mostly sit on the polynomial's side, and the exp + divide was ~10% of a
// bf16 prefill). A NaN lane takes neither and keeps x's NaN.
template <class V>
inline typename V::F tanh_v(typename V::F x) {
  using C = TanhConstants;
  using F = typename V::F;
  const auto negative = V::lt(x, V::zero());
  const F a = V::blend(negative, x, V::sub(V::zero(), x));
  const auto small_lanes = V::lt(a, V::set1(C::split));
  F large = x, small = x;
  if (V::any(V::gt(a, V::set1(C::below_split)))) {  // some lane at or above the split
    const F e = exp_v<V>(V::add(a, a));
    const F t = V::sub(V::set1(1.0f), V::div(V::set1(2.0f), V::add(e, V::set1(1.0f))));
    large = V::blend(negative, t, V::sub(V::zero(), t));
  }
  if (V::any(small_lanes)) {
    const F z = V::mul(x, x);
    F p = V::set1(C::c[4]);
    for (int i = 3; i >= 0; --i) p = V::fmadd(p, z, V::set1(C::c[i]));
    small = V::fmadd(V::mul(p, z), x, x);
  }
  const F r = V::blend(small_lanes, large, small);
  return V::blend(V::lt(a, V::set1(C::tiny)), r, x);
}

}  // namespace
}  // namespace fattn::simd
