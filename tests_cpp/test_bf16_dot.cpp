// The scalar model of AVX512_BF16's dot product (numerics/bf16_dot.hpp)
// against the instruction, lane by lane, on random values over the whole
// exponent range (denormals, underflowing products, overflow, zeros of both
// signs included). Skipped where the CPU has no AVX512_BF16; the model's own
// steps are checked everywhere.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "fattn/dtype.hpp"
#include "numerics/bf16_dot.hpp"
#include "runtime/cpu_features.hpp"
#if defined(FATTN_SIMD) && defined(__x86_64__)
#include "simd/ftz_scope.hpp"
#endif

#if defined(FATTN_SIMD) && defined(__x86_64__)
#include <immintrin.h>
#define FATTN_TEST_BF16_DOT 1
#else
#define FATTN_TEST_BF16_DOT 0
#endif

using namespace fattn;

namespace {

std::uint32_t bits_of(float x) {
  std::uint32_t b;
  std::memcpy(&b, &x, 4);
  return b;
}

// A bf16 with a random sign, a random mantissa and an exponent field drawn
// from the whole range, weighted towards its ends.
std::uint16_t random_bf16(std::mt19937& rng) {
  const std::uint32_t sign = rng() & 1u, mant = rng() & 0x7fu;
  std::uint32_t exp;
  switch (rng() % 8) {
    case 0: exp = 0; break;                       // zero or denormal
    case 1: exp = 1 + rng() % 40; break;          // tiny: products underflow
    case 2: exp = 255 - 1 - rng() % 40; break;    // huge: products overflow
    default: exp = 127 - 20 + rng() % 40; break;  // ordinary
  }
  return std::uint16_t(sign << 15 | exp << 7 | mant);
}

float random_acc(std::mt19937& rng) {
  switch (rng() % 6) {
    case 0: return 0.0f;
    case 1: return -0.0f;
    case 2: {  // a denormal
      const std::uint32_t b = (rng() & 0x807fffffu);
      float x;
      std::memcpy(&x, &b, 4);
      return x;
    }
    case 3: return std::ldexp(float(rng() % 1000) - 500.0f, -140);  // near the denormal range
    default: return std::ldexp(float(int(rng() % 20001) - 10000), int(rng() % 60) - 30);
  }
}

// A lane whose exact sum lies just below 2^-126: acc = ±2^-126 and one
// product ∓f·2^e with e around -151, where gradual underflow and x86's
// tininess rule part ways (see numerics/bf16_dot.hpp).
void edge_lane(std::mt19937& rng, float& acc, std::uint16_t a[2], std::uint16_t b[2]) {
  const float sign = (rng() & 1u) ? -1.0f : 1.0f;
  acc = sign * std::ldexp(1.0f, -126);
  const int e = -153 + int(rng() % 5);
  const float f = 1.0f + float(rng() % 128) / 128.0f;
  const int ea = e / 2, eb = e - ea;
  a[0] = a[1] = b[0] = b[1] = 0;
  const int odd = int(rng() & 1u);  // the product in the odd or the even slot
  a[odd] = f32_to_bf16(-sign * std::ldexp(f, ea));
  b[odd] = f32_to_bf16(std::ldexp(1.0f, eb));
}

#if FATTN_TEST_BF16_DOT
// One step of the FMA paths: the two FMAs under FtzDazScope.
__attribute__((target("avx2,fma"))) float fma_paths(float acc, const std::uint16_t a[2], const std::uint16_t b[2]) {
  simd::FtzDazScope scope;
  __m128 c = _mm_set_ss(acc);
  asm volatile("" : "+x"(c));
  c = _mm_fmadd_ss(_mm_set_ss(bf16_to_f32(a[1])), _mm_set_ss(bf16_to_f32(b[1])), c);
  c = _mm_fmadd_ss(_mm_set_ss(bf16_to_f32(a[0])), _mm_set_ss(bf16_to_f32(b[0])), c);
  asm volatile("" : "+x"(c));
  return _mm_cvtss_f32(c);
}

__attribute__((target("avx512f,avx512bf16"))) void hardware(const float* acc, const std::uint16_t* a,
                                                             const std::uint16_t* b, float* out) {
  const __m512 r = _mm512_dpbf16_ps(_mm512_loadu_ps(acc), (__m512bh)_mm512_loadu_si512(a),
                                    (__m512bh)_mm512_loadu_si512(b));
  _mm512_storeu_ps(out, r);
}
#endif

}  // namespace

TEST(Bf16DotModel, StepsAsStated) {
  // The odd pair is added first, each sum rounded: with acc = 1 and products
  // 2^-24 and 2^-24, each sum rounds back to 1 (ties to even); the two
  // products summed first would have given 1 + 2^-23.
  const std::uint16_t tiny = f32_to_bf16(std::ldexp(1.0f, -12));
  const std::uint16_t a[2] = {tiny, tiny}, b[2] = {tiny, tiny};
  EXPECT_EQ(numerics::bf16_dot_pair(1.0f, a, b), 1.0f);
  // A product below the normal range is not flushed before the add: the
  // smallest normal plus 2^-127 is 1.5 * 2^-126 (a flushed product: 2^-126).
  const std::uint16_t one = f32_to_bf16(1.0f), zero = 0;
  const std::uint16_t half_min[2] = {zero, f32_to_bf16(std::ldexp(1.0f, -127) * std::ldexp(1.0f, 60))};
  const std::uint16_t scale[2] = {zero, f32_to_bf16(std::ldexp(1.0f, -60))};
  EXPECT_EQ(numerics::bf16_dot_pair(std::ldexp(1.0f, -126), half_min, scale), std::ldexp(1.5f, -126));
  // ... but a denormal sum is flushed, keeping its sign (the tiny product in
  // the even pair: the odd one, 0 * 0, would turn -0 back into +0).
  const std::uint16_t neg[2] = {f32_to_bf16(-std::ldexp(1.0f, -70)), zero};
  const std::uint16_t pos[2] = {f32_to_bf16(std::ldexp(1.0f, -70)), zero};
  EXPECT_EQ(bits_of(numerics::bf16_dot_pair(0.0f, neg, pos)), bits_of(-0.0f));
  // Denormal inputs read as zero: a bf16 denormal times 1 ...
  const std::uint16_t d[2] = {0x0001, zero}, e[2] = {one, zero};
  EXPECT_EQ(bits_of(numerics::bf16_dot_pair(0.0f, d, e)), bits_of(0.0f));
  // ... and a denormal accumulator: 2^-127 + 2^-126 gives 2^-126, not 1.5 * 2^-126.
  const std::uint16_t r[2] = {f32_to_bf16(std::ldexp(1.0f, -63)), zero};
  EXPECT_EQ(numerics::bf16_dot_pair(std::ldexp(1.0f, -127), r, r), std::ldexp(1.0f, -126));
}

TEST(Bf16DotModel, MatchesTheInstruction) {
#if FATTN_TEST_BF16_DOT
  if (!simd::cpu_features().avx512_bf16) GTEST_SKIP() << "this CPU has no AVX512_BF16";
  std::mt19937 rng(20261206);
  std::int64_t lanes = 0, mismatches = 0;
  for (int round = 0; round < 20000; ++round) {
    float acc[16], got[16];
    std::uint16_t a[32], b[32];
    for (int i = 0; i < 16; ++i) acc[i] = random_acc(rng);
    for (int i = 0; i < 32; ++i) a[i] = random_bf16(rng), b[i] = random_bf16(rng);
    if (round % 4 == 0)
      for (int i = 0; i < 16; i += 3) edge_lane(rng, acc[i], a + 2 * i, b + 2 * i);
    hardware(acc, a, b, got);
    for (int i = 0; i < 16; ++i, ++lanes) {
      const float want = numerics::bf16_dot_pair(acc[i], a + 2 * i, b + 2 * i);
      const bool same = bits_of(got[i]) == bits_of(want) || (std::isnan(got[i]) && std::isnan(want));
      if (!same && ++mismatches <= 5)
        ADD_FAILURE() << "lane " << lanes << ": acc " << acc[i] << " a " << a[2 * i] << "," << a[2 * i + 1]
                      << " b " << b[2 * i] << "," << b[2 * i + 1] << ": instruction " << got[i] << " (0x" << std::hex
                      << bits_of(got[i]) << "), model " << want << " (0x" << bits_of(want) << ")" << std::dec;
    }
  }
  EXPECT_EQ(mismatches, 0) << "of " << lanes << " lanes";
#else
  GTEST_SKIP() << "built without the vector paths";
#endif
}

// The FMA paths' form of a step (two FMAs under FtzDazScope, the odd pair
// first) against the model, on the same lanes: on every CPU with AVX2.
TEST(Bf16DotModel, FmaPathsUnderFtzDazMatchTheModel) {
#if FATTN_TEST_BF16_DOT
  if (!simd::cpu_features().has_all("avx2,fma")) GTEST_SKIP() << "this CPU has no AVX2";
  std::mt19937 rng(20261207);
  std::int64_t mismatches = 0, lanes = 0, edge_flushed = 0;
  for (int i = 0; i < 400000; ++i, ++lanes) {
    float acc;
    std::uint16_t a[2], b[2];
    if (i % 4 == 0) {
      edge_lane(rng, acc, a, b);
    } else {
      acc = random_acc(rng);
      for (int j = 0; j < 2; ++j) a[j] = random_bf16(rng), b[j] = random_bf16(rng);
    }
    const float want = numerics::bf16_dot_pair(acc, a, b), got = fma_paths(acc, a, b);
    if (i % 4 == 0 && want == 0.0f) ++edge_flushed;
    const bool same = bits_of(got) == bits_of(want) || (std::isnan(got) && std::isnan(want));
    if (!same && ++mismatches <= 5)
      ADD_FAILURE() << "acc " << acc << " a " << a[0] << "," << a[1] << " b " << b[0] << "," << b[1] << ": FMAs "
                    << got << ", model " << want;
  }
  EXPECT_EQ(mismatches, 0) << "of " << lanes << " lanes";
  EXPECT_GT(edge_flushed, 0) << "the edge lanes must reach the flush they are there for";
#else
  GTEST_SKIP() << "built without the vector paths";
#endif
}

// The tininess rule on its own: 2^-126 − 1.25·2^-151 rounds (gradual
// underflow) to 2^-126, but to 24 bits with an unbounded exponent it is
// below 2^-126, so the step flushes it; 2^-126 − 2^-152 stays 2^-126.
TEST(Bf16DotModel, TininessIsDecidedAfterRoundingWithAnUnboundedExponent) {
  const std::uint16_t zero = 0;
  const std::uint16_t a1[2] = {zero, f32_to_bf16(-std::ldexp(1.25f, -75))}, b1[2] = {zero, f32_to_bf16(std::ldexp(1.0f, -76))};
  EXPECT_EQ(std::fma(-std::ldexp(1.25f, -75), std::ldexp(1.0f, -76), std::ldexp(1.0f, -126)), std::ldexp(1.0f, -126));
  EXPECT_EQ(bits_of(numerics::bf16_dot_pair(std::ldexp(1.0f, -126), a1, b1)), bits_of(0.0f));
  const std::uint16_t a2[2] = {zero, f32_to_bf16(-std::ldexp(1.0f, -76))}, b2[2] = {zero, f32_to_bf16(std::ldexp(1.0f, -76))};
  EXPECT_EQ(numerics::bf16_dot_pair(std::ldexp(1.0f, -126), a2, b2), std::ldexp(1.0f, -126));
}
