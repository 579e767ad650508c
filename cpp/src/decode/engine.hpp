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
#include "numerics/constants.hpp"
#include "numerics/exp.hpp"
#include "numerics/tree_sum.hpp"

namespace fattn::decode_detail {

using numerics::kInf;
using numerics::kInitialMax;
using numerics::kMaskedScore;
constexpr std::int64_t kLanes = 32;  // one simdgroup: lane t owns float4 groups t, t+32, ...



// Groups that get at least one chunk: chunk c goes to group c mod nwg.
inline std::int64_t live_groups(const DecodePlan& p) {
  const std::int64_t chunks = (p.kv_len + kDecodeChunk - 1) / kDecodeChunk;
  return chunks < p.nwg ? chunks : p.nwg;
}

}  // namespace fattn::decode_detail
