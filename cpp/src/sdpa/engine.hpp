#pragma once
// What the naive SDPA paths share: the problem description and helpers. The
// SIMD paths (sdpa/vector_kernel.inl, compiled once per target by
// simd/<target>.cpp) are reached through the dispatch table
// (simd/dispatch.hpp): up to kSdpaRows query rows from row0 of (b, h), each
// the scalar model's sdpa_row (sdpa.cpp) lane by lane.
#include <cstdint>
#include <limits>
#include <vector>

#include "fattn/sdpa.hpp"
#include "fattn/tensor.hpp"

namespace fattn::sdpa_detail {


// Query rows per item of the SIMD paths (one per vector lane).
inline constexpr std::int64_t kSdpaRows = 32;

// Query row i sees keys first_key(s, i) <= j < visible_keys(s, i).
// visible_keys: all kv_len, or with causal the keys up to its position
// i + causal_offset (kv_len - q_len + i bottom-right).
inline std::int64_t visible_keys(const SdpaPlan& s, std::int64_t i) {
  if (!s.causal) return s.kv_len;
  const std::int64_t n = i + s.causal_offset + 1;
  return n < 0 ? 0 : (n > s.kv_len ? s.kv_len : n);
}

// first_key: 0, or with a window W (which implies causal) the first of the W
// positions ending at the row's own, position - W + 1. The keys before it are
// skipped, never visited: the state a skipped key would leave is the one it
// found, so skipping and masking (keeping the state, as the SIMD paths do for
// the lanes a key is not in) give the same bits. Capped at kv_len, so a row
// past the last key has an empty range. s.window <= max(Lq, kv_len) keeps
// the arithmetic far from overflow.
inline std::int64_t first_key(const SdpaPlan& s, std::int64_t i) {
  if (s.window == 0) return 0;
  const std::int64_t after = i + s.causal_offset + 1;  // one past the row's position
  if (after <= s.window) return 0;
  return after - s.window > s.kv_len ? s.kv_len : after - s.window;
}

// Query head h's sink, or -inf (none: the sink step is skipped).
inline float sink_of(const SdpaPlan& s, std::int64_t h) {
  return s.params.sinks.empty() ? -std::numeric_limits<float>::infinity() : s.params.sinks[std::size_t(h)];
}

}  // namespace fattn::sdpa_detail
