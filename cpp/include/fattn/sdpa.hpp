#pragma once
// Naive fused SDPA (seed 003): one query row at a time against every key it
// may see, online softmax with a rescale per key, f32 inside.
#include <cstdint>
#include <optional>

#include "fattn/tensor.hpp"

namespace fattn {

struct SdpaParams {
  // Bottom-right aligned: query i sits at absolute position
  // kv_seq_len - Lq + i and sees keys 0..that position.
  bool causal = true;
  // Score scale; unset means 1/sqrt(D) computed in f32.
  std::optional<float> scale;
  // Valid key positions (1..capacity); -1 means all of k's positions.
  std::int64_t kv_seq_len = -1;
};

// q [B, H, Lq, D]; k, v [B, H_kv, capacity, D] with H % H_kv == 0; out like
// q and writable. q, k, v and out share one dtype (f32, f16 or bf16).
// Throws InvalidArgument / InvalidDType before touching any data.
void sdpa(const TensorView& q, const TensorView& k, const TensorView& v, const TensorView& out,
          const SdpaParams& params = {});

}  // namespace fattn
