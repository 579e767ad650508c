// The naive SDPA on a vector unit, written once for any vector traits V and
// compiled once per instruction set inside that set's target region. Query
// rows go in the lanes (up to kSdpaRows of one head per item), so each row's
// arithmetic is the scalar model's (sdpa.cpp, sdpa_row) operation for
// operation: the dot product summed from d = 0 up without FMA, the same exp,
// the rescale at every key, the same softcap (simd::tanh_v, numerics/tanh.hpp's
// tanh lane by lane), the sink step after the last key, 1/l then a multiply.
// Rows that do not see a key (causal: not yet; window: no longer) keep their
// state (blended back), so each row takes exactly its own keys.
#include <algorithm>
#include <cstdint>
#include <vector>

#include "sdpa/engine.hpp"
#include "simd/vexp.hpp"

namespace fattn::sdpa_detail {
// Internal linkage: every ISA's file compiles its own copy (see prefill/vector_kernel.inl).
namespace {

template <class V, int R, class T>
void sdpa_rows_r(const TensorView& q, const TensorView& k, const TensorView& v, const TensorView& out,
                 const SdpaPlan& s, std::int64_t b, std::int64_t h, std::int64_t row0, std::int64_t rows,
                 std::vector<float>& work) {
  using F = typename V::F;
  constexpr std::int64_t W = V::W;
  const std::int64_t D = s.head_dim, kv_head = h / (s.heads / s.kv_heads);
  // work: Q transposed (D x R vectors: element d of the R*W rows), then the
  // accumulators in the same layout.
  work.resize(std::size_t((2 * D * R + 1) * W));
  F* qt = reinterpret_cast<F*>((reinterpret_cast<std::uintptr_t>(work.data()) + sizeof(F) - 1) / sizeof(F) * sizeof(F));
  F* acc = qt + D * R;
  float* q_lanes = reinterpret_cast<float*>(qt);
  for (std::int64_t r = 0; r < R * W; ++r) {  // rows past `rows` are zeros: computed, never stored
    const T* src = r < rows ? q.row<const T>(b, h, row0 + r) : nullptr;
    for (std::int64_t d = 0; d < D; ++d) q_lanes[(d * R + r / W) * W + r % W] = src ? widen(src[d]) : 0.0f;
  }
  for (std::int64_t i = 0; i < D * R; ++i) acc[i] = V::zero();
  F m[R], l[R];
  for (int u = 0; u < R; ++u) {
    m[u] = V::set1(-INFINITY);
    l[u] = V::zero();
  }
  const F scale = V::set1(s.scale), one = V::set1(1.0f);
  const F cap = V::set1(s.softcap), scale_over_cap = V::set1(s.scale_over_cap);
  // Row r's keys are [first_key(r), visible_keys(r)); both grow with r, so
  // the block visits [first_key(row0), visible_keys(last)). Keys in
  // [first_key(last), visible_keys(row0)) are seen by every row; outside it
  // only the lanes whose range holds the key take it (the others keep their
  // state, which is the scalar model's skip).
  const std::int64_t last = row0 + rows - 1;
  const std::int64_t all_from = first_key(s, last), all_see = visible_keys(s, row0), any_sees = visible_keys(s, last);
  constexpr std::int64_t kLanes = R * W;
  for (std::int64_t key = first_key(s, row0); key < any_sees; ++key) {
    const T* k_row = k.row<const T>(b, kv_head, key);
    F dot[R];
    for (int u = 0; u < R; ++u) dot[u] = V::zero();
    for (std::int64_t d = 0; d < D; ++d) {
      const F kd = V::set1(widen(k_row[d]));
      for (int u = 0; u < R; ++u) dot[u] = V::add(dot[u], V::mul(qt[d * R + u], kd));
    }
    const bool partial = key >= all_see || key < all_from;
    typename V::M seen[R];
    if (partial) {  // lanes lo..hi-1 see the key: lane r from key <= r + row0 + causal_offset (causal), up to the
                    // window's end, r + row0 + causal_offset - window < key
      const std::int64_t lane0 = key - s.causal_offset - row0;  // the lane whose position is the key
      const std::int64_t lo = std::clamp<std::int64_t>(lane0, 0, kLanes);
      const std::int64_t hi = s.window ? std::clamp<std::int64_t>(lane0 + s.window, 0, kLanes) : kLanes;
      const std::uint64_t bits = ((std::uint64_t{1} << hi) - 1) & ~((std::uint64_t{1} << lo) - 1);
      for (int u = 0; u < R; ++u) seen[u] = V::from_bits(std::uint32_t(bits >> (u * W)));
    }
    F c[R], w[R];
    bool rescale = false;
    for (int u = 0; u < R; ++u) {
      const F score = s.softcap > 0.0f ? V::mul(cap, simd::tanh_v<V>(V::mul(dot[u], scale_over_cap)))
                                       : V::mul(dot[u], scale);
      const F m_new = V::max(score, m[u]);  // std::max(m, score): score only when m < score
      c[u] = simd::exp_v<V>(V::sub(m[u], m_new));
      w[u] = simd::exp_v<V>(V::sub(score, m_new));
      const F l_new = V::add(V::mul(l[u], c[u]), w[u]);
      m[u] = partial ? V::blend(seen[u], m[u], m_new) : m_new;
      l[u] = partial ? V::blend(seen[u], l[u], l_new) : l_new;
      rescale = rescale || V::any(V::lt(c[u], one)) || V::any(V::is_nan(c[u]));
    }
    const T* v_row = v.row<const T>(b, kv_head, key);
    // acc * 1 == acc: with no lane to rescale the model's skipped multiply is skipped here too.
    for (std::int64_t d = 0; d < D; ++d) {
      const F vd = V::set1(widen(v_row[d]));
      for (int u = 0; u < R; ++u) {
        F& a = acc[d * R + u];
        const F a_new = V::add(rescale ? V::mul(a, c[u]) : a, V::mul(w[u], vd));
        a = partial ? V::blend(seen[u], a, a_new) : a_new;
      }
    }
  }
  // The sink after the last key, as in the model: m' = max(m, sink), f = exp(m - m'), l = l*f + exp(sink - m'),
  // acc = acc*f; every row of the block has the same head, so the same sink.
  const float sink = sink_of(s, h);
  if (sink != -INFINITY) {
    const F sv = V::set1(sink);
    for (int u = 0; u < R; ++u) {
      const F m_new = V::max(sv, m[u]);  // std::max(m, sink)
      const F f = simd::exp_v<V>(V::sub(m[u], m_new));
      l[u] = V::add(V::mul(l[u], f), simd::exp_v<V>(V::sub(sv, m_new)));
      for (std::int64_t d = 0; d < D; ++d) acc[d * R + u] = V::mul(acc[d * R + u], f);
    }
  }
  // out = acc * (l > 0 ? 1/l : 0), staged over Q's lanes, then narrowed row by row.
  for (int u = 0; u < R; ++u) {
    const F inv = V::blend(V::gt(l[u], V::zero()), V::zero(), V::div(one, l[u]));
    for (std::int64_t d = 0; d < D; ++d) qt[d * R + u] = V::mul(acc[d * R + u], inv);
  }
  for (std::int64_t r = 0; r < rows; ++r) {
    T* dst = out.row<T>(b, h, row0 + r);
    for (std::int64_t d = 0; d < D; ++d) dst[d] = narrow<T>(q_lanes[(d * R + r / W) * W + r % W]);
  }
}

template <class V, class T>
void sdpa_rows(const TensorView& q, const TensorView& k, const TensorView& v, const TensorView& out,
               const SdpaPlan& s, std::int64_t b, std::int64_t h, std::int64_t row0, std::vector<float>& work) {
  constexpr std::int64_t W = V::W;
  static_assert(kSdpaRows % W == 0 && kSdpaRows / W <= 4, "up to four row vectors");
  const std::int64_t rows = std::min(kSdpaRows, s.q_len - row0);
  switch ((rows + W - 1) / W) {  // only as many row vectors as there are rows (a decode-like Lq = 1 takes one)
    case 1: return sdpa_rows_r<V, 1, T>(q, k, v, out, s, b, h, row0, rows, work);
    case 2: return sdpa_rows_r<V, 2, T>(q, k, v, out, s, b, h, row0, rows, work);
    case 3:
      if constexpr (kSdpaRows / W >= 3) return sdpa_rows_r<V, 3, T>(q, k, v, out, s, b, h, row0, rows, work);
      break;
    default:
      if constexpr (kSdpaRows / W >= 4) return sdpa_rows_r<V, 4, T>(q, k, v, out, s, b, h, row0, rows, work);
      break;
  }
}

}  // namespace
}  // namespace fattn::sdpa_detail
