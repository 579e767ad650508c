#pragma once
// What the vec decode paths share: constants and the problem description.
// The SIMD paths (decode/vector_kernel.inl, compiled once per target by
// simd/<target>.cpp) are reached through the dispatch table
// (simd/dispatch.hpp): for groups [g_begin, g_end) of one (batch, KV head),
// the scalar model's decode_group for each of them, walking the cache once in
// memory order.
#include <algorithm>
#include <cfloat>
#include <cstdint>
#include <limits>
#include <vector>

#include "fattn/decode.hpp"
#include "numerics/constants.hpp"
#include "numerics/exp.hpp"
#include "numerics/sink.hpp"
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

// The slot of logical position pos (0 <= pos < kv_len <= capacity) in a
// ring that starts at ring_start: one compare, no division.
inline std::int64_t slot(const DecodePlan& p, std::int64_t pos) {
  const std::int64_t s = pos + p.ring_start;
  return s >= p.capacity ? s - p.capacity : s;
}

// A chunk of rows starting at logical position p0, by slot: rows j < wrap
// sit at first + j, rows from wrap on at first + j - capacity. Without a
// ring (or a chunk that does not cross the end of the cache) wrap >= C.
struct ChunkSlots {
  std::int64_t first, wrap, capacity;
  std::int64_t operator()(std::int64_t j) const { return j < wrap ? first + j : first + j - capacity; }
};
inline ChunkSlots chunk_slots(const DecodePlan& p, std::int64_t p0) {
  const std::int64_t first = slot(p, p0);
  return {first, p.capacity - first, p.capacity};
}

// The sink of query head h folded into a group's state (M, S, O[0..D)) once
// the group has seen its chunks, as one more online-softmax step with a
// single score and no value: M' = max(M, sink), f = exp(M - M'),
// S' = S·f + exp(sink - M'), O' = O·f (skipped when f == 1, which changes no
// bit). A sink of -inf (none for that head) leaves the state untouched. One
// function for the scalar model and every vector path, so all agree.
inline void fold_sink(const DecodePlan& p, std::int64_t h, float& row_max, float& row_sum, float* o) {
  if (p.params.sinks.empty()) return;
  const float f = numerics::fold_sink(p.params.sinks[std::size_t(h)], row_max, row_sum, simd::exp_f32);
  if (f != 1.0f)
    for (std::int64_t d = 0; d < p.head_dim; ++d) o[d] = o[d] * f;
}

}  // namespace fattn::decode_detail
