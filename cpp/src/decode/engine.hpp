#pragma once
// What the vec decode paths share: constants, the problem description, and
// the declaration of each SIMD path.
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


// The kernels read the plan itself (fattn/decode.hpp).
using Decode = DecodePlan;

// Groups that get at least one chunk: chunk c goes to group c mod nwg.
inline std::int64_t live_groups(const Decode& p) {
  const std::int64_t chunks = (p.kv_len + kDecodeChunk - 1) / kDecodeChunk;
  return chunks < p.nwg ? chunks : p.nwg;
}


// The vector paths for groups [g_begin, g_end) of one (batch, KV head): the
// scalar model's decode_group for each of them, walking the cache once in
// memory order. One source (decode/vector_kernel.inl), compiled per instruction
// set in simd/decode_avx512.cpp and simd/decode_avx2.cpp (and the AVX-512
// code emulated on AVX2, for tests, in simd/decode_avx512_emulated.cpp).
template <class T>
void decode_groups_avx512(const TensorView& q, const TensorView& k, const TensorView& v, const TensorView& o_part,
                          const TensorView& s_part, const TensorView& m_part, const Decode& p, std::int64_t b,
                          std::int64_t kv_head, std::int64_t g_begin, std::int64_t g_end, std::vector<float>& work);
template <class T>
void decode_groups_avx512_emulated(const TensorView& q, const TensorView& k, const TensorView& v,
                                   const TensorView& o_part, const TensorView& s_part, const TensorView& m_part,
                                   const Decode& p, std::int64_t b, std::int64_t kv_head, std::int64_t g_begin,
                                   std::int64_t g_end, std::vector<float>& work);
template <class T>
void decode_groups_avx2(const TensorView& q, const TensorView& k, const TensorView& v, const TensorView& o_part,
                        const TensorView& s_part, const TensorView& m_part, const Decode& p, std::int64_t b,
                        std::int64_t kv_head, std::int64_t g_begin, std::int64_t g_end, std::vector<float>& work);

}  // namespace fattn::decode_detail
