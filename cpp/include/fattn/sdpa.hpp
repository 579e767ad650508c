#pragma once
// Naive fused SDPA (seed 003): one query row at a time against every key it
// may see, online softmax with a rescale per key, f32 inside.
#include <cstdint>
#include <optional>
#include <vector>

#include "fattn/plan.hpp"
#include "fattn/tensor.hpp"

namespace fattn {

struct SdpaParams {
  // Bottom-right aligned by default: query i sits at absolute position
  // kv_seq_len - Lq + i and sees keys 0..that position (causal_align).
  bool causal = true;
  CausalAlign causal_align = CausalAlign::bottom_right;
  // Score scale; unset means 1/sqrt(D) computed in f32.
  std::optional<float> scale;
  // Valid key positions (1..capacity); unset means all of k's positions.
  std::optional<std::int64_t> kv_seq_len;
  // > 0: score = softcap * tanh(score / softcap) on the scaled score (fattn's
  // own tanh, so every path agrees to the bit); 0 = off; finite.
  float softcap = 0.0f;
  // Sliding window (requires causal): a query at position p sees keys j with
  // p - window < j <= p; unset = no window; >= 1.
  std::optional<std::int64_t> window;
  // Attention sinks: empty = none; else one logit per query head (H), in the
  // units of the scaled scores, that joins the softmax denominator only;
  // -inf = no sink for that head; NaN and +inf are rejected.
  std::vector<float> sinks;
};

// A checked sdpa call (fattn/plan.hpp): the inputs, the parameters as given,
// and what they resolve to.
struct SdpaPlan : AttentionShape {
  SdpaParams params;
  TensorView q, k, v;
  float scale = 0.0f;  // params.scale, or 1/sqrt(D) in f32
  bool causal = true;
  std::int64_t causal_offset = 0;  // with causal, row i sees keys j <= i + causal_offset
  float softcap = 0.0f, scale_over_cap = 0.0f;  // scale_over_cap = scale / softcap in f32
  // params.window, capped at max(Lq, kv_len) (a longer window keeps every
  // key, exactly as no window does; the cap keeps index arithmetic small);
  // 0 = no window.
  std::int64_t window = 0;
  // The output the plan writes: q's shape and dtype.
  std::array<std::int64_t, 4> out_shape() const { return q.shape; }
  DType out_dtype() const { return q.dtype; }
};

// q [B, H, Lq, D]; k, v [B, H_kv, capacity, D] with H % H_kv == 0; one
// dtype (f32, f16 or bf16). Throws InvalidArgument / InvalidDType.
SdpaPlan plan_sdpa(const TensorView& q, const TensorView& k, const TensorView& v, const SdpaParams& params = {});
// out: the plan's out_shape() and out_dtype(), writable, one address per
// element. Throws before writing anything if it is not.
void run(const SdpaPlan& plan, const TensorView& out);

// plan_sdpa + run.
void sdpa(const TensorView& q, const TensorView& k, const TensorView& v, const TensorView& out,
          const SdpaParams& params = {});

}  // namespace fattn
