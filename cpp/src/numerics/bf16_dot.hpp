#pragma once
// fattn's bf16 dot product: the arithmetic of one f32 lane of AVX512_BF16's
// VDPBF16PS, in scalar code. The prefill's bf16 Q·Kᵀ follows it on every path
// (docs/numerics.md §4): the scalar model below, the FMA paths (two FMAs per
// pair under the FTZ/DAZ scope of simd/ftz_scope.hpp) and the paths that run
// the instruction itself.
//
// Established against the instruction (tests_cpp/test_bf16_dot.cpp: random
// lanes over the whole exponent range and lanes placed on the edge of the
// normal range, on an Intel Xeon with AVX512_BF16):
// - denormal inputs, the accumulator's and the bf16 ones, read as zero (DAZ);
// - the odd pair, then the even one, each one fused multiply-add (the
//   product exact, never rounded or flushed on its own; one rounding to
//   nearest even for the sum);
// - a result that is tiny is flushed to zero of its sign (FTZ) after each
//   step, where "tiny" is decided as x86 decides it: after rounding to 24
//   bits as if the exponent were unbounded. So an exact sum just below
//   2^-126 that gradual underflow would round up to 2^-126 is flushed all
//   the same (2^-126 − 1.25·2^-151 gives 0, not 2^-126).
// Readings that do not match the instruction: flushing a tiny product before
// the add, leaving bf16 denormals as they are, and deciding tininess on the
// gradually underflowed result. The Zen 4 measurement (the odd-first
// order on 3.2 million random lanes) agrees; its denormals are untested there.
#include <cmath>
#include <cstdint>
#include <cstring>

#include "fattn/dtype.hpp"

namespace fattn::numerics {

// x with a denormal (exponent field 0, nonzero) replaced by zero of its sign.
inline float flush_denormal(float x) {
  std::uint32_t bits;
  std::memcpy(&bits, &x, 4);
  if ((bits & 0x7f800000u) == 0) bits &= 0x80000000u;
  float y;
  std::memcpy(&y, &bits, 4);
  return y;
}

// fma(a, b, c) with DAZ inputs and x86's FTZ (tininess after rounding with
// an unbounded exponent).
inline float fma_daz_ftz(float a, float b, float c) {
  a = flush_denormal(a), b = flush_denormal(b), c = flush_denormal(c);
  const float r = std::fma(a, b, c);
  // Below 2^-125 the exact sum is small enough (|c| and |a·b| under 2^-99:
  // a larger c cannot cancel to there, its last bit being too coarse) that
  // scaling one factor and c by 2^64 is exact and overflows nothing; the
  // scaled sum then rounds in the normal range, as with an unbounded exponent.
  if (r == 0.0f || std::fabs(r) >= 0x1p-125f) return r;
  const float scaled = std::fma(a, b * 0x1p64f, c * 0x1p64f);
  return std::fabs(scaled) < 0x1p-62f ? std::copysign(0.0f, scaled) : r;
}

// acc + a_odd·b_odd + a_even·b_even as VDPBF16PS computes one lane (inputs
// are f32 values that bf16 represents).
inline float bf16_dot_step(float acc, float a_even, float a_odd, float b_even, float b_odd) {
  return fma_daz_ftz(a_even, b_even, fma_daz_ftz(a_odd, b_odd, acc));
}

// The same from the bf16 bit patterns of a pair each.
inline float bf16_dot_pair(float acc, const std::uint16_t a[2], const std::uint16_t b[2]) {
  return bf16_dot_step(acc, bf16_to_f32(a[0]), bf16_to_f32(a[1]), bf16_to_f32(b[0]), bf16_to_f32(b[1]));
}

// Σ_d a[d]·b[d] over n elements as pairs (0, 1), (2, 3), ... from 0; an odd
// n ends with a pair whose second element is 0 in both (0·0 comes first
// then, which turns an accumulated −0 into +0, as the instruction does).
inline float bf16_dot(const float* a, const float* b, std::int64_t n) {
  float acc = 0.0f;
  std::int64_t d = 0;
  for (; d + 2 <= n; d += 2) acc = bf16_dot_step(acc, a[d], a[d + 1], b[d], b[d + 1]);
  if (d < n) acc = bf16_dot_step(acc, a[d], 0.0f, b[d], 0.0f);
  return acc;
}

}  // namespace fattn::numerics
