#pragma once
// The numeric constants of the kernels, in one place (docs/numerics.md).
#include <cfloat>
#include <limits>

namespace fattn::numerics {

constexpr float kInf = std::numeric_limits<float>::infinity();
// A running max starts finite, so exp(-inf - max) is exactly 0, never NaN
// (the prefill and decode seeds; the naive SDPA starts at -inf).
constexpr float kInitialMax = -FLT_MAX / 2;
// log2(e) as the f32 the Metal source's literal becomes (candle prefill).
constexpr float kLog2e = 1.44269504089f;
// The decode seed masks a score with -max(half), not -inf: finite.
constexpr float kMaskedScore = -65504.0f;

}  // namespace fattn::numerics
