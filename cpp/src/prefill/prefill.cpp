// The tiled prefill engine. The scalar code here is the model every faster
// path must reproduce bit for bit; it reads top to bottom: stage Q, then per
// K tile: scores, masks, online softmax, P·V; then normalise and store.
#include "fattn/prefill.hpp"

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <limits>
#include <memory>
#include <optional>
#include <type_traits>
#include <vector>

#include "numerics/bf16_dot.hpp"
#include "numerics/dtype_dispatch.hpp"
#include "fattn/parallel.hpp"
#include "prefill/engine.hpp"
#include "runtime/scratch.hpp"
#include "runtime/isa.hpp"
#include "simd/dispatch.hpp"
#include "views/validate.hpp"

namespace fattn {
namespace {

using namespace prefill_detail;

template <class T, class Arith>
void prefill_block(const TensorView& q, const TensorView& k, const TensorView& v, const TensorView& out,
                   const PrefillPlan& p, std::int64_t b, std::int64_t h, std::int64_t q_block, Scratch& w) {
  const std::int64_t D = p.head_dim, BQ = p.geometry.q_tile, BK = p.geometry.k_tile;
  const std::int64_t row0 = q_block * BQ, rows = std::min(BQ, p.q_len - row0);
  const std::int64_t kv_head = h / (p.heads / p.kv_heads);
  const std::int64_t n_tiles = (p.kv_len + BK - 1) / BK;
  // Causal: a block stops at the tile holding its last row's diagonal.
  const std::int64_t tile_limit = p.causal ? causal_tile_limit(row0 + rows, p.causal_offset, BK, n_tiles) : n_tiles;
  // Window: it starts at the tile holding its first row's oldest key.
  const std::int64_t tile_start = window_tile_start(row0, p.causal_offset, p.window, BK);

  const float factor = Arith::template q_factor<T>(p.scale);
  for (std::int64_t r = 0; r < rows; ++r) {
    const T* src = q.row<const T>(b, h, row0 + r);
    for (std::int64_t d = 0; d < D; ++d) w.q[std::size_t(r * D + d)] = Arith::template stage_q<T>(widen(src[d]), factor);
  }
  std::fill(w.o.begin(), w.o.begin() + rows * D, 0.0f);
  std::fill(w.row_max.begin(), w.row_max.begin() + rows, kInitialMax);
  std::fill(w.row_sum.begin(), w.row_sum.begin() + rows, 0.0f);

  for (std::int64_t tile = tile_start; tile < tile_limit; ++tile) {
    const std::uint8_t action = p.blk ? p.blk->at(q_block, tile) : 1;
    if (action == 0) continue;  // every cell blocked: the tile would add exact zeros and rescale by 1
    const std::int64_t key0 = tile * BK, keys = std::min(BK, p.kv_len - key0);
    for (std::int64_t j = 0; j < keys; ++j) {
      const T* k_src = k.row<const T>(b, kv_head, key0 + j);
      const T* v_src = v.row<const T>(b, kv_head, key0 + j);
      for (std::int64_t d = 0; d < D; ++d) {
        w.k[std::size_t(j * D + d)] = widen(k_src[d]);
        w.v[std::size_t(j * D + d)] = widen(v_src[d]);
      }
    }
    for (std::int64_t r = 0; r < rows; ++r) {
      const std::int64_t i = row0 + r;
      float* s = &w.s[std::size_t(r * BK)];
      const float* q_row = &w.q[std::size_t(r * D)];
      // Scores: an f32 multiply-add chain over D in order (each product of
      // two 16-bit values is exact in f32, so only the sums round); bf16
      // takes fattn's bf16 dot product instead (pairs, the second element
      // first, DAZ/FTZ: numerics/bf16_dot.hpp).
      for (std::int64_t j = 0; j < keys; ++j) {
        const float* k_row = &w.k[std::size_t(j * D)];
        float dot = 0.0f;
        if constexpr (std::is_same_v<T, bfloat16>)
          dot = numerics::bf16_dot(q_row, k_row, D);
        else
          for (std::int64_t d = 0; d < D; ++d) dot = std::fma(q_row[d], k_row[d], dot);
        s[j] = p.softcap ? softcap_score(dot, p.softcap_in, p.softcap_out) : Arith::score(dot, p.scale);
      }
      for (std::int64_t j = keys; j < BK; ++j) s[j] = -kInf;  // past Lk
      // Positions: causal (key after the query) and, with a window, keys at
      // or before position - window; in the family's order with the mask.
      auto mask_positions = [&] {
        if (!p.causal) return;
        for (std::int64_t j = 0; j < keys; ++j)
          if (key0 + j > i + p.causal_offset || (p.window && key0 + j <= i + p.causal_offset - p.window))
            s[j] = -kInf;
      };
      if (!Arith::kCausalOverridesMask) mask_positions();
      if (p.mask && action != 2) apply_mask_row<Arith>(*p.mask, b, h, i, key0, keys, s, 1);
      if (Arith::kCausalOverridesMask) mask_positions();
      // Online softmax, one rescale per tile.
      float tile_max = -kInf;
      for (std::int64_t j = 0; j < BK; ++j) tile_max = std::max(tile_max, s[j]);
      const float old_max = w.row_max[std::size_t(r)];
      const float new_max = std::max(old_max, tile_max);
      for (std::int64_t j = 0; j < BK; ++j) s[j] = Arith::exp(s[j] - new_max);  // P stays f32
      const float rescale = Arith::exp(old_max - new_max);
      const std::int64_t group = std::min(Arith::kSumGroup, BK);
      float tile_sum = 0.0f;
      for (std::int64_t g = 0; g < BK; g += group) tile_sum = tile_sum + tree_sum(s + g, group);
      w.row_sum[std::size_t(r)] = w.row_sum[std::size_t(r)] * rescale + tile_sum;
      w.row_max[std::size_t(r)] = new_max;
      float* o = &w.o[std::size_t(r * D)];
      if (rescale != 1.0f)  // x * 1 == x: skipping changes no bit
        for (std::int64_t d = 0; d < D; ++d) o[d] = o[d] * rescale;
      for (std::int64_t j = 0; j < keys; ++j) {
        const float* v_row = &w.v[std::size_t(j * D)];
        const float pj = s[j];
        for (std::int64_t d = 0; d < D; ++d) o[d] = std::fma(pj, v_row[d], o[d]);
      }
    }
  }

  for (std::int64_t r = 0; r < rows; ++r)
    finish_row<T, Arith>(p, out, b, h, row0 + r, w.row_max[std::size_t(r)], w.row_sum[std::size_t(r)],
                         &w.o[std::size_t(r * D)], 1);
}

// ceil(n / d) for n >= 0, d >= 1, without the overflow of (n + d - 1) / d.
std::int64_t ceil_div(std::int64_t n, std::int64_t d) { return n / d + (n % d != 0); }

// The path a plan's rows take and how they split into work items: the
// instruction set chosen for the plan's kernel family (a few rows, f32 or
// 16-bit: runtime/isa.hpp; chosen on the calling thread, whose isa setting
// may be its own), then 32-row groups on a vector path or q_tile blocks on
// the scalar model. Every path gives the scalar model's bits.
struct PrefillPath {
  simd::VectorKernels::PrefillRows rows_fn = nullptr;  // the vector path's entry; null: the scalar model
  std::int64_t rows_per_item = 1;

  template <class T, class Arith>
  static PrefillPath choose(std::int64_t q_len, std::int64_t q_tile) {
    const simd::Family family = q_len <= simd::kShortPrefillRows ? simd::Family::prefill_short
                                : std::is_same_v<T, float>        ? simd::Family::prefill_f32
                                                                  : simd::Family::prefill;
    PrefillPath path;
    const simd::Isa isa = simd::isa_for(family);
    if (isa != simd::Isa::scalar) {
      // 32 rows per block, one per vector lane (group_blocks may put several
      // in an item); each row keeps its own block's tile range, so the
      // result is the scalar model's to the bit.
      path.rows_fn = simd::vector_kernels(isa).prefill_rows<T, Arith>();
      path.rows_per_item = kSimdRows;
    } else {
      path.rows_per_item = q_tile;
    }
    return path;
  }
  // Items per (batch item, head).
  std::int64_t blocks(std::int64_t q_len) const { return ceil_div(q_len, rows_per_item); }

  // A vector path's blocks per item: several when the keys span more than
  // one chunk (prefill_chunk_keys; the item's blocks then share each chunk
  // while it is in L2), as long as the items outnumber the threads 4 to 1.
  template <class T>
  void group_blocks(const PrefillPlan& p) {
    if (!rows_fn || p.kv_len <= prefill_chunk_keys<T>(p.head_dim)) return;
    const std::int64_t blocks = ceil_div(p.q_len, kSimdRows), threads = get_num_threads();
    std::int64_t group = kMaxBlocksPerItem;
    while (group > 1 && p.batch * p.heads * ceil_div(blocks, group) < 4 * threads) group /= 2;
    rows_per_item = group * kSimdRows;
  }
};

// One work item of a plan: rows [block * rows_per_item, ...) of head h of
// batch item b. `scratch` is the scalar model's, made on first use (its
// size depends only on the geometry and D).
template <class T, class Arith>
void run_item(const PrefillPath& path, const PrefillPlan& p, const TensorView& out, std::int64_t b, std::int64_t h,
              std::int64_t block, std::optional<Scratch>& scratch) {
  if (path.rows_fn) {
    std::vector<float>& workspace = detail::thread_scratch(detail::ScratchSlot::work);
    const std::int64_t row0 = block * path.rows_per_item;
    path.rows_fn(p.q, p.k, p.v, out, p, b, h, row0, std::min(path.rows_per_item, p.q_len - row0), workspace);
    return;
  }
  if (!scratch) scratch.emplace(p);
  prefill_block<T, Arith>(p.q, p.k, p.v, out, p, b, h, block, *scratch);
}

// One parallel_for over every (b, h, block) item of the plan.
template <class T, class Arith>
void prefill_kernel(const PrefillPlan& p, const TensorView& out) {
  PrefillPath path = PrefillPath::choose<T, Arith>(p.q_len, p.geometry.q_tile);
  path.group_blocks<T>(p);
  const std::int64_t blocks = path.blocks(p.q_len);
  parallel_for(p.batch * p.heads * blocks, 1, [&](std::int64_t begin, std::int64_t end) {
    std::optional<Scratch> scratch;
    for (std::int64_t item = begin; item < end; ++item) {
      const std::int64_t block = item % blocks, h = (item / blocks) % p.heads, b = item / (blocks * p.heads);
      run_item<T, Arith>(path, p, out, b, h, block, scratch);
    }
  });
}

// Rows [row0, row0 + n) of a packed view [1, H, total, D], with its strides
// (no rows: the view's own address, never one past its end).
TensorView packed_rows(const TensorView& t, std::int64_t row0, std::int64_t n) {
  TensorView rows = t;
  if (n > 0) rows.data = static_cast<char*>(t.data) + row0 * t.stride[2] * dtype_size(t.dtype);
  rows.shape[2] = n;
  return rows;
}

// One parallel_for over every sequence's (head, block) items: sequence b's
// items, numbered from first_item[b], run on sequence b's own plan and path,
// so each sequence gets its lone call's bits while the threads share the
// work of all of them.
template <class T, class Arith>
void varlen_kernel(const VarlenPrefillPlan& vp, const TensorView& out) {
  const std::int64_t sequences = vp.sequences(), heads = vp.shared.heads;
  std::vector<PrefillPath> paths(static_cast<std::size_t>(sequences));
  std::vector<std::int64_t> first_item(std::size_t(sequences + 1), 0);
  for (std::int64_t b = 0; b < sequences; ++b) {
    const std::int64_t q_len = vp.q_rows(b);
    paths[std::size_t(b)] = PrefillPath::choose<T, Arith>(q_len, vp.shared.geometry.q_tile);
    first_item[std::size_t(b + 1)] = first_item[std::size_t(b)] + heads * paths[std::size_t(b)].blocks(q_len);
  }
  parallel_for(first_item.back(), 1, [&](std::int64_t begin, std::int64_t end) {
    std::optional<Scratch> scratch;
    for (std::int64_t item = begin; item < end; ++item) {
      // The last sequence whose first item is <= item (empty sequences own no items).
      const std::int64_t b = std::upper_bound(first_item.begin() + 1, first_item.end(), item) - (first_item.begin() + 1);
      const PrefillPlan p = vp.sequence(b);
      const PrefillPath& path = paths[std::size_t(b)];
      const std::int64_t local = item - first_item[std::size_t(b)], blocks = path.blocks(p.q_len);
      run_item<T, Arith>(path, p, packed_rows(out, vp.cu_seqlens_q[std::size_t(b)], p.q_len), 0, local / blocks,
                         local % blocks, scratch);
    }
  });
}

const char* kernel_name(PrefillKernel kernel) { return kernel == PrefillKernel::llamacpp ? "llamacpp" : "candle"; }

void require_kernel(PrefillKernel kernel) {
  require(kernel == PrefillKernel::candle || kernel == PrefillKernel::llamacpp, "kernel: unknown kernel code ",
          int(kernel), " (expected candle or llamacpp)");
}

// Classifying tiles on the mask values as the kernel adds them is what makes
// the tile-skip map exact. Clears `blocked` unless keys [j0, j0 + n) of mask row (b, h, i) all add
// -inf as the kernel adds them (a bool mask adds 0 or -inf, an additive one
// Arith::mask_term of its value), and `zero` unless they all add exactly 0.
// The row's address and element type are resolved once: the blk pass and
// its verification read every element of the tiles they skip.
template <class Arith>
void classify_row(const MaskView& m, std::int64_t b, std::int64_t h, std::int64_t i, std::int64_t j0, std::int64_t n,
                  bool& blocked, bool& zero) {
  const std::int64_t base = m.offset(b, h, i, j0), step = m.stride[3];
  bool all_blocked = true, all_zero = true;
  if (m.kind == MaskKind::boolean) {
    const auto* keep = static_cast<const std::uint8_t*>(m.data) + base;
    for (std::int64_t j = 0; j < n; ++j) {
      all_blocked &= keep[j * step] == 0;
      all_zero &= keep[j * step] != 0;
    }
  } else {
    auto scan = [&](const auto* values, auto to_float) {
      for (std::int64_t j = 0; j < n; ++j) {
        const float x = Arith::mask_term(to_float(values[j * step]));
        all_blocked &= x == -kInf;
        all_zero &= x == 0.0f;
      }
    };
    switch (m.dtype) {
      case DType::f32: scan(static_cast<const float*>(m.data) + base, [](float x) { return x; }); break;
      case DType::f16: scan(static_cast<const std::uint16_t*>(m.data) + base, [](std::uint16_t x) { return f16_to_f32(x); }); break;
      case DType::bf16: scan(static_cast<const std::uint16_t*>(m.data) + base, [](std::uint16_t x) { return bf16_to_f32(x); }); break;
    }
  }
  blocked = blocked && all_blocked;
  zero = zero && all_zero;
}

}  // namespace

PrefillGeometry prefill_geometry(PrefillKernel kernel, std::int64_t head_dim, std::optional<std::int64_t> q_tile,
                                 std::optional<std::int64_t> k_tile) {
  require_kernel(kernel);
  require(head_dim >= 1, "head_dim: must be >= 1, got ", head_dim);
  PrefillGeometry g;
  if (kernel == PrefillKernel::llamacpp) {
    g = {8, 64};
    require(!k_tile || *k_tile == 64, "k_tile: kernel='llamacpp' works on chunks of 64 keys, got ",
            k_tile.value_or(64));
  } else {
    g = head_dim > 256 ? PrefillGeometry{8, 8} : PrefillGeometry{32, 16};
    if (k_tile) {
      require(*k_tile >= 8 && *k_tile <= 1024 && *k_tile % 8 == 0 && (*k_tile & (*k_tile - 1)) == 0,
              "k_tile: must be a power of two from 8 to 1024 (the row sums go in groups of 8), got ", *k_tile);
      g.k_tile = *k_tile;
    }
  }
  if (q_tile) {
    require(*q_tile >= 1 && *q_tile <= 1024, "q_tile: must be from 1 to 1024, got ", *q_tile);
    g.q_tile = *q_tile;
  }
  return g;
}

// The vector paths hold positions in 32-bit lanes: an offset up to 2^30,
// with rows and keys that fit in memory, keeps them there.
constexpr std::int64_t kMaxOffset = std::int64_t(1) << 30;

// Where the plan's query rows sit among its keys, for its q_len and kv_len:
// causal, the causal offset (the alignment's, or q_offset) and the window,
// checked. A varlen call resolves each sequence's plan through this too.
void resolve_positions(PrefillPlan& plan, const PrefillParams& params) {
  plan.causal = params.causal;
  require(params.causal_align == CausalAlign::top_left || params.causal_align == CausalAlign::bottom_right,
          "causal: unknown alignment code ", int(params.causal_align), " (expected top_left or bottom_right)");
  plan.causal_offset = causal_offset(params.causal_align, plan.q_len, plan.kv_len);
  require(params.q_offset >= 0 && params.q_offset <= kMaxOffset, "q_offset: must be an int from 0 to 2^30 (",
          kMaxOffset, "), got ", params.q_offset);
  if (params.q_offset != 0) {
    require(!(params.causal && params.causal_align == CausalAlign::bottom_right),
            "q_offset: cannot be combined with causal='bottom_right', which sets the offset itself (Lk - Lq); "
            "got q_offset = ", params.q_offset);
    plan.causal_offset = params.q_offset;
  }
  if (params.window) {
    require(*params.window >= 1, "window: must be an int >= 1 (the keys a query sees, its own included) or None, got ",
            *params.window);
    plan.causal = true;  // a window implies causal
    // Wider than any query's position + 1: every causal key is inside, which is plain causal.
    const std::int64_t widest = std::max<std::int64_t>(plan.causal_offset + plan.q_len, 0) + 1;
    plan.window = std::min(*params.window, widest);
  }
}

// Issue 19's score variants (softcap, sinks), checked and put in the kernel's units.
void resolve_scores(PrefillPlan& plan, const PrefillParams& params) {
  require(std::isfinite(params.softcap) && params.softcap >= 0.0f,
          "softcap: must be finite and >= 0 (0 = off), got ", params.softcap);
  if (params.softcap > 0.0f) {
    plan.softcap = true;
    if (params.kernel == PrefillKernel::llamacpp) {  // natural units; the scale goes into the tanh's argument
      plan.softcap_out = params.softcap;
      plan.softcap_in = plan.scale / params.softcap;
    } else {  // log2 units: the dot already carries scale * log2(e) (in Q)
      plan.softcap_out = float(double(params.softcap) * numerics::kLog2e);
      plan.softcap_in = float(1.0 / (double(params.softcap) * numerics::kLog2e));
      require(std::isfinite(plan.softcap_out) && plan.softcap_in > 0.0f,
              "softcap: must be within float32's range in log2 units (softcap * log2(e)), got ", params.softcap);
    }
  }
  detail::require_sinks(params.sinks.data(), std::int64_t(params.sinks.size()), plan.heads);
  if (!params.sinks.empty()) {
    plan.sink_terms.resize(params.sinks.size());
    for (std::size_t h = 0; h < params.sinks.size(); ++h) {
      const float sink = params.sinks[h];
      plan.sink_terms[h] = params.kernel == PrefillKernel::llamacpp ? sink : CandleArithmetic::sink_term(sink);
      require(sink == -kInf || std::isfinite(plan.sink_terms[h]),
              "sinks: ", sink, " for head ", h, " overflows float32 in log2 units");
    }
  }
}

PrefillPlan plan_flash_attn_prefill(const TensorView& q, const TensorView& k, const TensorView& v,
                                    const MaskView* mask, const BlkView* blk, const PrefillParams& params) {
  using namespace detail;
  validate_attention_inputs(q, k, v);
  require_kernel(params.kernel);
  require(params.nsg == 4 || params.nsg == 8, "nsg: must be 4 or 8, got ", params.nsg);
  if (params.kernel == PrefillKernel::llamacpp)
    require(q.head_dim() == 512, "q: head dim D must be 512 for kernel='llamacpp', got ", q.head_dim());
  require(q.head_dim() <= 4096, "q: head dim D must be <= 4096, got ", q.head_dim());
  PrefillPlan plan;
  static_cast<AttentionShape&>(plan) = {q.batch(), q.heads(), k.heads(), q.length(), k.length(), q.head_dim()};
  plan.params = params;
  plan.q = q;
  plan.k = k;
  plan.v = v;
  plan.geometry = prefill_geometry(params.kernel, q.head_dim(), params.q_tile, params.k_tile);
  plan.scale = resolve_scale(params.scale, q.head_dim());
  resolve_positions(plan, params);
  resolve_scores(plan, params);
  const PrefillGeometry& geometry = plan.geometry;
  const std::int64_t q_len = plan.q_len, kv_len = plan.kv_len;
  if (mask) plan.mask = broadcast_mask(*mask, {q.batch(), q.heads(), q_len, kv_len}, "mask");
  if (blk) {
    require(mask != nullptr, "blk: a tile-skip map needs the mask it was built from (mask is None)");
    const std::int64_t rows = ceil_div(q_len, geometry.q_tile), cols = ceil_div(kv_len, geometry.k_tile);
    require(blk->rows == rows && blk->cols == cols, "blk: shape must be [ceil(Lq/", geometry.q_tile, "), ceil(Lk/",
            geometry.k_tile, ")] = [", rows, ", ", cols, "] for kernel='", kernel_name(params.kernel), "', got [",
            blk->rows, ", ", blk->cols, "]");
    require(blk->data != nullptr, "blk: data pointer is null");
    std::int64_t last_row = 0;
    require(blk->row_stride >= -1 && !__builtin_mul_overflow(rows - 1, blk->row_stride, &last_row),
            "blk: row stride must be -1 (C-contiguous) or >= 0 with rows * row stride in 64 bits, got ",
            blk->row_stride);
    std::int64_t cells = 0;
    require(!__builtin_mul_overflow(rows, cols, &cells), "blk: [", rows, ", ", cols, "] overflows 64 bits");
    for (std::int64_t t = 0; t < cells; ++t) {
      const int entry = blk->at(t / cols, t % cols);
      require(entry <= 2, "blk: entries must be 0, 1 or 2, got ", entry, " at flat index ", t);
    }
    if (params.verify_blk) {
      const std::unique_ptr<std::uint8_t[]> expected(new std::uint8_t[std::size_t(cells)]);
      flash_attn_prefill_blk(*plan.mask, params.kernel, geometry, expected.get(), rows, cols);
      for (std::int64_t t = 0; t < cells; ++t) {
        const int entry = blk->at(t / cols, t % cols), want = expected[std::size_t(t)];
        require(entry == want, "blk: tile [", t / cols, ", ", t % cols, "] is ", entry, " but this mask gives ", want,
                " (a map from another mask, kernel or tile geometry; verify_blk=False skips this check)");
      }
    }
    plan.blk = *blk;
  }
  return plan;
}

void run(const PrefillPlan& plan, const TensorView& out, const TensorView* lse) {
  using namespace detail;
  validate_output(out, "out", plan.out_shape(), plan.out_dtype(), true);
  PrefillPlan p = plan;  // the kernels read the LSE target from the plan
  if (lse) {
    validate_view(*lse, "lse");
    require_dtype(lse->dtype == DType::f32, "lse: dtype must be float32, got ", lse->dtype);
    require(lse->shape == plan.lse_shape(), "lse: shape must be [B, H, Lq] = [", plan.batch, ", ", plan.heads, ", ",
            plan.q_len, "]");
    require_writable(*lse, "lse");
    p.lse = *lse;
  } else {
    p.lse.reset();
  }
  dispatch_dtype(p.q.dtype, [&](auto tag) {
    using T = decltype(tag);
    if (p.params.kernel == PrefillKernel::llamacpp)
      prefill_kernel<T, LlamaCppArithmetic>(p, out);
    else
      prefill_kernel<T, CandleArithmetic>(p, out);
  });
}

void flash_attn_prefill(const TensorView& q, const TensorView& k, const TensorView& v, const TensorView& out,
                        const MaskView* mask, const BlkView* blk, const TensorView* lse, const PrefillParams& params) {
  // The plan's blk check reads the mask and the map; this call promises to
  // touch no data when any argument is bad, out included, so out's view is
  // checked first (cheaply; run checks it against the plan again).
  validate_view(q, "q");
  detail::validate_output(out, "out", q.shape, q.dtype, true);
  run(plan_flash_attn_prefill(q, k, v, mask, blk, params), out, lse);
}

PrefillBlkPlan plan_flash_attn_prefill_blk(const MaskView& mask, PrefillKernel kernel,
                                          const PrefillGeometry& geometry) {
  require_kernel(kernel);
  require(geometry.q_tile >= 1 && geometry.k_tile >= 1, "geometry: tiles must be >= 1, got q_tile = ",
          geometry.q_tile, ", k_tile = ", geometry.k_tile);
  for (int a = 0; a < 4; ++a) require(mask.shape[a] >= 1, "mask: every extent must be > 0, got ", mask.shape[a]);
  // The mask covers its own shape: validate it as a mask over exactly that.
  validate_mask(mask, mask.shape, "mask");
  const std::int64_t rows = ceil_div(mask.shape[2], geometry.q_tile), cols = ceil_div(mask.shape[3], geometry.k_tile);
  std::int64_t cells = 0;
  require(!__builtin_mul_overflow(rows, cols, &cells), "blk: output size [", rows, ", ", cols,
          "] overflows 64 bits");
  return PrefillBlkPlan{mask, kernel, geometry, rows, cols};
}

void flash_attn_prefill_blk(const MaskView& mask, PrefillKernel kernel, const PrefillGeometry& geometry,
                            std::uint8_t* out, std::int64_t rows, std::int64_t cols) {
  const PrefillBlkPlan plan = plan_flash_attn_prefill_blk(mask, kernel, geometry);
  require(rows == plan.rows && cols == plan.cols, "blk: output must be [", plan.rows, ", ", plan.cols, "], got [",
          rows, ", ", cols, "]");
  run(plan, out);
}

void run(const PrefillBlkPlan& plan, std::uint8_t* out) {
  require(out != nullptr, "blk: output pointer is null");
  const MaskView& mask = plan.mask;
  const PrefillKernel kernel = plan.kernel;
  const PrefillGeometry& geometry = plan.geometry;
  const std::int64_t cols = plan.cols, cells = plan.rows * plan.cols;
  const std::int64_t batch = mask.shape[0], heads = mask.shape[1], q_len = mask.shape[2], k_len = mask.shape[3];
  // Broadcast axes (stride 0) need visiting once only.
  const std::int64_t b_count = mask.stride[0] == 0 ? 1 : batch, h_count = mask.stride[1] == 0 ? 1 : heads;
  parallel_for(cells, 16, [&](std::int64_t begin, std::int64_t end) {
    for (std::int64_t t = begin; t < end; ++t) {
      const std::int64_t qt = t / cols, kt = t % cols;
      // Tile bounds without overflow: i0, j0 < the extent; the tiles may be larger.
      const std::int64_t i0 = qt * geometry.q_tile, i1 = i0 + std::min(q_len - i0, geometry.q_tile);
      const std::int64_t j0 = kt * geometry.k_tile;
      if (geometry.k_tile > k_len - j0) {  // the partial right edge always takes the full path
        out[t] = 1;
        continue;
      }
      bool all_blocked = true, all_zero = true;
      for (std::int64_t b = 0; b < b_count && (all_blocked || all_zero); ++b)
        for (std::int64_t h = 0; h < h_count && (all_blocked || all_zero); ++h)
          for (std::int64_t i = i0; i < i1 && (all_blocked || all_zero); ++i) {
            if (kernel == PrefillKernel::llamacpp)
              classify_row<LlamaCppArithmetic>(mask, b, h, i, j0, geometry.k_tile, all_blocked, all_zero);
            else
              classify_row<CandleArithmetic>(mask, b, h, i, j0, geometry.k_tile, all_blocked, all_zero);
          }
      out[t] = all_blocked ? 0 : all_zero ? 2 : 1;
    }
  });
}

// --- varlen -----------------------------------------------------------------------

namespace {

// A packed array [1, H, total, D], checked as any view; with no rows it is
// checked as one dense row (nothing is read or written through it, and its
// strides may be anything: NumPy gives an empty array strides of 0).
TensorView with_a_row(TensorView t) {
  if (t.shape[2] != 0) return t;
  t.shape[2] = 1;
  std::int64_t row = 0;
  if (!__builtin_mul_overflow(t.shape[1], t.shape[3], &row)) t.stride = {row, t.shape[3], row, 1};
  return t;
}

void validate_packed(const TensorView& t, const char* name, const char* total_name) {
  validate_view(with_a_row(t), name);
  require(t.batch() == 1, name, ": packed sequences are read as [1, H, ", total_name, ", D] (a batch of 1), got B = ",
          t.batch());
}

// cu_seqlens: B + 1 offsets, 0 first, non-decreasing, `total` last; each
// sequence within the vector lanes' positions (kMaxOffset).
void validate_cu_seqlens(const std::int64_t* cu, std::int64_t count, const char* name, std::int64_t total,
                         const char* total_name) {
  require(count >= 1, name, ": must have B + 1 >= 1 entries, got ", count);
  require(cu != nullptr, name, ": data pointer is null");
  require(cu[0] == 0, name, ": must start at 0, got ", cu[0]);
  for (std::int64_t i = 1; i < count; ++i) {
    require(cu[i] >= cu[i - 1], name, ": must be non-decreasing, got ", cu[i - 1], " then ", cu[i], " at index ", i);
    require(cu[i] - cu[i - 1] <= kMaxOffset, name, ": sequence ", i - 1, " has ", cu[i] - cu[i - 1],
            " rows, more than 2^30 (", kMaxOffset, ")");
  }
  require(cu[count - 1] == total, name, ": the last entry must equal the packed rows (", total_name, " = ", total,
          "), got ", cu[count - 1]);
}

// An output of the packed call: validate_output, with no rows checked as one
// row (nothing is written).
void validate_packed_output(const TensorView& t, const char* name, std::array<std::int64_t, 4> shape, DType dtype,
                            bool dtype_of_q, const char* of) {
  const bool no_rows = shape[2] == 0 && t.shape[2] == 0;
  if (no_rows) shape[2] = 1;
  detail::validate_output(no_rows ? with_a_row(t) : t, name, shape, dtype, dtype_of_q, of);
}

}  // namespace

PrefillPlan VarlenPrefillPlan::sequence(std::int64_t b) const {
  PrefillPlan p = shared;
  const std::int64_t q0 = cu_seqlens_q[std::size_t(b)], k0 = cu_seqlens_k[std::size_t(b)];
  p.q_len = q_rows(b);
  p.kv_len = kv_rows(b);
  p.q = packed_rows(shared.q, q0, p.q_len);
  p.k = packed_rows(shared.k, k0, p.kv_len);
  p.v = packed_rows(shared.v, k0, p.kv_len);
  if (shared.lse) p.lse = packed_rows(*shared.lse, q0, p.q_len);
  resolve_positions(p, p.params);  // this sequence's causal offset and window
  return p;
}

VarlenPrefillPlan plan_flash_attn_varlen(const TensorView& q, const TensorView& k, const TensorView& v,
                                         const std::int64_t* cu_seqlens_q, std::int64_t cu_seqlens_q_count,
                                         const std::int64_t* cu_seqlens_k, std::int64_t cu_seqlens_k_count,
                                         const VarlenPrefillParams& params) {
  validate_packed(q, "q", "total_q");
  validate_packed(k, "k", "total_k");
  validate_packed(v, "v", "total_k");
  // In the packed arrays' own terms ([total, H, D]); the prefill's plan checks the rest.
  require(k.head_dim() == q.head_dim(), "k: head dim D (q.shape[2]) must be ", q.head_dim(), ", got ", k.head_dim());
  require(v.shape == k.shape, "v: shape must equal k's (total_k, H_kv, D) = (", k.length(), ", ", k.heads(), ", ",
          k.head_dim(), "), got (", v.length(), ", ", v.heads(), ", ", v.head_dim(), ")");
  require(params.q_offset == 0, "q_offset: must be 0 for a varlen call (each sequence's causal alignment sets its "
          "offset), got ", params.q_offset);
  VarlenPrefillPlan plan;
  // Every other rule is the prefill's: its plan over the packed arrays (the
  // positions it resolves are the totals'; sequence(b) resolves each one's).
  plan.shared = plan_flash_attn_prefill(with_a_row(q), with_a_row(k), with_a_row(v), nullptr, nullptr, params);
  plan.shared.q = q;
  plan.shared.k = k;
  plan.shared.v = v;
  plan.shared.q_len = q.length();
  plan.shared.kv_len = k.length();
  validate_cu_seqlens(cu_seqlens_q, cu_seqlens_q_count, "cu_seqlens_q", q.length(), "total_q");
  require(cu_seqlens_k_count == cu_seqlens_q_count, "cu_seqlens_k: must have as many entries as cu_seqlens_q (B + 1 = ",
          cu_seqlens_q_count, "), got ", cu_seqlens_k_count);
  validate_cu_seqlens(cu_seqlens_k, cu_seqlens_k_count, "cu_seqlens_k", k.length(), "total_k");
  plan.cu_seqlens_q.assign(cu_seqlens_q, cu_seqlens_q + cu_seqlens_q_count);
  plan.cu_seqlens_k.assign(cu_seqlens_k, cu_seqlens_k + cu_seqlens_k_count);
  return plan;
}

void run(const VarlenPrefillPlan& plan, const TensorView& out, const TensorView* lse) {
  validate_packed_output(out, "out", plan.out_shape(), plan.out_dtype(), true, "q's");
  VarlenPrefillPlan p = plan;  // the kernels read the LSE target from the plan
  p.shared.lse.reset();
  if (lse) {
    validate_packed_output(*lse, "lse", plan.lse_shape(), DType::f32, false, "[1, H, total_q, 1] =");
    p.shared.lse = *lse;
  }
  detail::dispatch_dtype(p.shared.q.dtype, [&](auto tag) {
    using T = decltype(tag);
    if (p.shared.params.kernel == PrefillKernel::llamacpp)
      varlen_kernel<T, LlamaCppArithmetic>(p, out);
    else
      varlen_kernel<T, CandleArithmetic>(p, out);
  });
}

void flash_attn_varlen(const TensorView& q, const TensorView& k, const TensorView& v, const TensorView& out,
                       const std::int64_t* cu_seqlens_q, std::int64_t cu_seqlens_q_count,
                       const std::int64_t* cu_seqlens_k, std::int64_t cu_seqlens_k_count, const TensorView* lse,
                       const VarlenPrefillParams& params) {
  run(plan_flash_attn_varlen(q, k, v, cu_seqlens_q, cu_seqlens_q_count, cu_seqlens_k, cu_seqlens_k_count, params),
      out, lse);
}

}  // namespace fattn
