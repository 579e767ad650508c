#pragma once
// fattn's own exp2 and exp in f32. The kernels need one exp whose every bit
// is defined by a fixed sequence of IEEE operations, so that the scalar
// model and each SIMD path (which repeat the same operations lane by lane)
// agree to the bit; the C library's expf cannot promise that.
//
// exp2(x): n = rint(x), f = x - n (exact), p = 2^f by a degree-6 polynomial
// (Horner with fused multiply-adds), result = (p * 2^(n>>1)) * 2^(n - (n>>1))
// so that gradual underflow rounds once. exp(x): n = rint(x*log2e),
// r = x - n*ln2 in two fused steps (Cody-Waite), p = e^r, same scaling.
// Both are within 2 ulp of the true value (tests_cpp/test_exp.cpp sweeps
// every f32); 0 below 2^-150, +inf above 2^128, NaN stays NaN.
#include <cmath>
#include <cstdint>
#include <cstring>

namespace fattn::simd {

struct ExpConstants {
  // 2^f on [-0.5, 0.5]: 1 + f*(c1 + f*(c2 + ...)).
  static constexpr float exp2_c[6] = {0.6931471824645996f, 0.24022647738456726f, 0.055503323674201965f,
                                      0.00961843691766262f, 0.0013398875016719103f, 0.00015353361959569156f};
  // e^r on [-ln2/2, ln2/2].
  static constexpr float exp_c[6] = {1.0f, 0.4999999403953552f, 0.16666431725025177f,
                                     0.04166800156235695f, 0.00837415549904108f, 0.0013843653723597527f};
  static constexpr float log2e = 1.44269504088896341f;
  static constexpr float ln2_hi = 0.693147182464599609375f;        // f32(ln 2)
  static constexpr float ln2_lo = -1.904654323148236e-09f;          // ln 2 - ln2_hi
  static constexpr float exp2_min = -150.0f, exp2_max = 128.0f;     // 0 below, inf above
  static constexpr float exp_min = -104.0f, exp_max = 88.72283935546875f;
};

inline float pow2_int(std::int32_t n) {  // 2^n for n in [-126, 127]
  const std::uint32_t bits = std::uint32_t(n + 127) << 23;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

// p * 2^n with n split in two halves, each a normal power of two.
inline float scale_by_pow2(float p, float n_float) {
  const std::int32_t n = std::int32_t(n_float);
  const std::int32_t n1 = n >> 1;  // arithmetic shift: floor(n / 2)
  return (p * pow2_int(n1)) * pow2_int(n - n1);
}

inline float exp2_f32(float x) {
  using C = ExpConstants;
  if (x < C::exp2_min) return 0.0f;
  if (x > C::exp2_max) return INFINITY;
  if (std::isnan(x)) return x;
  const float n = std::nearbyint(x);
  const float f = x - n;
  float p = C::exp2_c[5];
  for (int i = 4; i >= 0; --i) p = std::fma(p, f, C::exp2_c[i]);
  p = std::fma(p, f, 1.0f);
  return scale_by_pow2(p, n);
}

inline float exp_f32(float x) {
  using C = ExpConstants;
  if (x < C::exp_min) return 0.0f;
  if (x > C::exp_max) return INFINITY;
  if (std::isnan(x)) return x;
  const float n = std::nearbyint(x * C::log2e);
  float r = std::fma(-n, C::ln2_hi, x);
  r = std::fma(-n, C::ln2_lo, r);
  float p = C::exp_c[5];
  for (int i = 4; i >= 0; --i) p = std::fma(p, r, C::exp_c[i]);
  p = std::fma(p, r, 1.0f);
  return scale_by_pow2(p, n);
}

}  // namespace fattn::simd
