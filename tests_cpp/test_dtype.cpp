// The dtype core: hand-checked values, every 16-bit pattern, and (where the
// CPU has F16C) every f32 pattern against the hardware's IEEE conversion.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <limits>

#include "fattn/dtype.hpp"
#include "runtime/cpu_features.hpp"

// Only with the vector paths (FATTN_SIMD): without them nothing includes <immintrin.h>.
#if defined(__x86_64__) && defined(FATTN_SIMD)
#include <immintrin.h>
#endif

using namespace fattn;

namespace {
bool is_nan16_f16(std::uint16_t h) { return (h & 0x7c00) == 0x7c00 && (h & 0x3ff) != 0; }
bool is_nan16_bf16(std::uint16_t h) { return (h & 0x7f80) == 0x7f80 && (h & 0x7f) != 0; }
const float kInf = std::numeric_limits<float>::infinity();
}  // namespace

TEST(DtypeBf16, HandCheckedValues) {
  EXPECT_EQ(f32_to_bf16(1.0f), 0x3f80);
  EXPECT_EQ(f32_to_bf16(-2.0f), 0xc000);
  EXPECT_EQ(f32_to_bf16(0.0f), 0x0000);
  EXPECT_EQ(f32_to_bf16(-0.0f), 0x8000);
  EXPECT_EQ(f32_to_bf16(kInf), 0x7f80);
  EXPECT_EQ(f32_to_bf16(-kInf), 0xff80);
  // 1 + 2^-8 is halfway between 1 and 1 + 2^-7: ties to even (1.0).
  EXPECT_EQ(f32_to_bf16(f32_from_bits(0x3f808000)), 0x3f80);
  // 1 + 3*2^-8 is halfway between 1 + 2^-7 (odd) and 1 + 2^-6: rounds up to even.
  EXPECT_EQ(f32_to_bf16(f32_from_bits(0x3f818000)), 0x3f82);
  EXPECT_EQ(f32_to_bf16(f32_from_bits(0x3f808001)), 0x3f81);  // just above the tie
  // The largest finite f32 rounds to bf16 infinity; the largest bf16 stays.
  EXPECT_EQ(f32_to_bf16(std::numeric_limits<float>::max()), 0x7f80);
  EXPECT_EQ(f32_to_bf16(f32_from_bits(0x7f7f0000)), 0x7f7f);
  // Subnormals round like everything else.
  EXPECT_EQ(f32_to_bf16(f32_from_bits(0x00000001)), 0x0000);
  EXPECT_EQ(f32_to_bf16(f32_from_bits(0x00018000)), 0x0002);
  EXPECT_EQ(bf16_to_f32(0x0001), f32_from_bits(0x00010000));
  EXPECT_EQ(bf16_to_f32(0x4049), 3.140625f);
  // NaN stays NaN, quiet, sign kept.
  EXPECT_TRUE(is_nan16_bf16(f32_to_bf16(std::nanf(""))));
  EXPECT_TRUE(is_nan16_bf16(f32_to_bf16(f32_from_bits(0x7f800001))));  // signalling, payload only in low bits
  EXPECT_EQ(f32_to_bf16(-std::nanf("")) & 0x8000, 0x8000);
  EXPECT_TRUE(std::isnan(bf16_to_f32(0x7fc0)));
}

TEST(DtypeF16, HandCheckedValues) {
  EXPECT_EQ(f32_to_f16(1.0f), 0x3c00);
  EXPECT_EQ(f32_to_f16(-2.0f), 0xc000);
  EXPECT_EQ(f32_to_f16(65504.0f), 0x7bff);
  EXPECT_EQ(f32_to_f16(65519.99f), 0x7bff);
  EXPECT_EQ(f32_to_f16(65520.0f), 0x7c00);  // the tie above the largest half rounds to inf
  EXPECT_EQ(f32_to_f16(-1e6f), 0xfc00);
  EXPECT_EQ(f32_to_f16(std::ldexp(1.0f, -14)), 0x0400);   // smallest normal
  EXPECT_EQ(f32_to_f16(std::ldexp(1.0f, -24)), 0x0001);   // smallest subnormal
  EXPECT_EQ(f32_to_f16(std::ldexp(1.0f, -25)), 0x0000);   // tie between 0 and 2^-24: even
  EXPECT_EQ(f32_to_f16(std::ldexp(1.5f, -25)), 0x0001);   // above the tie
  EXPECT_EQ(f32_to_f16(std::ldexp(3.0f, -25)), 0x0002);   // 1.5 ulps: tie, to even (2)
  EXPECT_EQ(f32_to_f16(std::ldexp(1.0f, -30)), 0x0000);
  EXPECT_EQ(f32_to_f16(-std::ldexp(1.0f, -30)), 0x8000);
  EXPECT_EQ(f16_to_f32(0x0001), std::ldexp(1.0f, -24));
  EXPECT_EQ(f16_to_f32(0x03ff), std::ldexp(1023.0f, -24));
  EXPECT_EQ(f16_to_f32(0x7bff), 65504.0f);
  EXPECT_EQ(f16_to_f32(0xfc00), -kInf);
  EXPECT_EQ(f16_to_f32(0x3555), 0.333251953125f);
  EXPECT_TRUE(is_nan16_f16(f32_to_f16(std::nanf(""))));
  EXPECT_TRUE(is_nan16_f16(f32_to_f16(f32_from_bits(0x7f800001))));
  EXPECT_TRUE(std::isnan(f16_to_f32(0x7e00)));
}

// Widening is exact, so narrowing a widened value must give the pattern back
// (NaNs come back as NaNs). Every one of the 65,536 patterns, both types.
TEST(DtypeRoundTrip, EverySixteenBitPattern) {
  for (std::uint32_t p = 0; p < 65536; ++p) {
    const auto h = std::uint16_t(p);
    if (is_nan16_bf16(h)) {
      EXPECT_TRUE(std::isnan(bf16_to_f32(h)));
      EXPECT_TRUE(is_nan16_bf16(f32_to_bf16(bf16_to_f32(h))));
    } else {
      ASSERT_EQ(f32_to_bf16(bf16_to_f32(h)), h) << "bf16 pattern " << p;
    }
    if (is_nan16_f16(h)) {
      EXPECT_TRUE(std::isnan(f16_to_f32(h)));
      EXPECT_TRUE(is_nan16_f16(f32_to_f16(f16_to_f32(h))));
    } else {
      ASSERT_EQ(f32_to_f16(f16_to_f32(h)), h) << "f16 pattern " << p;
    }
  }
}

// Narrowing an f32 to bf16 rounds to the nearest of the two bf16 neighbours,
// ties to even: check that definition directly in double arithmetic on
// every f32 whose low half is one of the interesting cases.
TEST(DtypeBf16, RoundsToNearestEvenAroundEveryPattern) {
  const std::uint32_t lows[] = {0x0000, 0x0001, 0x7fff, 0x8000, 0x8001, 0xffff, 0x1234, 0xc000};
  for (std::uint32_t hi = 0; hi < 65536; ++hi) {
    for (std::uint32_t lo : lows) {
      const float x = f32_from_bits(hi << 16 | lo);
      if (std::isnan(x) || std::isinf(x)) continue;
      const std::uint16_t got = f32_to_bf16(x);
      const double down = bf16_to_f32(std::uint16_t(hi));  // truncation: toward zero
      const std::uint16_t up_bits = std::uint16_t(hi + 1);
      const double up = (hi & 0x7fff) == 0x7f7f ? std::copysign(INFINITY, x) : bf16_to_f32(up_bits);
      const double dx = std::fabs(double(x) - down), du = std::fabs(double(x) - (std::isinf(up) ? std::copysign(std::ldexp(1.0, 128), x) : up));
      std::uint16_t want;
      if (dx < du) want = std::uint16_t(hi);
      else if (du < dx) want = up_bits;
      else want = (hi & 1) ? up_bits : std::uint16_t(hi);
      ASSERT_EQ(got, want) << "f32 bits " << std::hex << (hi << 16 | lo);
    }
  }
}

#if defined(__x86_64__) && defined(FATTN_SIMD)
__attribute__((target("f16c"))) static std::uint16_t hw_f32_to_f16(float x) {
  return std::uint16_t(_cvtss_sh(x, _MM_FROUND_TO_NEAREST_INT));
}
__attribute__((target("f16c"))) static float hw_f16_to_f32(std::uint16_t h) { return _cvtsh_ss(h); }

// Every one of the 2^32 f32 patterns against the CPU's IEEE conversion.
TEST(DtypeF16, EveryF32PatternMatchesF16C) {
  if (!fattn::simd::cpu_features().f16c) GTEST_SKIP() << "CPU has no F16C";
  std::uint64_t mismatches = 0;
  for (std::uint64_t u = 0; u <= 0xffffffffull; ++u) {
    const float x = f32_from_bits(std::uint32_t(u));
    const std::uint16_t got = f32_to_f16(x), want = hw_f32_to_f16(x);
    if (got != want && !(is_nan16_f16(got) && is_nan16_f16(want))) {
      if (++mismatches < 5) ADD_FAILURE() << "f32 bits " << std::hex << u << ": got " << got << " want " << want;
    }
  }
  EXPECT_EQ(mismatches, 0u);
  for (std::uint32_t p = 0; p < 65536; ++p) {
    const float got = f16_to_f32(std::uint16_t(p)), want = hw_f16_to_f32(std::uint16_t(p));
    if (std::isnan(want)) EXPECT_TRUE(std::isnan(got));
    else ASSERT_EQ(f32_bits(got), f32_bits(want)) << "f16 pattern " << p;
  }
}
#endif

TEST(DtypeBulk, ConvertsArraysBothWays) {
  const float src[4] = {1.0f, -0.5f, 3.140625f, 65504.0f};
  std::uint16_t h[4];
  float back[4];
  for (DType dt : {DType::f16, DType::bf16}) {
    from_f32(dt, src, h, 4);
    to_f32(dt, h, back, 4);
    for (int i = 0; i < 3; ++i) EXPECT_EQ(back[i], src[i]) << dtype_name(dt);
  }
  EXPECT_EQ(dtype_size(DType::f32), 4);
  EXPECT_EQ(dtype_size(DType::bf16), 2);
  EXPECT_EQ(dtype_name(DType::f16), "float16");
}
