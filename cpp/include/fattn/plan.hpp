#pragma once
// What every kernel family's plan shares.
//
// A call goes in two steps: plan_<kernel>(inputs, params) checks every
// input and parameter once, resolves what the kernel will do (shapes, tile
// geometry, scale, the output shapes) and allocates nothing; run(plan,
// outputs) checks only the outputs against the plan, then computes. The
// one-call functions (sdpa, flash_attn_prefill, flash_attn_vec, ...) are
// the two steps in a row; the Python binding plans first, allocates the
// outputs the plan asks for, then runs, so an invalid call never allocates.
#include <cstdint>

namespace fattn {

// The problem every attention kernel solves: `heads` query heads of
// `q_len` rows each (per batch item) against `kv_len` keys of `kv_heads`
// K/V heads (query head h reads K/V head h / (heads / kv_heads)), head dim
// `head_dim`. kv_len counts the keys that are read (a KV cache's
// kv_seq_len), not the capacity of the K/V arrays.
struct AttentionShape {
  std::int64_t batch = 0, heads = 0, kv_heads = 0, q_len = 0, kv_len = 0, head_dim = 0;
};

// Where a causal mask puts the diagonal. top_left: query i sees keys 0..i
// (the prefill seeds); bottom_right: the last query sees the last key, i.e.
// query i sees keys 0..i + kv_len - q_len (the naive SDPA seed). Each
// kernel's params default to its seed's alignment.
enum class CausalAlign : std::uint8_t { top_left = 0, bottom_right = 1 };

// Query row i sees keys j <= i + causal_offset(...).
inline std::int64_t causal_offset(CausalAlign align, std::int64_t q_len, std::int64_t kv_len) {
  return align == CausalAlign::bottom_right ? kv_len - q_len : 0;
}

}  // namespace fattn
