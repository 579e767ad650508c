#pragma once
// What the vec decode paths share: constants and the problem description.
// The SIMD paths (decode/vector_kernel.inl, compiled once per target by
// simd/<target>.cpp) are reached through the dispatch table
// (simd/dispatch.hpp): for groups [g_begin, g_end) of one (batch, KV head),
// the scalar model's decode_group for each of them, walking the cache once in
// memory order.
#include <cfloat>
#include <cstdint>
#include <limits>
#include <vector>

#include "fattn/decode.hpp"
#include "numerics/exp.hpp"
#include "numerics/tree_sum.hpp"

namespace fattn::decode_detail {

constexpr float kInf = std::numeric_limits<float>::infinity();
constexpr float kInitialMax = -FLT_MAX / 2;
// The seed masks with -max(half), not -inf: a masked score is finite.
constexpr float kMaskedScore = -65504.0f;
constexpr std::int64_t kLanes = 32;  // one simdgroup: lane t owns float4 groups t, t+32, ...


struct Decode {
  std::int64_t batch, heads, kv_heads, head_dim, kv_len, window_start, nwg;
  float scale, softcap, scale_over_cap;
  // Whether groups with no chunk (g >= live_groups) get their untouched state
  // written to the partials. flash_attn_vec's own workspace skips it: its
  // reduce knows those terms are +0 and never reads them.
  bool write_idle = true;
};

// Groups that get at least one chunk: chunk c goes to group c mod nwg.
inline std::int64_t live_groups(const Decode& p) {
  const std::int64_t chunks = (p.kv_len + kDecodeChunk - 1) / kDecodeChunk;
  return chunks < p.nwg ? chunks : p.nwg;
}

}  // namespace fattn::decode_detail
