#pragma once
// What the prefill engine's paths share: the arithmetic policies of the two
// seed families, the problem description, and small helpers. The scalar
// model (prefill.cpp) and the SIMD paths (vector_kernel.inl) use these, so
// the per-element arithmetic is written once.
#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "fattn/prefill.hpp"
#include "numerics/constants.hpp"
#include "numerics/exp.hpp"
#include "numerics/sink.hpp"
#include "numerics/tanh.hpp"
#include "numerics/tree_sum.hpp"

namespace fattn::prefill_detail {

using numerics::kInf;
using numerics::kInitialMax;
using numerics::kLog2e;

// --- arithmetic policies: what distinguishes the two seed families ------------
//
// Each policy declares its steps once: the scalar model calls the functions,
// the vector paths (vector_kernel.inl) read the same named properties for the
// steps they vectorise (where the scale goes, which exp, the sum grouping,
// the order of the causal and mask steps), and fattn.reference's
// _PrefillPolicy mirrors the names.

// candle/MLX flash_attn_prefill.metal: Q pre-scaled by scale*log2(e) in the
// I/O type, scores in log2 units, exp2, mask times log2(e), a true divide.
struct CandleArithmetic {
  static constexpr std::int64_t kSumGroup = 8;          // row sums: a tree per 8 keys, groups in order
  static constexpr bool kCausalOverridesMask = false;   // causal -inf is set before the mask add
  static constexpr bool kNaturalExp = false;            // exp2 on log2-unit scores
  static constexpr bool kScaleAfterDot = false;         // the scale went into Q (stage_q)
  template <class T>
  static float q_factor(float scale) { return round_to<T>(scale * kLog2e); }
  template <class T>
  static float stage_q(float q, float factor) { return round_to<T>(q * factor); }
  static float score(float dot, float scale) { return kScaleAfterDot ? dot * scale : dot; }
  static float mask_term(float m) { return kLog2e * m; }
  static float sink_term(float sink) { return kLog2e * sink; }  // into log2 units, as a mask value
  static float exp(float x) { return kNaturalExp ? simd::exp_f32(x) : simd::exp2_f32(x); }
  static float normalise(float o, float l) { return l == 0.0f ? 0.0f : o / l; }
  static float lse(float m, float l) {
    if (l == 0.0f) return -kInf;
    return float((double(m) + std::log2(double(l))) * 0.69314718055994530942);
  }
};

// llama.cpp-derived flash_attn_prefill_d512.metal: Q unscaled, scale on the
// f32 scores, mask through half in natural units, exp, reciprocal multiply.
struct LlamaCppArithmetic {
  static constexpr std::int64_t kSumGroup = 64;         // pair sums then a 32-lane tree: a tree per 64 keys
  static constexpr bool kCausalOverridesMask = true;    // mask added first, causal -inf after
  static constexpr bool kNaturalExp = true;             // exp on natural-unit scores
  static constexpr bool kScaleAfterDot = true;          // f32 score * scale, Q as it came
  template <class T>
  static float q_factor(float) { return 1.0f; }
  template <class T>
  static float stage_q(float q, float) { return q; }
  static float score(float dot, float scale) { return kScaleAfterDot ? dot * scale : dot; }
  static float mask_term(float m) { return f16_to_f32(f32_to_f16(m)); }
  static float exp(float x) { return kNaturalExp ? simd::exp_f32(x) : simd::exp2_f32(x); }
  static float normalise(float o, float l) { return o * (l == 0.0f ? 0.0f : 1.0f / l); }
  static float lse(float m, float l) {
    if (l == 0.0f) return -kInf;
    return float(double(m) + std::log(double(l)));
  }
};



// softcap on: the score from the dot product, in the policy's units (the
// plan's softcap_in carries llama.cpp's scale, candle's is in Q already).
inline float softcap_score(float dot, float in, float out) { return out * simd::tanh_f32(dot * in); }

// Window: the first tile a block whose first row is `row_begin` visits, the
// one holding that row's oldest visible key (row_begin + offset - window + 1).
inline std::int64_t window_tile_start(std::int64_t row_begin, std::int64_t causal_offset, std::int64_t window,
                                      std::int64_t k_tile) {
  if (window <= 0) return 0;
  const std::int64_t oldest = row_begin + causal_offset - window + 1;
  return oldest <= 0 ? 0 : oldest / k_tile;
}

// Causal: the tiles a block whose rows end before row `row_end` visits: up to
// the one holding its last row's diagonal (none when every row precedes key 0).
inline std::int64_t causal_tile_limit(std::int64_t row_end, std::int64_t causal_offset, std::int64_t k_tile,
                                      std::int64_t n_tiles) {
  const std::int64_t keys_seen = row_end + causal_offset;  // keys 0..keys_seen-1 are seen by the last row
  if (keys_seen <= 0) return 0;
  return std::min(n_tiles, (keys_seen + k_tile - 1) / k_tile);
}

// Per-thread scratch: one Q block and one K/V tile, all f32.
struct Scratch {
  std::vector<float> q, k, v, s, o, row_max, row_sum;
  explicit Scratch(const PrefillPlan& p) {
    const auto bq = std::size_t(p.geometry.q_tile), bk = std::size_t(p.geometry.k_tile),
               d = std::size_t(p.head_dim);
    q.resize(bq * d);
    k.resize(bk * d);
    v.resize(bk * d);
    s.resize(bq * bk);
    o.resize(bq * d);
    row_max.resize(bq);
    row_sum.resize(bq);
  }
};


// Applies row i of the mask to the scores of keys [key0, key0 + n), which sit
// `s_stride` floats apart: bool False sets -inf, an additive value adds
// Arith::mask_term(value). The row's address and element type are resolved
// once, not per element.
template <class Arith>
inline void apply_mask_row(const MaskView& m, std::int64_t b, std::int64_t h, std::int64_t i, std::int64_t key0,
                           std::int64_t n, float* s, std::int64_t s_stride) {
  const std::int64_t base = m.offset(b, h, i, key0), step = m.stride[3];
  if (m.kind == MaskKind::boolean) {
    const auto* keep = static_cast<const std::uint8_t*>(m.data) + base;
    for (std::int64_t j = 0; j < n; ++j)
      if (!keep[j * step]) s[j * s_stride] = -kInf;
    return;
  }
  auto add = [&](const auto* values, auto to_float) {
    for (std::int64_t j = 0; j < n; ++j)
      s[j * s_stride] = s[j * s_stride] + Arith::mask_term(to_float(values[j * step]));
  };
  const void* row = m.data;
  switch (m.dtype) {
    case DType::f32: add(static_cast<const float*>(row) + base, [](float x) { return x; }); break;
    case DType::f16: add(static_cast<const std::uint16_t*>(row) + base, [](std::uint16_t x) { return f16_to_f32(x); }); break;
    case DType::bf16: add(static_cast<const std::uint16_t*>(row) + base, [](std::uint16_t x) { return bf16_to_f32(x); }); break;
  }
}

// A finished row: the LSE over its keys, the sink (if any) folded in, then
// out = normalise(O, l) in the I/O type. O's element d is o[d * o_step];
// every path ends its rows here, so the bits cannot differ.
template <class T, class Arith>
inline void finish_row(const PrefillPlan& p, const TensorView& out, std::int64_t b, std::int64_t h, std::int64_t i, float row_max,
                       float row_sum, float* o, std::int64_t o_step) {
  if (p.lse) *p.lse->row<float>(b, h, i) = Arith::lse(row_max, row_sum);
  if (!p.sink_terms.empty()) {
    const float f = numerics::fold_sink(p.sink_terms[std::size_t(h)], row_max, row_sum, Arith::exp);
    if (f != 1.0f)
      for (std::int64_t d = 0; d < p.head_dim; ++d) o[d * o_step] = o[d * o_step] * f;
  }
  T* dst = out.row<T>(b, h, i);
  for (std::int64_t d = 0; d < p.head_dim; ++d) dst[d] = narrow<T>(Arith::normalise(o[d * o_step], row_sum));
}

// Rows of Q a SIMD path handles together (one lane per row). The SIMD paths
// (prefill/vector_kernel.inl, compiled once per target by simd/<target>.cpp)
// are reached through the dispatch table (simd/dispatch.hpp).
inline constexpr std::int64_t kSimdRows = 32;

// A vector path's work item: up to this many blocks of kSimdRows rows of one
// head, which take the keys a chunk at a time (prefill/vector_kernel.inl)
// when there are more keys than one chunk.
inline constexpr std::int64_t kMaxBlocksPerItem = 4;
// Keys per chunk: their K and V rows (as stored) about 128 KiB, which stay in
// L2 beside the blocks' state (32 KiB each at f32 D = 128; chunks of 64 KiB
// to 1 MiB measured alike). Streamed from L3 once per block instead, the
// score and P·V loops ran ~18% and ~10% slower (Intel Xeon, f32 D = 128,
// timed inside the kernel: Lk = 2048 against 512).
template <class T>
std::int64_t prefill_chunk_keys(std::int64_t head_dim) {
  return std::max<std::int64_t>(16, (std::int64_t(128) << 10) / (2 * head_dim * std::int64_t(sizeof(T))));
}

}  // namespace fattn::prefill_detail
