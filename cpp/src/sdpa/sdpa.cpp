#include "fattn/sdpa.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "numerics/constants.hpp"
#include "numerics/dtype_dispatch.hpp"
#include "numerics/sink.hpp"
#include "fattn/parallel.hpp"
#include "sdpa/engine.hpp"
#include "runtime/scratch.hpp"
#include "numerics/exp.hpp"
#include "numerics/tanh.hpp"
#include "runtime/isa.hpp"
#include "simd/dispatch.hpp"
#include "views/validate.hpp"

namespace fattn {
namespace {

using detail::dispatch_dtype;

// One query row, the seed's arithmetic (docs/numerics.md, "Naive SDPA"):
// f32 dot, score = dot * scale (or softcap * tanh(dot * scale_over_cap)),
// running max from -inf, a rescale of the sum and the accumulator at every
// key in [first, end), the sink after the last key, and a final multiply by
// 1/sum. The scalar model; the SIMD paths (sdpa/vector_kernel.inl) repeat it
// lane by lane.
template <class T>
void sdpa_row(const float* q, const TensorView& k, const TensorView& v, std::int64_t b, std::int64_t kv_head,
              std::int64_t first, std::int64_t end, float sink, const SdpaPlan& s, float* acc, T* out) {
  const std::int64_t d_len = s.head_dim;
  std::fill(acc, acc + d_len, 0.0f);
  float running_max = -numerics::kInf;
  float running_sum = 0.0f;
  for (std::int64_t key = first; key < end; ++key) {
    const T* k_row = k.row<const T>(b, kv_head, key);
    float dot = 0.0f;
    for (std::int64_t d = 0; d < d_len; ++d) dot += q[d] * widen(k_row[d]);
    // fattn's tanh, not std::tanh: the SIMD paths' tanh_v gives the same bits.
    const float score = s.softcap > 0.0f ? s.softcap * simd::tanh_f32(dot * s.scale_over_cap) : dot * s.scale;
    const float previous_max = running_max;
    running_max = std::max(running_max, score);
    const float correction = simd::exp_f32(previous_max - running_max);  // exp(-inf) = 0 at the first key
    const float weight = simd::exp_f32(score - running_max);
    running_sum = running_sum * correction + weight;
    const T* v_row = v.row<const T>(b, kv_head, key);
    if (correction == 1.0f) {  // x * 1 == x: skipping the rescale changes no bit
      for (std::int64_t d = 0; d < d_len; ++d) acc[d] = acc[d] + weight * widen(v_row[d]);
    } else {
      for (std::int64_t d = 0; d < d_len; ++d) acc[d] = acc[d] * correction + weight * widen(v_row[d]);
    }
  }
  // The sink joins the denominator only, after the last key: one more
  // online-softmax step with no value row. A row that saw no key has m = -inf,
  // so f = 0 and acc stays 0. A -inf sink (none) is skipped: exp(-inf - -inf)
  // would be NaN in a row that saw no key.
  if (sink != -numerics::kInf) {  // numerics/sink.hpp; every product, as the vector path does
    const float f = numerics::fold_sink(sink, running_max, running_sum, simd::exp_f32);
    for (std::int64_t d = 0; d < d_len; ++d) acc[d] = acc[d] * f;
  }
  // A row that sees no key (bottom-right causal with Lq > kv_seq_len, or a
  // window past the last key) is 0, not 1/0 * 0 = NaN.
  const float inv_sum = running_sum > 0.0f ? 1.0f / running_sum : 0.0f;
  for (std::int64_t d = 0; d < d_len; ++d) out[d] = narrow<T>(acc[d] * inv_sum);
}

template <class T>
void sdpa_kernel(const TensorView& q, const TensorView& k, const TensorView& v, const TensorView& out,
                 const SdpaPlan& s) {
  const simd::Isa isa = simd::isa_for(simd::Family::sdpa);
  if (isa != simd::Isa::scalar) {  // kSdpaRows rows of one head per item, one per vector lane
    const auto rows_fn = simd::vector_kernels(isa).sdpa_rows<T>();
    const std::int64_t blocks = (s.q_len + sdpa_detail::kSdpaRows - 1) / sdpa_detail::kSdpaRows;
    parallel_for(s.batch * s.heads * blocks, 1, [&](std::int64_t begin, std::int64_t end) {
      std::vector<float>& work = detail::thread_scratch(detail::ScratchSlot::work);
      for (std::int64_t item = begin; item < end; ++item) {
        const std::int64_t block = item % blocks, h = (item / blocks) % s.heads, b = item / (blocks * s.heads);
        rows_fn(q, k, v, out, s, b, h, block * sdpa_detail::kSdpaRows, work);
      }
    });
    return;
  }
  const std::int64_t rows = s.batch * s.heads * s.q_len;
  const std::int64_t group = s.heads / s.kv_heads;
  parallel_for(rows, 16, [&](std::int64_t begin, std::int64_t end) {
    std::vector<float> q_row(std::size_t(s.head_dim)), acc(std::size_t(s.head_dim));
    for (std::int64_t r = begin; r < end; ++r) {
      const std::int64_t i = r % s.q_len;
      const std::int64_t h = (r / s.q_len) % s.heads;
      const std::int64_t b = r / (s.q_len * s.heads);
      const T* q_src = q.row<const T>(b, h, i);
      for (std::int64_t d = 0; d < s.head_dim; ++d) q_row[std::size_t(d)] = widen(q_src[d]);
      sdpa_row<T>(q_row.data(), k, v, b, h / group, sdpa_detail::first_key(s, i), sdpa_detail::visible_keys(s, i),
                  sdpa_detail::sink_of(s, h), s, acc.data(), out.row<T>(b, h, i));
    }
  });
}

}  // namespace

SdpaPlan plan_sdpa(const TensorView& q, const TensorView& k, const TensorView& v, const SdpaParams& params) {
  using namespace detail;
  validate_attention_inputs(q, k, v);
  const std::int64_t capacity = k.length();
  const std::int64_t kv_len = params.kv_seq_len.value_or(capacity);
  require(kv_len >= 1, "kv_seq_len: must be >= 1, got ", kv_len);
  require(kv_len <= capacity, "kv_seq_len: must be <= the K/V capacity (k.shape[2] = ", capacity, "), got ", kv_len);
  SdpaPlan plan;
  static_cast<AttentionShape&>(plan) = {q.batch(), q.heads(), k.heads(), q.length(), kv_len, q.head_dim()};
  plan.params = params;
  plan.q = q;
  plan.k = k;
  plan.v = v;
  plan.scale = resolve_scale(params.scale, q.head_dim());
  plan.causal = params.causal;
  require(params.causal_align == CausalAlign::top_left || params.causal_align == CausalAlign::bottom_right,
          "causal: unknown alignment code ", int(params.causal_align), " (expected top_left or bottom_right)");
  plan.causal_offset = causal_offset(params.causal_align, plan.q_len, plan.kv_len);
  require(std::isfinite(params.softcap) && params.softcap >= 0.0f,
          "softcap: must be finite and >= 0 (0 = off), got ", params.softcap);
  plan.softcap = params.softcap;
  plan.scale_over_cap = params.softcap > 0.0f ? plan.scale / params.softcap : 0.0f;
  if (params.window) {
    const std::int64_t w = *params.window;
    require(w >= 1, "window: must be >= 1 (None = no window), got ", w);
    // Which keys a window keeps is counted from the query's position, which only causal alignment gives.
    require(params.causal, "window: requires causal (a window implies causal masking; pass causal=True, "
                           "'bottom_right' or 'top_left'), got causal=False");
    plan.window = std::min(w, std::max(plan.q_len, plan.kv_len));
  }
  detail::require_sinks(params.sinks.data(), std::int64_t(params.sinks.size()), plan.heads);
  return plan;
}

void run(const SdpaPlan& plan, const TensorView& out) {
  detail::validate_output(out, "out", plan.out_shape(), plan.out_dtype(), true);
  dispatch_dtype(plan.q.dtype, [&](auto tag) { sdpa_kernel<decltype(tag)>(plan.q, plan.k, plan.v, out, plan); });
}

void sdpa(const TensorView& q, const TensorView& k, const TensorView& v, const TensorView& out,
          const SdpaParams& params) {
  run(plan_sdpa(q, k, v, params), out);
}

}  // namespace fattn
