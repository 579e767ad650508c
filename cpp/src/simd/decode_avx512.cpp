// Vec decode on AVX-512, operation for operation the scalar model of
// decode.cpp: the lane-structured dot (pair sums per float4, running sums
// per simdgroup lane, a tree over the 32 lanes), the same exp, the chunk's
// own P·V accumulator. K and V are widened as they are loaded, never copied.
#include <immintrin.h>

#include <algorithm>

#include "decode_engine.hpp"

#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq,fma,f16c")
#include "simd/avx512_common.hpp"  // after the target pragma: its inline code is AVX-512

namespace fattn::decode_detail {
namespace {

using simd::avx512::load16;

// dot(k, q) with the simdgroup's structure. Vector u of each 128-element
// block holds simdgroup lanes 4u..4u+3 (one float4 each): the pair sums put
// each lane's dot4 in the lane's first element, which accumulates down the
// blocks; the 32 lanes then meet in the scalar model's tree.
template <class T>
float lane_dot(const T* k, const float* q, std::int64_t D) {
  __m512 acc[8];
  for (auto& a : acc) a = _mm512_setzero_ps();
  const std::int64_t full = D / 128, rest = (D % 128) / 16;  // D is a multiple of 32
  auto step = [&](std::int64_t base, int u) {
    const __m512 prod = _mm512_mul_ps(load16(k + base + 16 * u, 0xffff), _mm512_loadu_ps(q + base + 16 * u));
    const __m512 pairs = _mm512_add_ps(prod, _mm512_permute_ps(prod, 0xB1));     // (p0+p1), (p2+p3)
    const __m512 dot4 = _mm512_add_ps(pairs, _mm512_permute_ps(pairs, 0x4E));   // (p0+p1)+(p2+p3)
    acc[u] = _mm512_add_ps(acc[u], dot4);
  };
  for (std::int64_t blk = 0; blk < full; ++blk)
    for (int u = 0; u < 8; ++u) step(blk * 128, u);
  for (int u = 0; u < rest; ++u) step(full * 128, u);
  // Lane 4u+t sits in element 4t of acc[u]: tree levels 1-2 inside each vector
  // (elements 0+4, 8+12, then those two), levels 3-5 across vectors in order.
  __m512 t[8];
  for (int u = 0; u < 8; ++u) {
    const __m512 l1 = _mm512_add_ps(acc[u], _mm512_shuffle_f32x4(acc[u], acc[u], 0xB1));
    t[u] = _mm512_add_ps(l1, _mm512_shuffle_f32x4(l1, l1, 0x4E));
  }
  const __m512 l3a = _mm512_add_ps(t[0], t[1]), l3b = _mm512_add_ps(t[2], t[3]);
  const __m512 l3c = _mm512_add_ps(t[4], t[5]), l3d = _mm512_add_ps(t[6], t[7]);
  const __m512 total = _mm512_add_ps(_mm512_add_ps(l3a, l3b), _mm512_add_ps(l3c, l3d));
  return _mm512_cvtss_f32(total);
}

}  // namespace

template <class T>
void decode_group_avx512(const TensorView& q, const TensorView& k, const TensorView& v, const TensorView& o_part,
                         const TensorView& s_part, const TensorView& m_part, const Decode& p, std::int64_t b,
                         std::int64_t kv_head, std::int64_t g, std::vector<float>& work) {
  using simd::avx512::exp_v;
  constexpr std::int64_t W = simd::avx512::kLanes;  // floats per vector
  const std::int64_t D = p.head_dim, group = p.heads / p.kv_heads, C = kDecodeChunk;
  work.resize(std::size_t(2 * group * D + D + 3 * group));
  float* qh = work.data();
  float* o = qh + group * D;
  float* lo = o + group * D;
  float* row_max = lo + D;
  float* row_sum = row_max + group;
  for (std::int64_t r = 0; r < group; ++r) {
    const float* src = q.row<const float>(b, kv_head * group + r, 0);
    for (std::int64_t d = 0; d < D; ++d) qh[r * D + d] = f16_to_f32(f32_to_f16(src[d]));
    row_max[r] = kInitialMax;
    row_sum[r] = 0.0f;
  }
  std::fill(o, o + group * D, 0.0f);

  alignas(64) float s[kDecodeChunk], w[kDecodeChunk];
  for (std::int64_t chunk = g; chunk * C < p.kv_len; chunk += p.nwg) {
    const std::int64_t p0 = chunk * C, valid = std::min(C, p.kv_len - p0);
    if (p0 + valid <= p.window_start) continue;
    for (std::int64_t r = 0; r < group; ++r) {
      for (std::int64_t j = 0; j < C; ++j) {
        if (j >= valid) {
          s[j] = -kInf;
          continue;
        }
        const float dot = lane_dot(k.row<const T>(b, kv_head, p0 + j), qh + r * D, D);
        const float mask = p0 + j < p.window_start ? kMaskedScore : 0.0f;
        s[j] = p.softcap > 0.0f ? p.softcap * std::tanh(dot * p.scale_over_cap) + mask : std::fma(dot, p.scale, mask);
      }
      float chunk_max = -kInf;
      for (std::int64_t j = 0; j < C; ++j) chunk_max = std::max(chunk_max, s[j]);
      const float old_max = row_max[r];
      const float new_max = std::max(old_max, chunk_max);
      const float rescale = simd::exp_f32(old_max - new_max);
      const __m512 nm = _mm512_set1_ps(new_max);
      for (std::int64_t j = 0; j < C; j += W)
        _mm512_store_ps(w + j, exp_v(_mm512_sub_ps(_mm512_load_ps(s + j), nm)));
      row_sum[r] = row_sum[r] * rescale + tree_sum(w, C);
      row_max[r] = new_max;
      // lo = sum_p fma(v_p, w_p, .), then O = O * rescale + lo.
      const __m512 rv = _mm512_set1_ps(rescale);
      float* o_row = o + r * D;
      for (std::int64_t d0 = 0; d0 < D; d0 += 4 * W) {
        const int nv = int(std::min<std::int64_t>(4, (D - d0) / W));
        __m512 acc[4] = {_mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps()};
        for (std::int64_t j = 0; j < valid; ++j) {
          const T* v_row = v.row<const T>(b, kv_head, p0 + j) + d0;
          const __m512 wj = _mm512_set1_ps(w[j]);
          for (int u = 0; u < nv; ++u) acc[u] = _mm512_fmadd_ps(load16(v_row + u * W, 0xffff), wj, acc[u]);
        }
        for (int u = 0; u < nv; ++u) {
          float* dst = o_row + d0 + u * W;
          _mm512_storeu_ps(dst, _mm512_add_ps(_mm512_mul_ps(_mm512_loadu_ps(dst), rv), acc[u]));
        }
      }
    }
  }
  for (std::int64_t r = 0; r < group; ++r) {
    const std::int64_t h = kv_head * group + r;
    std::copy(o + r * D, o + (r + 1) * D, o_part.row<float>(b, h, g));
    *s_part.row<float>(b, h, g) = row_sum[r];
    *m_part.row<float>(b, h, g) = row_max[r];
  }
}

template void decode_group_avx512<float>(const TensorView&, const TensorView&, const TensorView&, const TensorView&,
                                         const TensorView&, const TensorView&, const Decode&, std::int64_t,
                                         std::int64_t, std::int64_t, std::vector<float>&);
template void decode_group_avx512<float16>(const TensorView&, const TensorView&, const TensorView&,
                                           const TensorView&, const TensorView&, const TensorView&, const Decode&,
                                           std::int64_t, std::int64_t, std::int64_t, std::vector<float>&);
template void decode_group_avx512<bfloat16>(const TensorView&, const TensorView&, const TensorView&,
                                            const TensorView&, const TensorView&, const TensorView&, const Decode&,
                                            std::int64_t, std::int64_t, std::int64_t, std::vector<float>&);

}  // namespace fattn::decode_detail

#pragma GCC pop_options
