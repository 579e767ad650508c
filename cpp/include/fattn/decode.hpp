#pragma once
// Vec decode (seed 002, llama.cpp's flash_attn_ext_vec): one query per head
// against a KV cache, split over NWG groups that each keep a partial online
// softmax (O, S, M), then a reduce. Also the general merge of attention
// results over disjoint key sets.
#include <cstdint>
#include <optional>
#include <vector>

#include "fattn/plan.hpp"
#include "fattn/quant.hpp"
#include "fattn/tensor.hpp"

namespace fattn {

enum class DecodeMask : std::uint8_t { none = 0, causal = 1, sliding_window = 2 };

struct DecodeParams {
  std::int64_t kv_seq_len = 0;  // valid positions, 1..capacity
  std::optional<float> scale;   // default 1/sqrt(D) in f32
  DecodeMask mask = DecodeMask::none;
  std::int64_t window = 0;      // sliding_window: keep the last `window` positions (0 = all)
  float softcap = 0.0f;         // > 0: score = softcap * tanh(score / softcap) (fattn's extension)
  std::int64_t nwg = 32;        // groups the KV positions are dealt to, 1..64
  // A learned logit per query head that joins the softmax denominator only
  // (-inf = none for that head); folded into group 0's partial.
  std::vector<float> sinks;  // empty = none; else one per query head
  // The cache as a ring: logical position p lives in slot (ring_start + p) %
  // capacity. Masks and the dealing of chunks to groups follow logical
  // positions, so a rolled cache gives the unrolled cache's bits.
  std::optional<std::int64_t> ring_start;  // none = slot p; else 0..capacity-1
};

// Positions per chunk: the unit the groups are dealt and the softmax rescales by.
inline constexpr std::int64_t kDecodeChunk = 32;

// A KV cache as the decode reads it, in place: a dense view (f32, f16 or
// bf16 [B, H_kv, capacity, D]) or a quantized one (fattn/quant.hpp: q8_0 or
// q4_0 rows of blocks, [B, H_kv, capacity, D] in logical elements). Either
// converts implicitly, so a TensorView or a QuantView can be passed wherever
// a CacheView is taken; K and V are independent (e.g. f16 K with q4_0 V).
//
// What a quantized cache computes: the decode of its exact dequantized
// values (dequantize_kv, f32) bit for bit; and since every cache value is
// widened exactly to f32 before any arithmetic (f16/bf16 too), any mix of
// caches computes the decode of the f32 caches holding the same values
// (docs/numerics.md §5, "Quantized caches").
struct CacheView {
  TensorView dense;                // the cache, unless `quant` is set
  std::optional<QuantView> quant;  // a quantized cache (`dense` is then unused)
  CacheView() = default;
  CacheView(const TensorView& t) : dense(t) {}  // NOLINT(google-explicit-constructor): implicit on purpose
  CacheView(const QuantView& t) : quant(t) {}   // NOLINT(google-explicit-constructor)
  bool quantized() const { return quant.has_value(); }
  const std::array<std::int64_t, 4>& shape() const { return quant ? quant->shape : dense.shape; }
  std::int64_t heads() const { return shape()[1]; }
  std::int64_t length() const { return shape()[2]; }

  // A paged cache (issue 21), set per sequence by plan_flash_attn_vec_paged:
  // the view is then the pool of blocks [num_blocks, H_kv, block_size, D]
  // and slot s of the sequence is row s % block_size of block
  // pages[s / block_size] (b is not used).
  const std::int32_t* pages = nullptr;
  std::int64_t page_size = 0;
  bool paged() const { return pages != nullptr; }
  template <class T>
  const T* dense_row(std::int64_t b, std::int64_t h, std::int64_t slot) const {
    if (pages) return dense.row<const T>(pages[slot / page_size], h, slot % page_size);
    return dense.row<const T>(b, h, slot);
  }
  const std::uint8_t* quant_row(std::int64_t b, std::int64_t h, std::int64_t slot) const {
    if (pages) return quant->row(pages[slot / page_size], h, slot % page_size);
    return quant->row(b, h, slot);
  }
};

// A checked decode call (fattn/plan.hpp): the inputs, the parameters as
// given, and what they resolve to (q_len = 1; kv_len = params.kv_seq_len).
struct DecodePlan : AttentionShape {
  DecodeParams params;
  TensorView q;
  CacheView k, v;
  std::int64_t window_start = 0;  // first position a sliding window keeps
  std::int64_t ring_start = 0;    // slot of logical position 0 (0 without a ring)
  std::int64_t capacity = 0;      // the cache's slots (k's length)
  std::int64_t nwg = 0;
  float scale = 0.0f, softcap = 0.0f, scale_over_cap = 0.0f;
  // Whether groups with no chunk get their untouched state written to the
  // partials. flash_attn_vec's own workspace skips it: its reduce knows
  // those terms are +0 and never reads them.
  bool write_idle = true;

  // flash_attn_vec's output: f32 [B, H, 1, D]; the partials: o f32
  // [B, H, nwg, D], s and m f32 [B, H, nwg, 1].
  std::array<std::int64_t, 4> out_shape() const { return {batch, heads, 1, head_dim}; }
  std::array<std::int64_t, 4> partials_o_shape() const { return {batch, heads, nwg, head_dim}; }
  std::array<std::int64_t, 4> partials_sm_shape() const { return {batch, heads, nwg, 1}; }
};

// q: f32 [B, H, 1, D]; k, v: [B, H_kv, capacity, D], each a dense view in
// f32, f16 or bf16 (both dense: the same dtype) or a quantized cache (q8_0,
// q4_0; any mix), of one shape. Throws InvalidArgument / InvalidDType naming
// the argument (k_cache, v_cache for the caches); allocates nothing.
DecodePlan plan_flash_attn_vec(const TensorView& q, const CacheView& k, const CacheView& v,
                               const DecodeParams& params);
DecodePlan plan_flash_attn_vec(const TensorView& q, const TensorView& k, const TensorView& v,
                               const DecodeParams& params);
// flash_attn_vec: partials in a workspace of its own, then the reduce into
// out (f32, out_shape()). out may be q itself; it must not overlap k or v.
void run(const DecodePlan& plan, const TensorView& out);
// flash_attn_vec_partials: the partials into o, s, m (their shapes above).
void run_partials(const DecodePlan& plan, const TensorView& o, const TensorView& s, const TensorView& m);

// A checked reduce: the partials and the output's shape, f32 [B, H, 1, D].
struct ReducePlan {
  TensorView o, s, m;
  std::array<std::int64_t, 4> out_shape() const { return {o.shape[0], o.shape[1], 1, o.shape[3]}; }
};
ReducePlan plan_flash_attn_vec_reduce(const TensorView& o, const TensorView& s, const TensorView& m);
void run(const ReducePlan& plan, const TensorView& out);

// Partials: o f32 [B, H, nwg, D] (unnormalised), s and m f32 [B, H, nwg, 1].
// The caches as for plan_flash_attn_vec (the TensorView overloads are the
// dense-only originals, kept for existing callers).
void flash_attn_vec_partials(const TensorView& q, const CacheView& k, const CacheView& v, const TensorView& o,
                             const TensorView& s, const TensorView& m, const DecodeParams& params);
void flash_attn_vec_partials(const TensorView& q, const TensorView& k, const TensorView& v, const TensorView& o,
                             const TensorView& s, const TensorView& m, const DecodeParams& params);

// out f32 [B, H, 1, D] from the partials (any nwg from 1 to 64).
void flash_attn_vec_reduce(const TensorView& o, const TensorView& s, const TensorView& m, const TensorView& out);

// partials + reduce, with the partials in a workspace allocated once per call.
// out may be q itself (a head's row is written only after every partial of
// its KV head is done); it must not overlap k or v.
void flash_attn_vec(const TensorView& q, const CacheView& k, const CacheView& v, const TensorView& out,
                    const DecodeParams& params);
void flash_attn_vec(const TensorView& q, const TensorView& k, const TensorView& v, const TensorView& out,
                    const DecodeParams& params);

// Paged KV decode (issue 21): q f32 [B, H, 1, D]; k, v pools of blocks
// [num_blocks, H_kv, block_size, D] (dense or quantized, as above); the block
// table int32 [B, max_blocks] (row_stride: entries from one row to the
// next); kv_seq_lens[b] >= 0 positions for sequence b, position p at row
// p % block_size of block table[b][p / block_size]. Only the first
// ceil(kv_seq_lens[b] / block_size) entries of a row are read, and each
// must be in [0, num_blocks). Each sequence computes exactly what
// flash_attn_vec computes on its blocks gathered into a contiguous cache
// (params.kv_seq_len is not used; ring_start is refused). A sequence of
// length 0 sees no key: output 0, partials the untouched state.
struct BlockTableView {
  const std::int32_t* data = nullptr;
  std::int64_t rows = 0, cols = 0;
  std::int64_t row_stride = 0;  // entries
};
struct PagedDecodePlan {
  std::vector<DecodePlan> sequences;  // one per batch entry (kv_len 0: an empty sequence)
  TensorView q;
  std::int64_t batch = 0, heads = 0, head_dim = 0, nwg = 0;
  std::array<std::int64_t, 4> out_shape() const { return {batch, heads, 1, head_dim}; }
  std::array<std::int64_t, 4> partials_o_shape() const { return {batch, heads, nwg, head_dim}; }
};
PagedDecodePlan plan_flash_attn_vec_paged(const TensorView& q, const CacheView& k, const CacheView& v,
                                          const BlockTableView& block_table,
                                          const std::vector<std::int64_t>& kv_seq_lens, const DecodeParams& params);
void run(const PagedDecodePlan& plan, const TensorView& out);
void run_partials(const PagedDecodePlan& plan, const TensorView& o, const TensorView& s, const TensorView& m);

// Sinks for merge_attention: one logit per head (-inf = none); row r
// belongs to head (r / rows_per_head) % heads, i.e. the rows are
// [outer, heads, rows_per_head] in C order. values null = no sinks.
struct MergeSinks {
  const float* values = nullptr;
  std::int64_t heads = 0;
  std::int64_t rows_per_head = 1;
};

// Combines n attention results over disjoint key sets: outputs[i] f32
// [rows, D] (normalised) and lses[i] f32 [rows] (natural log; -inf = no
// key) into out [rows, D] and out_lse [rows] (may be null), f32, all
// contiguous. A row with no key anywhere is 0 with LSE -inf. With sinks,
// each row's sink joins the merged softmax's denominator (applied once,
// here); out_lse stays the LSE over the keys only, so merges compose.
// out may be outputs[0] and out_lse lses[0] (a running result merged into in
// place: each row's inputs are read before it is written); no other overlap.
void merge_attention(const std::vector<const float*>& outputs, const std::vector<const float*>& lses,
                     std::int64_t rows, std::int64_t head_dim, float* out, float* out_lse,
                     const MergeSinks& sinks = {});

}  // namespace fattn
