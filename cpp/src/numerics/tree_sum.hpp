#pragma once
// The seeds' reduction order for a power-of-two count: pairs, then pairs of
// pairs, ... Shared by the prefill and decode engines (scalar models and
// SIMD paths), so every path adds the same operands in the same order.
#include <cstdint>

namespace fattn {

// Compile-time count: unrolls into straight-line adds (no recursive calls in
// the decode chunk loop, where it runs once per head and chunk).
template <std::int64_t N>
inline float tree_sum(const float* p) {
  static_assert(N >= 1 && (N & (N - 1)) == 0, "a power of two");
  if constexpr (N == 1) return p[0];
  else return tree_sum<N / 2>(p) + tree_sum<N / 2>(p + N / 2);
}

inline float tree_sum(const float* p, std::int64_t n) {
  if (n == 1) return p[0];
  const std::int64_t half = n / 2;
  return tree_sum(p, half) + tree_sum(p + half, half);
}

}  // namespace fattn
