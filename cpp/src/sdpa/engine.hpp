#pragma once
// What the naive SDPA paths share: the problem description and helpers. The
// SIMD paths (sdpa/vector_kernel.inl, compiled once per target by
// simd/<target>.cpp) are reached through the dispatch table
// (simd/dispatch.hpp): up to kSdpaRows query rows from row0 of (b, h), each
// the scalar model's sdpa_row (sdpa.cpp) lane by lane.
#include <cstdint>
#include <vector>

#include "fattn/sdpa.hpp"
#include "fattn/tensor.hpp"

namespace fattn::sdpa_detail {


// Query rows per item of the SIMD paths (one per vector lane).
inline constexpr std::int64_t kSdpaRows = 32;

// Keys query row i sees: all kv_len, or with causal (bottom-right) the keys
// up to its position kv_len - q_len + i.
inline std::int64_t visible_keys(const SdpaPlan& s, std::int64_t i) {
  if (!s.causal) return s.kv_len;
  const std::int64_t n = i + s.causal_offset + 1;
  return n < 0 ? 0 : (n > s.kv_len ? s.kv_len : n);
}

}  // namespace fattn::sdpa_detail
