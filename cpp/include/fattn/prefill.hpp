#pragma once
// Tiled prefill (flash attention with online softmax), seeds 000 and 001.
//
// One engine serves every entry point of the two seed families; what differs
// between them is data: a tile geometry and an arithmetic policy (where the
// scale is applied and rounded, exp or exp2, how the mask enters, how the
// row is normalised). docs/numerics.md, "Tiled prefill", has the steps.
#include <cstdint>
#include <optional>
#include <vector>

#include "fattn/plan.hpp"
#include "fattn/tensor.hpp"

namespace fattn {

enum class PrefillKernel : std::uint8_t {
  candle = 0,    // candle/MLX-derived flash_attn_prefill.metal (D = 64, 256, 512 and any other)
  llamacpp = 1,  // llama.cpp-derived flash_attn_prefill_d512.metal (D = 512 only)
};

// Rows of Q per block (BQ) and keys per tile (BK). BK sets where the online
// softmax rescales, so it is part of the arithmetic; BQ only sets which
// tiles a causal block visits, which changes no result.
struct PrefillGeometry {
  std::int64_t q_tile = 0;
  std::int64_t k_tile = 0;
};

// The seed's geometry for (kernel, head_dim): candle D <= 256 -> (32, 16),
// candle D > 256 -> (8, 8); llamacpp -> (8, 64). Explicit tiles override
// (k_tile must be a multiple of 8: the softmax sums go in groups of 8).
PrefillGeometry prefill_geometry(PrefillKernel kernel, std::int64_t head_dim,
                                 std::optional<std::int64_t> q_tile = {}, std::optional<std::int64_t> k_tile = {});

struct PrefillParams {
  std::optional<float> scale;  // default 1/sqrt(D) in f32
  bool causal = false;         // top-left aligned by default: query i sees keys 0..i
  CausalAlign causal_align = CausalAlign::top_left;
  PrefillKernel kernel = PrefillKernel::candle;
  std::int64_t nsg = 8;        // llamacpp: simdgroups per threadgroup, 4 or 8 (same results)
  std::optional<std::int64_t> q_tile, k_tile;  // geometry overrides
  // With a blk: check it against the map this mask, kernel and geometry give
  // (one pass over the mask) and throw on a difference, so a stale map cannot
  // skip tiles that the mask does not block.
  bool verify_blk = true;
  // Issue 19's variants (docs/numerics.md, "Tiled prefill", variants):
  // query row i sits at absolute position q_offset + i (keys at 0..Lk-1), so
  // causal means key j <= q_offset + i (top_left only: bottom_right sets the
  // offset itself, and the two together are an error).
  std::int64_t q_offset = 0;
  // A sliding window of W >= 1 keys: key j is seen iff pos - W < j <= pos
  // (pos = the query's position); implies causal. Tiles wholly outside a
  // block's window are not visited.
  std::optional<std::int64_t> window;
  // > 0: score <- softcap * tanh(score / softcap) on the scaled score, before
  // the masks (fattn's own tanh, numerics/tanh.hpp). 0 = off.
  float softcap = 0.0f;
  // Empty, or one learned logit per query head, in the units of the scaled
  // scores: it joins the softmax denominator only, after the last key; -inf
  // means none for that head. The LSE stays the one over the keys.
  std::vector<float> sinks;
};

// The tile-skip map: one byte per (q tile, k tile), row-major.
// 0 = skip the tile, 2 = skip only the mask add, 1 = full work.
struct BlkView {
  const std::uint8_t* data = nullptr;
  std::int64_t rows = 0, cols = 0;
  std::int64_t row_stride = -1;  // bytes from one row to the next; -1 = cols (C-contiguous)
  std::uint8_t at(std::int64_t r, std::int64_t c) const { return data[r * (row_stride < 0 ? cols : row_stride) + c]; }
};

// A checked prefill call (fattn/plan.hpp): the inputs, the parameters as
// given, and what they resolve to. kv_len is k's length (every key is read).
struct PrefillPlan : AttentionShape {
  PrefillParams params;
  TensorView q, k, v;
  std::optional<MaskView> mask;  // broadcast axes have stride 0
  std::optional<BlkView> blk;
  PrefillGeometry geometry;
  float scale = 0.0f;  // params.scale, or 1/sqrt(D) in f32
  bool causal = false;
  std::int64_t causal_offset = 0;  // with causal, row i sees keys j <= i + causal_offset
  std::int64_t window = 0;         // > 0 (with causal): row i sees keys j > i + causal_offset - window only
  // softcap on: score = softcap_out * tanh(dot * softcap_in), in the kernel's
  // score units (candle: log2 units, from the pre-scaled Q; llamacpp: the scale folded into softcap_in).
  bool softcap = false;
  float softcap_in = 0.0f, softcap_out = 0.0f;
  // params.sinks in the kernel's score units (candle: f32(log2(e) * sink)); empty = none.
  std::vector<float> sink_terms;
  // Set by run() on its own copy: where the LSE goes, if asked for.
  std::optional<TensorView> lse;

  // The outputs: out has q's shape and dtype; the optional LSE is f32 [B, H, Lq, 1].
  std::array<std::int64_t, 4> out_shape() const { return q.shape; }
  DType out_dtype() const { return q.dtype; }
  std::array<std::int64_t, 4> lse_shape() const { return {batch, heads, q_len, 1}; }
};

// q [B, H, Lq, D]; k, v [B, H_kv, Lk, D]; all one dtype. mask (optional)
// covers [B, H, Lq, Lk]: each extent equal to the target's, or 1 or stride 0
// to broadcast; blk (optional, needs a mask) is [ceil(Lq/BQ), ceil(Lk/BK)]
// and is checked against the mask (params.verify_blk: the one step of a
// plan that reads data, the mask's and the map's). Allocates nothing but the
// verification's map. Throws InvalidArgument / InvalidDType.
PrefillPlan plan_flash_attn_prefill(const TensorView& q, const TensorView& k, const TensorView& v,
                                    const MaskView* mask = nullptr, const BlkView* blk = nullptr,
                                    const PrefillParams& params = {});
// out: the plan's out_shape()/out_dtype(); lse (optional): an f32 view of
// lse_shape() that receives the natural-log log-sum-exp of each row (-inf
// for a row that sees no key). Both writable, one address per element.
void run(const PrefillPlan& plan, const TensorView& out, const TensorView* lse = nullptr);

// plan_flash_attn_prefill + run, with out's view checked before the plan
// (whose blk check reads the mask): a call with any bad argument reads no data.
void flash_attn_prefill(const TensorView& q, const TensorView& k, const TensorView& v, const TensorView& out,
                        const MaskView* mask, const BlkView* blk, const TensorView* lse,
                        const PrefillParams& params = {});

// --- Packed variable-length prefill (issue 21) ---------------------------------
//
// B sequences packed along the rows, flash-attention's varlen layout:
// q [total_q, H, D], k and v [total_k, H_kv, D], sequence b at rows
// cu_seqlens_q[b]..cu_seqlens_q[b+1] of q and cu_seqlens_k[b]..cu_seqlens_k[b+1]
// of k and v. The views read each packed array as [1, H, total, D] (a
// seq-major view with a batch of 1: seq_major_view(data, dtype, {1, total, H, D})).
// Each sequence's rows are exactly flash_attn_prefill's on that sequence alone
// (its rows as views with the same strides, the same params), bit for bit;
// a sequence with no keys gives 0 and LSE -inf, one with no queries nothing.

// PrefillParams with flash-attention's varlen alignment as the default:
// causal is bottom-right per sequence (query i of a sequence of Lq queries and
// Lk keys sees keys j <= Lk - Lq + i), and a window counts back from there.
// q_offset must stay 0 (each sequence's alignment sets its offset).
struct VarlenPrefillParams : PrefillParams {
  VarlenPrefillParams() { causal_align = CausalAlign::bottom_right; }
};

// A checked varlen call. `shared` is what every sequence's plan shares
// (params, geometry, scale, softcap, sink terms) over the packed views, with
// q_len/kv_len the packed totals; sequence(b) is sequence b's own plan.
struct VarlenPrefillPlan {
  PrefillPlan shared;
  std::vector<std::int64_t> cu_seqlens_q, cu_seqlens_k;  // B + 1 entries each, checked

  std::int64_t sequences() const { return std::int64_t(cu_seqlens_q.size()) - 1; }
  std::int64_t q_rows(std::int64_t b) const { return cu_seqlens_q[std::size_t(b + 1)] - cu_seqlens_q[std::size_t(b)]; }
  std::int64_t kv_rows(std::int64_t b) const { return cu_seqlens_k[std::size_t(b + 1)] - cu_seqlens_k[std::size_t(b)]; }
  // Sequence b alone, as plan_flash_attn_prefill plans it on its rows
  // (batch 1; with lse when the call has one).
  PrefillPlan sequence(std::int64_t b) const;
  // out: q's packed view [1, H, total_q, D] and dtype; LSE f32 [1, H, total_q, 1].
  std::array<std::int64_t, 4> out_shape() const { return shared.q.shape; }
  DType out_dtype() const { return shared.q.dtype; }
  std::array<std::int64_t, 4> lse_shape() const { return {1, shared.heads, shared.q_len, 1}; }
};

// q [1, H, total_q, D]; k, v [1, H_kv, total_k, D] (a total may be 0); one
// dtype. cu_seqlens_q and cu_seqlens_k: B + 1 entries each (B >= 0),
// starting at 0, non-decreasing, ending at total_q and total_k; each
// sequence at most 2^30 rows (positions live in 32-bit lanes). Every rule of
// plan_flash_attn_prefill holds for the params (kernel, nsg, D, tiles,
// scale, window, softcap, sinks); q_offset must be 0. Reads no tensor data.
// Throws InvalidArgument / InvalidDType.
VarlenPrefillPlan plan_flash_attn_varlen(const TensorView& q, const TensorView& k, const TensorView& v,
                                         const std::int64_t* cu_seqlens_q, std::int64_t cu_seqlens_q_count,
                                         const std::int64_t* cu_seqlens_k, std::int64_t cu_seqlens_k_count,
                                         const VarlenPrefillParams& params = {});
// out: out_shape()/out_dtype(); lse (optional): f32 lse_shape(). One
// parallel_for over every sequence's (head, query block) items.
void run(const VarlenPrefillPlan& plan, const TensorView& out, const TensorView* lse = nullptr);
// plan_flash_attn_varlen + run.
void flash_attn_varlen(const TensorView& q, const TensorView& k, const TensorView& v, const TensorView& out,
                       const std::int64_t* cu_seqlens_q, std::int64_t cu_seqlens_q_count,
                       const std::int64_t* cu_seqlens_k, std::int64_t cu_seqlens_k_count, const TensorView* lse,
                       const VarlenPrefillParams& params = {});

// Builds the tile-skip map for `mask` (shape [B, H, Lq, Lk], broadcasting
// allowed; a tile is classified over every batch and head) for the given
// kernel and geometry into out[rows * cols]. A tile is 0 only when every
// cell is blocked as the kernel sees it (-inf after the kernel's own mask
// transform, or bool false), 2 only when every cell adds exactly zero, so
// using the map never changes a bit of the output.
void flash_attn_prefill_blk(const MaskView& mask, PrefillKernel kernel, const PrefillGeometry& geometry,
                            std::uint8_t* out, std::int64_t rows, std::int64_t cols);

// The same in two steps (fattn/plan.hpp): the checked mask, kernel and
// geometry with the map's extents; then the map into out[rows * cols].
struct PrefillBlkPlan {
  MaskView mask;
  PrefillKernel kernel = PrefillKernel::candle;
  PrefillGeometry geometry;
  std::int64_t rows = 0, cols = 0;
};
PrefillBlkPlan plan_flash_attn_prefill_blk(const MaskView& mask, PrefillKernel kernel,
                                          const PrefillGeometry& geometry);
void run(const PrefillBlkPlan& plan, std::uint8_t* out);

}  // namespace fattn
