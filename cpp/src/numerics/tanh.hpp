#pragma once
// fattn's own tanh in f32, for the softcap (score <- cap * tanh(score / cap)).
// Like numerics/exp.hpp, a fixed sequence of IEEE operations, so that the
// scalar model and each SIMD path (simd/vexp.hpp: tanh_v, the same steps
// lane by lane) agree to the bit, which the C library's tanhf cannot promise.
//
// |x| >= 0.625: t = 1 - 2 / (e^(2|x|) + 1) with fattn's exp, the sign of x
// put back (e^(2|x|) overflows to +inf from |x| ~ 44.4 on, and t is then
// exactly 1). |x| < 0.625: the odd polynomial x + x * z * P(z), z = x^2, P
// of degree 4 (Horner with fused multiply-adds; the coefficients are the
// Cephes library's published tanhf minimax fit); below 2^-12 tanh(x) is x. Within 2 ulp of the true
// value (1.36 ulp at worst on tests_cpp/test_exp.cpp's sweep); tanh(+-0) = +-0,
// tanh(+-inf) = +-1, NaN stays NaN.
#include <cmath>

#include "numerics/exp.hpp"

namespace fattn::simd {

struct TanhConstants {
  static constexpr float split = 0.625f;
  static constexpr float below_split = 0.62499994f;  // the float just below: a > it iff a >= split
  static constexpr float tiny = 0x1p-12f;  // below: x^3/3 is under half an ulp of x
  // P(z) = c[0] + z*(c[1] + z*(c[2] + z*(c[3] + z*c[4]))).
  static constexpr float c[5] = {-3.33332819422e-1f, 1.33314422036e-1f, -5.37397155531e-2f, 2.06390887954e-2f,
                                 -5.70498872745e-3f};
};

inline float tanh_f32(float x) {
  using C = TanhConstants;
  const float a = x < 0.0f ? -x : x;
  if (a >= C::split) {
    const float e = exp_f32(a + a);
    const float t = 1.0f - 2.0f / (e + 1.0f);
    return x < 0.0f ? -t : t;
  }
  if (a < C::tiny) return x;  // tanh(x) rounds to x; keeps the sign of -0
  const float z = x * x;
  float p = C::c[4];
  for (int i = 3; i >= 0; --i) p = std::fma(p, z, C::c[i]);
  return std::fma(p * z, x, x);
}

}  // namespace fattn::simd
