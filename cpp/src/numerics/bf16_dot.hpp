#pragma once
// The arithmetic of one f32 lane of AVX512_BF16's VDPBF16PS, in scalar code:
// the model a bf16 Q·Kᵀ on that instruction would have to follow in every
// path (issue 18, point 3; not used by any kernel yet). Established against
// the instruction (tests_cpp/test_bf16_dot.cpp, 320 000 random lanes over the
// whole exponent range, on an Intel Xeon with AVX512_BF16): denormal inputs,
// the accumulator's and the bf16 ones, read as zero (DAZ); then the odd pair,
// then the even one, each as one fused multiply-add (the product exact, never
// rounded or flushed on its own, one rounding to nearest even for the sum);
// a denormal sum is flushed to zero of its sign (FTZ) after each step. Two
// tempting readings of the reference do not match it: flushing a tiny
// product before the add (1 355 lanes of 320 000 differ), and leaving bf16
// denormals as they are (22 323 differ). The Zen 4 measurement (the
// odd-first order on 3.2 million random lanes) agrees; its denormals are
// untested there.
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

// acc + a[1]·b[1] + a[0]·b[0] as VDPBF16PS computes one lane.
inline float bf16_dot_pair(float acc, const std::uint16_t a[2], const std::uint16_t b[2]) {
  acc = flush_denormal(acc);
  for (int i : {1, 0})
    acc = flush_denormal(std::fma(flush_denormal(bf16_to_f32(a[i])), flush_denormal(bf16_to_f32(b[i])), acc));
  return acc;
}

}  // namespace fattn::numerics
