// fattn's exp2/exp against double precision over every f32 in their range.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>

#include "../cpp/src/numerics/exp.hpp"

using namespace fattn::simd;

namespace {

double ulps_off(float got, double want) {
  if (want == 0.0) return got == 0.0f ? 0.0 : 1e9;
  int e;
  std::frexp(want, &e);
  const double ulp = std::ldexp(1.0, std::max(e - 1, -126) - 23);
  return std::fabs(double(got) - want) / ulp;
}

// Every `stride`-th f32 magnitude in [lo, hi] (> 0), each with both signs
// (a sign only while x stays inside [neg_limit, pos_limit]).
template <class F, class G>
double worst_ulps(F f, G exact, float lo, float hi, std::uint32_t stride, float neg_limit, float pos_limit) {
  double worst = 0;
  std::uint32_t from, to;
  std::memcpy(&from, &lo, 4);
  std::memcpy(&to, &hi, 4);
  for (std::uint64_t u = from; u <= to; u += stride) {
    float m;
    const std::uint32_t bits = std::uint32_t(u);
    std::memcpy(&m, &bits, 4);
    for (float x : {m, -m}) {
      if (x < neg_limit || x > pos_limit) continue;
      const double want = exact(double(x));
      if (want < 0x1p-126) continue;  // the subnormal range: checked separately (absolute)
      worst = std::max(worst, ulps_off(f(x), want));
    }
  }
  return worst;
}

}  // namespace

// Every 17th magnitude over the whole range (about 130 million values) and
// every pattern in [1/4, 4], where rounding to the nearest integer moves;
// arguments in [lo, hi] (the normal-result range).
template <class F, class G>
void expect_within_two_ulp(F f, G exact, float lo, float hi) {
  const double worst = std::max(worst_ulps(f, exact, 0x1p-149f, hi, 17, lo, hi),
                                worst_ulps(f, exact, 0.25f, 4.0f, 1, lo, hi));
  EXPECT_LE(worst, 2.0);
  std::printf("worst error: %.3f ulp\n", worst);
}

TEST(Exp, Exp2WithinTwoUlpEverywhereNormal) {
  expect_within_two_ulp(exp2_f32, [](double x) { return std::exp2(x); }, -126.0f, 127.99f);
}

TEST(Exp, ExpWithinTwoUlpEverywhereNormal) {
  expect_within_two_ulp(exp_f32, [](double x) { return std::exp(x); }, -87.3f, 88.72f);
}

TEST(Exp, SpecialValues) {
  EXPECT_EQ(exp2_f32(0.0f), 1.0f);
  EXPECT_EQ(exp2_f32(-0.0f), 1.0f);
  EXPECT_EQ(exp_f32(0.0f), 1.0f);
  EXPECT_EQ(exp2_f32(-INFINITY), 0.0f);
  EXPECT_EQ(exp_f32(-INFINITY), 0.0f);
  EXPECT_EQ(exp2_f32(INFINITY), INFINITY);
  EXPECT_EQ(exp_f32(1000.0f), INFINITY);
  EXPECT_TRUE(std::isnan(exp2_f32(NAN)));
  EXPECT_TRUE(std::isnan(exp_f32(NAN)));
  EXPECT_EQ(exp2_f32(-3.0f), 0.125f);
  EXPECT_EQ(exp2_f32(10.0f), 1024.0f);
  EXPECT_EQ(exp2_f32(127.0f), 0x1p127f);
  EXPECT_EQ(exp2_f32(-149.0f), 0x1p-149f);  // gradual underflow, exact for an integer
  EXPECT_EQ(exp2_f32(-151.0f), 0.0f);
  EXPECT_LT(exp_f32(-103.0f), 1e-44f);
  // Subnormal results stay within a unit of the smallest subnormal.
  for (float x = -149.5f; x < -126.0f; x += 0.37f)
    EXPECT_LE(std::fabs(double(exp2_f32(x)) - std::exp2(double(x))), 0x1p-149) << x;
}

#include "../cpp/src/numerics/tanh.hpp"

// The softcap's tanh: every 17th magnitude and every pattern around the
// branch point; the result is never subnormal for a normal argument.
TEST(Tanh, WithinTwoUlpEverywhere) {
  auto exact = [](double x) { return std::tanh(x); };
  double worst = std::max(worst_ulps(tanh_f32, exact, 0x1p-126f, 100.0f, 17, -100.0f, 100.0f),
                          worst_ulps(tanh_f32, exact, 0.5f, 0.75f, 1, -1.0f, 1.0f));
  EXPECT_LE(worst, 2.0);
  std::printf("worst error: %.3f ulp\n", worst);
}

TEST(Tanh, SpecialValues) {
  EXPECT_EQ(tanh_f32(0.0f), 0.0f);
  EXPECT_TRUE(std::signbit(tanh_f32(-0.0f)));
  EXPECT_EQ(tanh_f32(INFINITY), 1.0f);
  EXPECT_EQ(tanh_f32(-INFINITY), -1.0f);
  EXPECT_EQ(tanh_f32(50.0f), 1.0f);
  EXPECT_EQ(tanh_f32(-50.0f), -1.0f);
  EXPECT_TRUE(std::isnan(tanh_f32(NAN)));
  EXPECT_EQ(tanh_f32(0x1p-140f), 0x1p-140f);  // tiny arguments come back unchanged
  for (float x : {0.1f, 0.6f, 0.7f, 3.0f}) EXPECT_EQ(tanh_f32(-x), -tanh_f32(x));  // odd
}
