// Vec decode: the scalar model. Per group, chunks of 32 positions in the
// order the seed deals them; per chunk, the lane-structured dot products,
// the implicit mask, one online-softmax rescale and the chunk's P·V.
#include "fattn/decode.hpp"

#include <algorithm>
#include <atomic>
#include <cfloat>
#include <cmath>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "numerics/dtype_dispatch.hpp"
#include "fattn/parallel.hpp"
#include "decode/engine.hpp"
#include "quant/blocks.hpp"
#include "runtime/scratch.hpp"
#include "runtime/isa.hpp"
#include "simd/dispatch.hpp"
#include "views/validate.hpp"

namespace fattn {
namespace {

using namespace decode_detail;

// q·k as the seed's simdgroup forms it: lane t owns the float4 groups t,
// t+32, ... of D and adds each group's dot(k4, q4) = (k0 q0 + k1 q1) +
// (k2 q2 + k3 q3) (products rounded; the order inside dot() is the GPU's,
// this one vectorises) to its running sum in order; the 32 lane sums then
// meet in a balanced tree.
float lane_dot(const float* k, const float* q, std::int64_t head_dim) {
  float lane[kLanes] = {};
  for (std::int64_t base = 0; base < head_dim; base += 4 * kLanes)
    for (std::int64_t t = 0; t < kLanes && base + 4 * t < head_dim; ++t) {
      const float* k4 = k + base + 4 * t;
      const float* q4 = q + base + 4 * t;
      lane[t] = lane[t] + ((k4[0] * q4[0] + k4[1] * q4[1]) + (k4[2] * q4[2] + k4[3] * q4[3]));
    }
  return tree_sum<kLanes>(lane);
}

std::int64_t reduce_lanes(std::int64_t nwg) {  // the reduce's lanes: a power of two >= 32
  std::int64_t n = kLanes;
  while (n < nwg) n *= 2;
  return n;
}

// Row `row_slot` of (b, h) of a cache as exact f32 values: a dense row
// widened, a quantized row dequantized (quant/blocks.hpp). Every later step
// sees only these values, so a cache's type changes what is read, never the
// arithmetic.
void widen_row(const CacheView& c, std::int64_t b, std::int64_t h, std::int64_t row_slot, std::int64_t D,
               float* out) {
  if (c.quant) {
    quant::dequantize_row(c.quant->format, c.quant_row(b, h, row_slot), D, out);
    return;
  }
  detail::dispatch_dtype(c.dense.dtype, [&](auto tag) {
    const auto* src = c.dense_row<decltype(tag)>(b, h, row_slot);
    for (std::int64_t d = 0; d < D; ++d) out[d] = widen(src[d]);
  });
}

// One (batch, KV head, group): every query head of the KV head's group, so a
// chunk of K/V is widened once for all of them.
void decode_group(const TensorView& q, const CacheView& k, const CacheView& v, const TensorView& o_part,
                  const TensorView& s_part, const TensorView& m_part, const DecodePlan& p, std::int64_t b,
                  std::int64_t kv_head, std::int64_t g, std::vector<float>& work) {
  const std::int64_t D = p.head_dim, group = p.heads / p.kv_heads, C = kDecodeChunk;
  // work: staged Q (group x D), K and V chunks (C x D each), O (group x D), chunk sum lo (D)
  work.resize(std::size_t((2 * group + 2 * C + 1) * D));
  float* qh = work.data();
  float* kc = qh + group * D;
  float* vc = kc + C * D;
  float* o = vc + C * D;
  float* lo = o + group * D;
  std::vector<float> row_max(std::size_t(group), kInitialMax), row_sum(std::size_t(group), 0.0f);
  for (std::int64_t r = 0; r < group; ++r) {
    const float* src = q.row<const float>(b, kv_head * group + r, 0);
    for (std::int64_t d = 0; d < D; ++d) qh[r * D + d] = f16_to_f32(f32_to_f16(src[d]));  // Q staged as half
  }
  std::fill(o, o + group * D, 0.0f);

  float s[kDecodeChunk], w[kDecodeChunk];
  for (std::int64_t chunk = g; chunk * C < p.kv_len; chunk += p.nwg) {
    const std::int64_t p0 = chunk * C, valid = std::min(C, p.kv_len - p0);
    if (p0 + valid <= p.window_start) continue;  // all 32 masked: the seed skips the chunk
    for (std::int64_t j = 0; j < valid; ++j) {   // never past kv_seq_len
      widen_row(k, b, kv_head, slot(p, p0 + j), D, kc + j * D);
      widen_row(v, b, kv_head, slot(p, p0 + j), D, vc + j * D);
    }
    for (std::int64_t r = 0; r < group; ++r) {
      for (std::int64_t j = 0; j < C; ++j) {
        if (j >= valid) {  // past kv_seq_len: weight exactly 0, not read
          s[j] = -kInf;
          continue;
        }
        const float dot = lane_dot(kc + j * D, qh + r * D, D);
        const float mask = p0 + j < p.window_start ? kMaskedScore : 0.0f;
        s[j] = p.softcap > 0.0f ? p.softcap * std::tanh(dot * p.scale_over_cap) + mask : std::fma(dot, p.scale, mask);
      }
      float chunk_max = -kInf;
      for (std::int64_t j = 0; j < C; ++j) chunk_max = std::max(chunk_max, s[j]);
      const float old_max = row_max[std::size_t(r)];
      const float new_max = std::max(old_max, chunk_max);
      const float rescale = simd::exp_f32(old_max - new_max);
      for (std::int64_t j = 0; j < C; ++j) w[j] = simd::exp_f32(s[j] - new_max);
      row_sum[std::size_t(r)] = row_sum[std::size_t(r)] * rescale + tree_sum<kDecodeChunk>(w);
      row_max[std::size_t(r)] = new_max;
      // The chunk's P·V goes into its own accumulator, then into O.
      std::fill(lo, lo + D, 0.0f);
      for (std::int64_t j = 0; j < valid; ++j)
        for (std::int64_t d = 0; d < D; ++d) lo[d] = std::fma(vc[j * D + d], w[j], lo[d]);
      float* o_row = o + r * D;
      for (std::int64_t d = 0; d < D; ++d) o_row[d] = o_row[d] * rescale + lo[d];
    }
  }
  if (g == 0)  // the sinks join group 0 once it has seen its chunks (even none)
    for (std::int64_t r = 0; r < group; ++r)
      fold_sink(p, kv_head * group + r, row_max[std::size_t(r)], row_sum[std::size_t(r)], o + r * D);
  for (std::int64_t r = 0; r < group; ++r) {
    const std::int64_t h = kv_head * group + r;
    float* dst = o_part.row<float>(b, h, g);
    std::copy(o + r * D, o + (r + 1) * D, dst);
    *s_part.row<float>(b, h, g) = row_sum[std::size_t(r)];
    *m_part.row<float>(b, h, g) = row_max[std::size_t(r)];
  }
}

// The reduce for one (batch, head): M* = max M_g, w_g = exp(M_g - M*),
// S* = tree(S_g w_g), out = tree(O_g w_g) * (S* == 0 ? 0 : 1/S*). The trees
// run over blocks of D at once (bottom-up pairs, the same sums as tree_sum),
// which the compiler turns into vector adds. Groups from `live` on hold the
// untouched state (O = 0, S = 0, M = the initial max), whose terms are +0:
// they are not read, and a pair with a subtree wholly of them is `x + 0`
// (which, like the full tree, still turns a -0 into +0).
void reduce_row(const TensorView& o, const TensorView& s, const TensorView& m, const TensorView& out,
                std::int64_t b, std::int64_t h, std::int64_t live, std::vector<float>& work) {
  constexpr std::int64_t kBlock = 16;
  const std::int64_t nwg = o.length(), D = o.head_dim(), lanes = reduce_lanes(nwg);
  work.assign(std::size_t(lanes * 2), 0.0f);  // weights, terms (zero past `live`)
  work.resize(std::size_t(lanes * (kBlock + 2)));
  float* weight = work.data();
  float* terms = weight + lanes;
  float* block = terms + lanes;  // lanes x kBlock
  float global_max = kInitialMax;  // idle groups hold the initial max
  for (std::int64_t g = 0; g < live; ++g) global_max = std::max(global_max, *m.row<const float>(b, h, g));
  for (std::int64_t g = 0; g < live; ++g) weight[g] = simd::exp_f32(*m.row<const float>(b, h, g) - global_max);
  for (std::int64_t g = 0; g < live; ++g) terms[g] = *s.row<const float>(b, h, g) * weight[g];
  const float total = tree_sum(terms, lanes);
  const float inv = total == 0.0f ? 0.0f : 1.0f / total;
  float* dst = out.row<float>(b, h, 0);
  for (std::int64_t d0 = 0; d0 < D; d0 += kBlock) {
    const std::int64_t n = std::min(kBlock, D - d0);
    for (std::int64_t g = 0; g < live; ++g) {
      const float* src = o.row<const float>(b, h, g) + d0;
      for (std::int64_t i = 0; i < n; ++i) block[g * kBlock + i] = src[i] * weight[g];
    }
    for (std::int64_t width = lanes / 2, count = live; width >= 1; width /= 2) {  // count: leading non-zero sums
      const std::int64_t next = (count + 1) / 2;
      for (std::int64_t g = 0; g < next; ++g) {
        float* sum = block + g * kBlock;
        const float* left = block + 2 * g * kBlock;
        const float* right = left + kBlock;
        if (2 * g + 1 < count)
          for (std::int64_t i = 0; i < n; ++i) sum[i] = left[i] + right[i];
        else
          for (std::int64_t i = 0; i < n; ++i) sum[i] = left[i] + 0.0f;
      }
      count = next;
    }
    for (std::int64_t i = 0; i < n; ++i) dst[d0 + i] = block[i] * inv;
  }
}

void validate_decode_params(const DecodeParams& p) {
  require(p.nwg >= 1 && p.nwg <= 64, "nwg: must be from 1 to 64, got ", p.nwg);
  require(p.mask == DecodeMask::none || p.mask == DecodeMask::causal || p.mask == DecodeMask::sliding_window,
          "mask: unknown decode mask code ", int(p.mask), " (expected none, causal or sliding_window)");
  require(p.window >= 0, "window: must be >= 0, got ", p.window);
  require(std::isfinite(p.softcap) && p.softcap >= 0.0f, "softcap: must be finite and >= 0 (0 = off), got ",
          p.softcap);
}

void validate_partials(const TensorView& o, const TensorView& s, const TensorView& m, const char* who) {
  validate_view(o, "o");
  validate_view(s, "s");
  validate_view(m, "m");
  for (const auto* t : {&o, &s, &m})
    require_dtype(t->dtype == DType::f32, who, ": partials must be float32, got ", t->dtype);
  require(o.length() <= 64, "o: nwg (the group axis) must be from 1 to 64, got ", o.length());
  for (const auto* t : {&s, &m})
    require(t->shape[0] == o.shape[0] && t->shape[1] == o.shape[1] && t->shape[2] == o.shape[2] && t->shape[3] == 1,
            who, ": s and m must be [..., H, nwg] matching o's [", o.shape[0], ", ", o.shape[1], ", ", o.shape[2],
            ", D]");
}

// flash_attn_vec's reduce, run inside the partials' parallel region: each
// (batch, KV head) counts down its items, and the item that finishes last
// reduces that head's query rows (one wake-up of the pool per call, not two;
// the reduce's arithmetic does not depend on which thread runs it).
class ReduceWhenDone {
 public:
  ReduceWhenDone(const TensorView* out, const TensorView& o, const TensorView& s, const TensorView& m,
                 const DecodePlan& p)
      : out_(out), o_(o), s_(s), m_(m), p_(p) {}
  // Before the items run: each (batch, KV head) is reduced after its
  // `items_per_head`-th item_done.
  void start(std::int64_t items_per_head) {
    if (!out_) return;
    left_ = std::make_unique<std::atomic<std::int64_t>[]>(std::size_t(p_.batch * p_.kv_heads));
    for (std::int64_t i = 0; i < p_.batch * p_.kv_heads; ++i) left_[std::size_t(i)].store(items_per_head);
  }
  void item_done(std::int64_t b, std::int64_t kv_head, std::vector<float>& work) {
    if (!out_ || left_[std::size_t(b * p_.kv_heads + kv_head)].fetch_sub(1, std::memory_order_acq_rel) != 1) return;
    const std::int64_t group = p_.heads / p_.kv_heads;
    const std::int64_t live = p_.write_idle ? p_.nwg : live_groups(p_);
    for (std::int64_t h = kv_head * group; h < (kv_head + 1) * group; ++h)
      reduce_row(o_, s_, m_, *out_, b, h, live, work);
  }

 private:
  const TensorView* out_;
  const TensorView &o_, &s_, &m_;
  const DecodePlan& p_;
  std::unique_ptr<std::atomic<std::int64_t>[]> left_;
};

bool is_tq4(const CacheView& c) { return c.quant && c.quant->format == QuantFormat::tq4; }

// Whether a cache's KV heads sit side by side within each position (rows of
// one position one after another, as in a paged pool [num_blocks,
// block_size, H_kv, D] or a [B, L, H_kv, D] cache).
bool heads_side_by_side(const CacheView& c, const DecodePlan& p) {
  if (p.kv_heads < 2) return false;
  if (c.quant) {
    const std::int64_t row = quant_row_bytes(c.quant->format, p.head_dim);
    return c.quant->stride[1] == row && c.quant->stride[2] == row * p.kv_heads;
  }
  return c.dense.stride[1] == p.head_dim && c.dense.stride[2] == p.head_dim * p.kv_heads;
}

// A tq4 K cache holds rotated rows (quant/blocks.hpp): Q turns the same way
// (scores are dot products, which an orthogonal rotation keeps), into
// `storage`, before the kernels stage it. Other caches: q itself.
TensorView query_for(const DecodePlan& p, std::vector<float>& storage) {
  if (!is_tq4(p.k)) return p.q;
  const std::int64_t B = p.batch, H = p.heads, D = p.head_dim;
  storage.resize(std::size_t(B * H * D));
  for (std::int64_t b = 0; b < B; ++b)
    for (std::int64_t h = 0; h < H; ++h) {
      const float* src = p.q.row<const float>(b, h, 0);
      float* dst = storage.data() + (b * H + h) * D;
      std::copy(src, src + D, dst);
      quant::tq4_rotate(dst, D);
    }
  return contiguous_view(storage.data(), DType::f32, {B, H, 1, D}, false);
}

// A tq4 V cache gives each group's O in the rotated domain: turned back
// before the partials are read (by the caller, or the reduce, which is
// linear in them), group by group, for the groups [g0, g1) of (b, kv_head)
// that saw a chunk (the others hold zeros, left as they are).
void unrotate_partials(const DecodePlan& p, const TensorView& o, std::int64_t b, std::int64_t kv_head,
                       std::int64_t g0, std::int64_t g1) {
  if (!is_tq4(p.v)) return;
  const std::int64_t group = p.heads / p.kv_heads;
  g1 = std::min(g1, live_groups(p));
  for (std::int64_t h = kv_head * group; h < (kv_head + 1) * group; ++h)
    for (std::int64_t g = g0; g < g1; ++g) quant::tq4_unrotate(o.row<float>(b, h, g), p.head_dim);
}

// The partials of every (batch, head) into o, s, m; with `out`, also their
// reduce into out.
// One plan's partials (and, with `out`, their reduce) as independent work
// items, so one call's plan, or every sequence's of a paged call, runs in a
// single parallel region.
class PartialsItems {
 public:
  // `sharing`: how many such jobs run in the same region (their items
  // together keep the threads busy).
  PartialsItems(const DecodePlan& p, const TensorView& o, const TensorView& s, const TensorView& m,
                const TensorView* out, std::int64_t sharing = 1)
      : p_(p), q_(query_for(p, rotated_q_)), o_(o), s_(s), m_(m), isa_(simd::isa_for(simd::Family::decode)),
        reduce_(out, o_, s_, m_, p) {
    const CacheView &k = p.k, &v = p.v;
    if (isa_ == simd::Isa::scalar) {  // one item per (batch, KV head, group): the scalar model's decode_group
      count_ = p.batch * p.kv_heads * p.nwg;
      reduce_.start(p.nwg);
      return;
    }
    // Each item walks its KV head's cache once, in memory order, for a block
    // of groups; blocks split the groups only when there are too few heads
    // to keep every thread busy.
    //
    // A cache whose KV heads sit side by side in each position (a paged
    // pool, [..., L, H_kv, D]) is walked once for all its KV heads, position
    // by position: an item per KV head, each reading its rows scattered
    // every H_kv rows, ran at 58% of the contiguous layout's speed on an
    // Intel Xeon (family 6 model 167), whose memory streams a 256-byte row
    // out of every 2 KiB at a third of the contiguous rate.
    together_ = heads_side_by_side(k, p) && heads_side_by_side(v, p) ? p.kv_heads : 1;
    const std::int64_t heads = p.batch * p.kv_heads / together_;  // items per group block
    // (Heads together: as few group blocks as keep the threads busy, so each
    // item walks long runs of positions: 2 or 4 per thread measured slower.)
    const std::int64_t want =
        std::max<std::int64_t>(1, (together_ > 1 ? 1 : 2) * std::int64_t(get_num_threads()) / sharing);
    blocks_ = heads >= want ? 1 : std::min<std::int64_t>(p.nwg, (want + heads - 1) / heads);
    per_block_ = (p.nwg + blocks_ - 1) / blocks_;
    // A quantized cache is read as f32: each chunk's rows are dequantized
    // into a block of f32 rows the dense f32 code then reads.
    const auto elements = [](const CacheView& c) { return c.quantized() ? DType::f32 : c.dense.dtype; };
    groups_fn_ = simd::vector_kernels(isa_).decode_groups(elements(k), elements(v));
    count_ = heads * blocks_;
    reduce_.start(blocks_);
  }
  PartialsItems(const PartialsItems&) = delete;
  PartialsItems& operator=(const PartialsItems&) = delete;

  std::int64_t count() const { return count_; }

  void run(std::int64_t item, std::vector<float>& work, std::vector<float>& reduce_work) {
    const DecodePlan& p = p_;
    if (isa_ == simd::Isa::scalar) {
      const std::int64_t g = item % p.nwg, kv_head = (item / p.nwg) % p.kv_heads, b = item / (p.nwg * p.kv_heads);
      if (p.write_idle || g < live_groups(p)) decode_group(q_, p.k, p.v, o_, s_, m_, p, b, kv_head, g, work);
      unrotate_partials(p, o_, b, kv_head, g, g + 1);
      reduce_.item_done(b, kv_head, reduce_work);
      return;
    }
    const std::int64_t kv_items = p.kv_heads / together_;
    const std::int64_t blk = item % blocks_, kv0 = (item / blocks_) % kv_items * together_,
                       b = item / (blocks_ * kv_items);
    const std::int64_t g0 = blk * per_block_, g1 = std::min(p.nwg, g0 + per_block_);
    if (g0 < g1) groups_fn_(q_, p.k, p.v, o_, s_, m_, p, b, kv0, kv0 + together_, g0, g1, work);
    for (std::int64_t kv_head = kv0; kv_head < kv0 + together_; ++kv_head) {
      unrotate_partials(p, o_, b, kv_head, g0, g1);
      reduce_.item_done(b, kv_head, reduce_work);
    }
  }

 private:
  const DecodePlan& p_;
  std::vector<float> rotated_q_;
  TensorView q_, o_, s_, m_;
  simd::Isa isa_;
  simd::VectorKernels::DecodeGroups groups_fn_ = nullptr;
  std::int64_t together_ = 1, blocks_ = 1, per_block_ = 1, count_ = 0;
  ReduceWhenDone reduce_;
};

// Every item of every job in one parallel region (jobs in order, items of a
// job in order: a thread's range may span two jobs).
void run_items(const std::vector<std::unique_ptr<PartialsItems>>& jobs) {
  std::vector<std::int64_t> starts(jobs.size() + 1, 0);
  for (std::size_t i = 0; i < jobs.size(); ++i) starts[i + 1] = starts[i] + jobs[i]->count();
  parallel_for(starts.back(), 1, [&](std::int64_t begin, std::int64_t end) {
    std::vector<float>& work = detail::thread_scratch(detail::ScratchSlot::work);
    std::vector<float>& reduce_work = detail::thread_scratch(detail::ScratchSlot::reduce);
    std::size_t job = std::size_t(std::upper_bound(starts.begin(), starts.end(), begin) - starts.begin()) - 1;
    for (std::int64_t item = begin; item < end; ++item) {
      while (item >= starts[job + 1]) ++job;
      jobs[job]->run(item - starts[job], work, reduce_work);
    }
  });
}

// The partials of every (batch, head) into o, s, m; with `out`, also their
// reduce into out.
void compute_partials(const TensorView& o, const TensorView& s, const TensorView& m, const DecodePlan& p,
                      const TensorView* out = nullptr) {
  std::vector<std::unique_ptr<PartialsItems>> jobs;
  jobs.push_back(std::make_unique<PartialsItems>(p, o, s, m, out));
  run_items(jobs);
}

void run_reduce(const TensorView& o, const TensorView& s, const TensorView& m, const TensorView& out) {
  const std::int64_t heads = o.heads();
  parallel_for(o.batch() * heads, 4, [&](std::int64_t begin, std::int64_t end) {
    std::vector<float>& work = detail::thread_scratch(detail::ScratchSlot::reduce);
    for (std::int64_t r = begin; r < end; ++r) reduce_row(o, s, m, out, r / heads, r % heads, o.length(), work);
  });
}

}  // namespace

// A cache argument: a valid dense view, or a quantized one whose format is
// implemented and whose D fills whole blocks (checked before
// validate_quant_view, whose messages name the format and D, not the cache).
void validate_cache(const CacheView& c, const char* name) {
  if (!c.quant) {
    validate_view(c.dense, name);
    return;
  }
  const QuantView& t = *c.quant;
  require(t.format == QuantFormat::q8_0 || t.format == QuantFormat::q4_0 || t.format == QuantFormat::tq4, name,
          ": quantized format '", quant_format_name(t.format),
          "' is not implemented by the decode yet (q8_0, q4_0 and tq4 are)");
  require(t.head_dim() > 0 && t.head_dim() % kQuantBlock == 0, name, ": a quantized cache's head dim D must be a ",
          "positive multiple of ", kQuantBlock, " (its block size), got ", t.head_dim());
  validate_quant_view(t, name);
}

std::string shape_text(const std::array<std::int64_t, 4>& s) {
  return "[" + std::to_string(s[0]) + ", " + std::to_string(s[1]) + ", " + std::to_string(s[2]) + ", " +
         std::to_string(s[3]) + "]";
}

namespace {
// What every decode call checks of its operands: q, the caches' views and
// dtypes, D, GQA, and that K and V have one shape. `k_batch`: the batch k
// must have (q's; a paged pool has any number of blocks: -1).
void check_decode_operands(const TensorView& q, const CacheView& k, const CacheView& v, std::int64_t k_batch) {
  using namespace detail;
  validate_view(q, "q");
  validate_cache(k, "k_cache");
  validate_cache(v, "v_cache");
  require_dtype(q.dtype == DType::f32, "q: dtype must be float32, got ", q.dtype);
  require(q.length() == 1, "q: one query per head (L = 1), got ", q.length());
  const std::int64_t D = q.head_dim();
  require(D % 32 == 0 && D <= 512, "q: head dim D must be a multiple of 32 up to 512 (the seed has 256 and 512), got ",
          D);
  if (!k.quantized() && !v.quantized()) require_same_dtype(v.dense, "v_cache", k.dense, "k_cache");
  if (k_batch >= 0)
    require(k.shape()[0] == k_batch, "k_cache: batch size B (q's) must be ", k_batch, ", got ", k.shape()[0]);
  require(k.shape()[3] == D, "k_cache: head dim D (q's) must be ", D, ", got ", k.shape()[3]);
  require_gqa(q.heads(), k.heads(), "k_cache");
  require(v.shape() == k.shape(), "v_cache: shape must equal k_cache's ", shape_text(k.shape()), ", got ",
          shape_text(v.shape()));
}

// The plan of checked operands for kv_len valid positions in `capacity` slots.
DecodePlan make_decode_plan(const TensorView& q, const CacheView& k, const CacheView& v, const DecodeParams& params,
                            std::int64_t kv_len, std::int64_t capacity) {
  const std::int64_t D = q.head_dim();
  DecodePlan plan;
  static_cast<AttentionShape&>(plan) = {q.batch(), q.heads(), k.heads(), 1, kv_len, D};
  plan.params = params;
  plan.params.kv_seq_len = kv_len;
  plan.q = q;
  plan.k = k;
  plan.v = v;
  plan.nwg = params.nwg;
  plan.ring_start = params.ring_start.value_or(0);
  plan.capacity = capacity;
  plan.scale = detail::resolve_scale(params.scale, D);
  plan.softcap = params.softcap;
  plan.scale_over_cap = params.softcap > 0.0f ? plan.scale / params.softcap : 0.0f;
  if (params.mask == DecodeMask::sliding_window && params.window > 0)
    plan.window_start = std::max<std::int64_t>(0, kv_len - params.window);
  return plan;
}
}  // namespace

DecodePlan plan_flash_attn_vec(const TensorView& q, const CacheView& k, const CacheView& v,
                               const DecodeParams& params) {
  check_decode_operands(q, k, v, q.batch());
  require(params.kv_seq_len >= 1, "kv_seq_len: must be >= 1, got ", params.kv_seq_len);
  require(params.kv_seq_len <= k.length(), "kv_seq_len: must be <= the capacity of k_cache and v_cache (",
          k.length(), "), got ",
          params.kv_seq_len);
  validate_decode_params(params);
  detail::require_sinks(params.sinks.data(), std::int64_t(params.sinks.size()), q.heads());
  if (params.ring_start)
    require(*params.ring_start >= 0 && *params.ring_start < k.length(), "ring_start: must be from 0 to capacity - 1 (",
            k.length() - 1, "), got ", *params.ring_start);
  return make_decode_plan(q, k, v, params, params.kv_seq_len, k.length());
}

namespace {
// Row b of a [B, ...] view, as a view of batch 1.
TensorView batch_slice(const TensorView& t, std::int64_t b) {
  TensorView s = t;
  s.data = static_cast<char*>(t.data) + b * t.stride[0] * std::int64_t(dtype_size(t.dtype));
  s.shape[0] = 1;
  return s;
}
}  // namespace

PagedDecodePlan plan_flash_attn_vec_paged(const TensorView& q, const CacheView& k, const CacheView& v,
                                          const BlockTableView& table, const std::vector<std::int64_t>& kv_seq_lens,
                                          const DecodeParams& params) {
  check_decode_operands(q, k, v, -1);
  const std::int64_t B = q.batch(), num_blocks = k.shape()[0], block_size = k.length();
  require(std::int64_t(kv_seq_lens.size()) == B, "kv_seq_len: expected one length per sequence (B = ", B,
          "), got ", kv_seq_lens.size());
  require(table.rows == B && table.cols >= 0, "block_table: expected [B, max_blocks] = [", B, ", >= 0], got [",
          table.rows, ", ", table.cols, "]");
  require(table.cols == 0 || table.data != nullptr, "block_table: data pointer is null");
  require(!params.ring_start, "ring_start: not supported with block_table (a paged cache places positions by its table)");
  validate_decode_params(params);
  detail::require_sinks(params.sinks.data(), std::int64_t(params.sinks.size()), q.heads());
  PagedDecodePlan plan;
  plan.q = q;
  plan.batch = B;
  plan.heads = q.heads();
  plan.head_dim = q.head_dim();
  plan.nwg = params.nwg;
  for (std::int64_t b = 0; b < B; ++b) {
    const std::int64_t len = kv_seq_lens[std::size_t(b)];
    require(len >= 0, "kv_seq_len: every length must be >= 0, got ", len, " for sequence ", b);
    const std::int64_t blocks = (len + block_size - 1) / block_size;
    require(blocks <= table.cols, "block_table: sequence ", b, " needs ", blocks, " blocks for kv_seq_len ", len,
            " (block size ", block_size, "), but a row has ", table.cols);
    const std::int32_t* row = table.data + b * table.row_stride;
    for (std::int64_t i = 0; i < blocks; ++i)
      require(row[i] >= 0 && row[i] < num_blocks, "block_table: entry [", b, ", ", i, "] = ", row[i],
              " is not a block (0 to num_blocks - 1 = ", num_blocks - 1, ")");
    CacheView kb = k, vb = v;
    kb.pages = vb.pages = row;
    kb.page_size = vb.page_size = block_size;
    plan.sequences.push_back(make_decode_plan(batch_slice(q, b), kb, vb, params, len, blocks * block_size));
  }
  return plan;
}

void run_partials(const DecodePlan& plan, const TensorView& o, const TensorView& s, const TensorView& m) {
  validate_partials(o, s, m, "flash_attn_vec_partials");
  require(o.shape == plan.partials_o_shape(), "o: shape must be [B, H, nwg, D] = [", plan.batch, ", ", plan.heads,
          ", ", plan.nwg, ", ", plan.head_dim, "]");
  for (const auto* t : {&o, &s, &m}) detail::require_writable(*t, "partials");
  DecodePlan p = plan;
  p.write_idle = true;  // the caller may read every group's partials
  compute_partials(o, s, m, p);
}

void run(const DecodePlan& plan, const TensorView& out) {
  detail::validate_output(out, "out", plan.out_shape(), DType::f32, false);
  DecodePlan p = plan;
  p.write_idle = false;  // the workspace below is read only by this call's reduce
  // The seed's temp buffer: H * NWG * (D + 2) floats per batch, allocated once per call.
  const std::int64_t B = p.batch, H = p.heads, G = p.nwg, D = p.head_dim;
  std::int64_t floats = 0;  // q may broadcast (stride 0) over far more rows than memory holds
  require(!__builtin_mul_overflow(B * H, G * (D + 2), &floats), "q: B * H = ", B * H,
          " query rows need a partials workspace larger than 64 bits can count");
  // Not zeroed: the partials write every element before the reduce reads it.
  const std::unique_ptr<float[]> workspace(new float[std::size_t(floats)]);
  const TensorView o = contiguous_view(workspace.get(), DType::f32, {B, H, G, D}, true);
  const TensorView s = contiguous_view(workspace.get() + B * H * G * D, DType::f32, {B, H, G, 1}, true);
  const TensorView m = contiguous_view(workspace.get() + B * H * G * (D + 1), DType::f32, {B, H, G, 1}, true);
  compute_partials(o, s, m, p, &out);
}

// Every sequence of a paged call in one parallel region (a sequence's own
// run would take one each: on 2 threads, 4 sequences of 8192 positions ran
// at 76% of the contiguous batch that way, one region for all at 82%).
void run(const PagedDecodePlan& plan, const TensorView& out) {
  detail::validate_output(out, "out", plan.out_shape(), DType::f32, false);
  const std::int64_t B = plan.batch, H = plan.heads, G = plan.nwg, D = plan.head_dim;
  std::int64_t floats = 0;
  require(!__builtin_mul_overflow(B * H, G * (D + 2), &floats), "q: B * H = ", B * H,
          " query rows need a partials workspace larger than 64 bits can count");
  const std::unique_ptr<float[]> workspace(new float[std::size_t(floats)]);  // written before it is read
  const TensorView o = contiguous_view(workspace.get(), DType::f32, {B, H, G, D}, true);
  const TensorView s = contiguous_view(workspace.get() + B * H * G * D, DType::f32, {B, H, G, 1}, true);
  const TensorView m = contiguous_view(workspace.get() + B * H * G * (D + 1), DType::f32, {B, H, G, 1}, true);
  std::vector<DecodePlan> plans = plan.sequences;
  std::vector<TensorView> outs;
  outs.reserve(std::size_t(B));
  std::vector<std::unique_ptr<PartialsItems>> jobs;
  for (std::int64_t b = 0; b < B; ++b) {
    DecodePlan& seq = plans[std::size_t(b)];
    outs.push_back(batch_slice(out, b));
    if (seq.kv_len == 0) {  // no key: 0
      for (std::int64_t h = 0; h < H; ++h) std::fill_n(outs.back().row<float>(0, h, 0), D, 0.0f);
      continue;
    }
    seq.write_idle = false;  // the workspace is read only by the reduce
    jobs.push_back(std::make_unique<PartialsItems>(seq, batch_slice(o, b), batch_slice(s, b), batch_slice(m, b),
                                                   &outs.back(), B));
  }
  run_items(jobs);
}

void run_partials(const PagedDecodePlan& plan, const TensorView& o, const TensorView& s, const TensorView& m) {
  validate_partials(o, s, m, "flash_attn_vec_partials");
  require(o.shape == plan.partials_o_shape(), "o: shape must be [B, H, nwg, D] = [", plan.batch, ", ", plan.heads,
          ", ", plan.nwg, ", ", plan.head_dim, "]");
  for (const auto* t : {&o, &s, &m}) detail::require_writable(*t, "partials");
  std::vector<DecodePlan> plans = plan.sequences;
  std::vector<std::unique_ptr<PartialsItems>> jobs;
  for (std::int64_t b = 0; b < plan.batch; ++b) {
    DecodePlan& seq = plans[std::size_t(b)];
    if (seq.kv_len == 0) {  // no chunk anywhere: every group's untouched state
      for (std::int64_t h = 0; h < plan.heads; ++h)
        for (std::int64_t g = 0; g < plan.nwg; ++g) {
          std::fill_n(o.row<float>(b, h, g), plan.head_dim, 0.0f);
          *s.row<float>(b, h, g) = 0.0f;
          *m.row<float>(b, h, g) = kInitialMax;
        }
      continue;
    }
    seq.write_idle = true;  // the caller may read every group's partials
    jobs.push_back(std::make_unique<PartialsItems>(seq, batch_slice(o, b), batch_slice(s, b), batch_slice(m, b),
                                                   nullptr, plan.batch));
  }
  run_items(jobs);
}

ReducePlan plan_flash_attn_vec_reduce(const TensorView& o, const TensorView& s, const TensorView& m) {
  validate_partials(o, s, m, "flash_attn_vec_reduce");
  return ReducePlan{o, s, m};
}

void run(const ReducePlan& plan, const TensorView& out) {
  validate_view(out, "out");
  require_dtype(out.dtype == DType::f32, "out: dtype must be float32, got ", out.dtype);
  require(out.shape == plan.out_shape(), "out: shape must be [B, H, 1, D] matching o");
  detail::require_writable(out, "out");
  run_reduce(plan.o, plan.s, plan.m, out);
}

void flash_attn_vec_partials(const TensorView& q, const CacheView& k, const CacheView& v, const TensorView& o,
                             const TensorView& s, const TensorView& m, const DecodeParams& params) {
  run_partials(plan_flash_attn_vec(q, k, v, params), o, s, m);
}

void flash_attn_vec_partials(const TensorView& q, const TensorView& k, const TensorView& v, const TensorView& o,
                             const TensorView& s, const TensorView& m, const DecodeParams& params) {
  run_partials(plan_flash_attn_vec(q, CacheView(k), CacheView(v), params), o, s, m);
}

void flash_attn_vec_reduce(const TensorView& o, const TensorView& s, const TensorView& m, const TensorView& out) {
  run(plan_flash_attn_vec_reduce(o, s, m), out);
}

void flash_attn_vec(const TensorView& q, const CacheView& k, const CacheView& v, const TensorView& out,
                    const DecodeParams& params) {
  run(plan_flash_attn_vec(q, k, v, params), out);
}

void flash_attn_vec(const TensorView& q, const TensorView& k, const TensorView& v, const TensorView& out,
                    const DecodeParams& params) {
  run(plan_flash_attn_vec(q, CacheView(k), CacheView(v), params), out);
}

DecodePlan plan_flash_attn_vec(const TensorView& q, const TensorView& k, const TensorView& v,
                               const DecodeParams& params) {
  return plan_flash_attn_vec(q, CacheView(k), CacheView(v), params);
}

void merge_attention(const std::vector<const float*>& outputs, const std::vector<const float*>& lses,
                     std::int64_t rows, std::int64_t head_dim, float* out, float* out_lse, const MergeSinks& sinks) {
  require(!outputs.empty(), "outputs: need at least one attention result");
  require(outputs.size() == lses.size(), "lses: need one per output (", outputs.size(), "), got ", lses.size());
  require(rows >= 1 && head_dim >= 1, "outputs: rows and head dim must be >= 1, got rows = ", rows,
          ", head_dim = ", head_dim);
  std::int64_t elements = 0;
  require(!__builtin_mul_overflow(rows, head_dim, &elements) &&
              elements <= std::numeric_limits<std::int64_t>::max() / 4,
          "outputs: rows * head_dim (", rows, " * ", head_dim, ") overflows 64-bit byte offsets");
  for (std::size_t i = 0; i < outputs.size(); ++i)
    require(outputs[i] != nullptr && lses[i] != nullptr, "outputs/lses: null pointer at index ", i);
  require(out != nullptr, "out: null pointer");
  if (sinks.values) {
    std::int64_t period = 0;
    require(sinks.heads >= 1 && sinks.rows_per_head >= 1 &&
                !__builtin_mul_overflow(sinks.heads, sinks.rows_per_head, &period) && rows % period == 0,
            "sinks: ", sinks.heads, " heads of ", sinks.rows_per_head, " rows each do not tile the ", rows,
            " rows");
    detail::require_sinks(sinks.values, sinks.heads, sinks.heads);
  }
  const std::size_t n = outputs.size();
  // The rows' weighted sums on the decode family's vector path (the same fma
  // chain per element, W elements at a time) or the scalar loop below.
  const simd::Isa isa = simd::isa_for(simd::Family::decode);
  const simd::VectorKernels::MergeRow vector_row =
      isa == simd::Isa::scalar ? nullptr : simd::vector_kernels(isa).merge_row;
  parallel_for(rows, 64, [&](std::int64_t begin, std::int64_t end) {
    std::vector<float> weight(n);
    for (std::int64_t r = begin; r < end; ++r) {
      float global_max = -kInf;
      for (std::size_t i = 0; i < n; ++i) global_max = std::max(global_max, lses[i][r]);
      float* dst = out + r * head_dim;
      if (global_max == -kInf) {  // no key in any part
        std::fill(dst, dst + head_dim, 0.0f);
        if (out_lse) out_lse[r] = -kInf;
        continue;
      }
      float total = 0.0f;
      for (std::size_t i = 0; i < n; ++i) total = total + (weight[i] = simd::exp_f32(lses[i][r] - global_max));
      // A sink joins the denominator as one more term in the same units,
      // e^{sink - M}: W + e^{sink - M} = (W·e^M + e^sink) / e^M. Its exp
      // overflows to +inf (output 0) only where the keys' share is below
      // e^-88; a sink of -inf adds nothing (and is skipped: no bit changes).
      float denominator = total;
      if (sinks.values) {
        const float sink = sinks.values[(r / sinks.rows_per_head) % sinks.heads];
        if (sink != -kInf) denominator = total + simd::exp_f32(sink - global_max);
      }
      const float inv = 1.0f / denominator;
      if (vector_row) {
        vector_row(outputs.data(), weight.data(), n, r * head_dim, head_dim, inv, dst);
      } else {
        for (std::int64_t d = 0; d < head_dim; ++d) {
          float acc = 0.0f;
          for (std::size_t i = 0; i < n; ++i) acc = std::fma(outputs[i][r * head_dim + d], weight[i], acc);
          dst[d] = acc * inv;
        }
      }
      if (out_lse) out_lse[r] = float(double(global_max) + std::log(double(total)));
    }
  });
}

}  // namespace fattn
