// Vec decode on AVX-512, operation for operation the scalar model of
// decode.cpp: the lane-structured dot (pair sums per float4, running sums
// per simdgroup lane, a tree over the 32 lanes), the same exp, the chunk's
// own P·V accumulator. K and V are widened as they are loaded, never copied.
#include <immintrin.h>

#include <algorithm>

#include "decode_engine.hpp"

#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq,fma,f16c")
#include "simd/vec_avx512.hpp"  // after the target pragma: their inline code is AVX-512
#include "simd/vexp.hpp"

namespace fattn::decode_detail {
namespace {

using simd::Vec512;
inline __m512 load16(const float* p) { return _mm512_loadu_ps(p); }
inline __m512 load16(const float16* p) { return Vec512::widen_n(p, 16); }
inline __m512 load16(const bfloat16* p) { return Vec512::widen_n(p, 16); }

// dot(k_j, q_r) for four positions j and kHeads query heads at once (sharing
// the K loads), with the simdgroup's structure: vector u of a 128-element
// block holds simdgroup lanes 4u..4u+3, one float4 each. The four product
// vectors of one
// block are combined inside each 128-bit lane, so one vector holds the
// dot4 = (p0+p1)+(p2+p3) of each simdgroup lane for all four positions; the
// lane sums accumulate down the blocks, and the scalar model's tree over the
// 32 lanes (levels 1-2 across 128-bit lanes, 3-5 across vectors) runs once
// for the four: element j of the result is position j's dot.
template <int kHeads, class T>
void lane_dots4(const T* const* k, const float* const* q, std::int64_t D, float (*out)[4]) {
  __m512 acc[kHeads][8];
  for (int r = 0; r < kHeads; ++r)
    for (auto& a : acc[r]) a = _mm512_setzero_ps();
  const std::int64_t full = D / 128, rest = (D % 128) / 16;
  auto step = [&](std::int64_t at, int u) {
    __m512 kv[4];
    for (int j = 0; j < 4; ++j) kv[j] = load16(k[j] + at);
    for (int r = 0; r < kHeads; ++r) {
      const __m512 qv = _mm512_loadu_ps(q[r] + at);
      const __m512 p0 = _mm512_mul_ps(kv[0], qv), p1 = _mm512_mul_ps(kv[1], qv);
      const __m512 p2 = _mm512_mul_ps(kv[2], qv), p3 = _mm512_mul_ps(kv[3], qv);
      // Pair sums of two positions side by side, then the sums of those pairs:
      // per 128-bit lane [dot4(p0), dot4(p1), dot4(p2), dot4(p3)].
      const __m512 a = _mm512_add_ps(_mm512_shuffle_ps(p0, p1, 0x88), _mm512_shuffle_ps(p0, p1, 0xDD));
      const __m512 c = _mm512_add_ps(_mm512_shuffle_ps(p2, p3, 0x88), _mm512_shuffle_ps(p2, p3, 0xDD));
      const __m512 dot4 = _mm512_add_ps(_mm512_shuffle_ps(a, c, 0x88), _mm512_shuffle_ps(a, c, 0xDD));
      acc[r][u] = _mm512_add_ps(acc[r][u], dot4);
    }
  };
  for (std::int64_t blk = 0; blk < full; ++blk)
#pragma GCC unroll 8
    for (int u = 0; u < 8; ++u) step(blk * 128 + 16 * u, u);
  for (int u = 0; u < rest; ++u) step(full * 128 + 16 * u, u);
  for (int r = 0; r < kHeads; ++r) {
    __m512 t[8];
    for (int u = 0; u < 8; ++u) {
      const __m512 l1 = _mm512_add_ps(acc[r][u], _mm512_shuffle_f32x4(acc[r][u], acc[r][u], 0xB1));
      t[u] = _mm512_add_ps(l1, _mm512_shuffle_f32x4(l1, l1, 0x4E));
    }
    const __m512 l3a = _mm512_add_ps(t[0], t[1]), l3b = _mm512_add_ps(t[2], t[3]);
    const __m512 l3c = _mm512_add_ps(t[4], t[5]), l3d = _mm512_add_ps(t[6], t[7]);
    const __m512 total = _mm512_add_ps(_mm512_add_ps(l3a, l3b), _mm512_add_ps(l3c, l3d));
    _mm_storeu_ps(out[r], _mm512_castps512_ps128(total));
  }
}

// lo_r = fma chain of v_p * w_r[p] over the chunk's positions, for kHeads
// heads sharing each V load; then O_r = O_r * rescale_r + lo_r. D goes in
// blocks of kVec vectors held in registers.
template <int kHeads, int kVec, class T>
inline void chunk_pv_block(const TensorView& v, std::int64_t b, std::int64_t kv_head, std::int64_t p0,
                           std::int64_t valid, const float* const* w, const float* rescale, float* const* o,
                           std::int64_t d0) {
  constexpr std::int64_t W = Vec512::W;
  __m512 acc[kHeads][kVec];
  for (int r = 0; r < kHeads; ++r)
    for (int u = 0; u < kVec; ++u) acc[r][u] = _mm512_setzero_ps();
  for (std::int64_t j = 0; j < valid; ++j) {
    const T* v_row = v.row<const T>(b, kv_head, p0 + j) + d0;
    __m512 wj[kHeads];
    for (int r = 0; r < kHeads; ++r) wj[r] = _mm512_set1_ps(w[r][j]);
    for (int u = 0; u < kVec; ++u) {
      const __m512 vv = load16(v_row + u * W);
      for (int r = 0; r < kHeads; ++r) acc[r][u] = _mm512_fmadd_ps(vv, wj[r], acc[r][u]);
    }
  }
  for (int r = 0; r < kHeads; ++r) {
    const __m512 rv = _mm512_set1_ps(rescale[r]);
    for (int u = 0; u < kVec; ++u) {
      float* dst = o[r] + d0 + u * W;
      _mm512_storeu_ps(dst, _mm512_add_ps(_mm512_mul_ps(_mm512_loadu_ps(dst), rv), acc[r][u]));
    }
  }
}

template <int kHeads, class T>
void chunk_pv(const TensorView& v, std::int64_t b, std::int64_t kv_head, std::int64_t p0, std::int64_t valid,
              const float* const* w, const float* rescale, float* const* o, std::int64_t D) {
  constexpr std::int64_t W = Vec512::W;
  std::int64_t d0 = 0;
  for (; d0 + 4 * W <= D; d0 += 4 * W) chunk_pv_block<kHeads, 4, T>(v, b, kv_head, p0, valid, w, rescale, o, d0);
  if (d0 < D) chunk_pv_block<kHeads, 2, T>(v, b, kv_head, p0, valid, w, rescale, o, d0);  // D % 64 == 32
}

// Asks for the next chunk's rows while this one is computed: each group
// jumps nwg chunks ahead, which the hardware prefetchers do not follow.
template <class T>
inline void prefetch_rows(const TensorView& t, std::int64_t b, std::int64_t kv_head, std::int64_t p0,
                          std::int64_t count, std::int64_t D) {
  for (std::int64_t j = 0; j < count; ++j) {
    const char* row = reinterpret_cast<const char*>(t.row<const T>(b, kv_head, p0 + j));
    for (std::int64_t off = 0; off < D * std::int64_t(sizeof(T)); off += 64) _mm_prefetch(row + off, _MM_HINT_T0);
  }
}

}  // namespace

template <class T>
void decode_groups_avx512(const TensorView& q, const TensorView& k, const TensorView& v, const TensorView& o_part,
                          const TensorView& s_part, const TensorView& m_part, const Decode& p, std::int64_t b,
                          std::int64_t kv_head, std::int64_t g_begin, std::int64_t g_end,
                          std::vector<float>& work) {
  const auto exp_v = [](__m512 x) { return simd::exp_v<Vec512>(x); };
  constexpr std::int64_t W = Vec512::W;  // floats per vector
  constexpr std::int64_t C = kDecodeChunk;
  const std::int64_t D = p.head_dim, group = p.heads / p.kv_heads, n_groups = g_end - g_begin;
  // work: staged Q (group x D); per NWG group its O (group x D), max and sum
  // (group each); the chunk's scores/weights (group x C) and rescales.
  const std::int64_t state = group * (D + 2);
  work.resize(std::size_t(group * D + n_groups * state + group * C + group + 16));
  float* qh = work.data();
  float* states = qh + group * D;
  float* s = states + n_groups * state;
  float* rescale = s + group * C;
  for (std::int64_t r = 0; r < group; ++r) {
    const float* src = q.row<const float>(b, kv_head * group + r, 0);
    for (std::int64_t d = 0; d < D; ++d) qh[r * D + d] = f16_to_f32(f32_to_f16(src[d]));
  }
  for (std::int64_t gi = 0; gi < n_groups; ++gi) {
    float* st = states + gi * state;
    std::fill(st, st + group * D, 0.0f);
    std::fill(st + group * D, st + group * (D + 1), kInitialMax);
    std::fill(st + group * (D + 1), st + state, 0.0f);
  }

  // Chunks in memory order; each updates its own group's state, so every
  // group still sees its chunks g, g + nwg, ... in the seed's order.
  for (std::int64_t base = 0; base * C < p.kv_len; base += p.nwg) {
    for (std::int64_t g = g_begin; g < g_end; ++g) {
      const std::int64_t chunk = base + g;
      const std::int64_t p0 = chunk * C;
      if (p0 >= p.kv_len) break;
      const std::int64_t valid = std::min(C, p.kv_len - p0);
      if (p0 + valid <= p.window_start) continue;
      float* st = states + (g - g_begin) * state;
      float* o = st;
      float* row_max = st + group * D;
      float* row_sum = row_max + group;
      const std::int64_t next = p0 + C;
      if (next < p.kv_len) {
        prefetch_rows<T>(k, b, kv_head, next, std::min(C, p.kv_len - next), D);
        prefetch_rows<T>(v, b, kv_head, next, std::min(C, p.kv_len - next), D);
      }
      // Scores for every head of the group: four positions and two heads per
      // pass over K (positions past the chunk's end repeat its last row; their
      // scores are not used).
      for (std::int64_t j = valid; j < C; ++j)
        for (std::int64_t r = 0; r < group; ++r) s[r * C + j] = -kInf;
      for (std::int64_t j0 = 0; j0 < valid; j0 += 4) {
        const T* rows4[4];
        for (int j = 0; j < 4; ++j) rows4[j] = k.row<const T>(b, kv_head, p0 + std::min(j0 + j, valid - 1));
        float dots[2][4];
        for (std::int64_t r = 0; r < group; r += 2) {
          const float* qs[2] = {qh + r * D, qh + (r + 1) * D};
          if (r + 1 < group) lane_dots4<2>(rows4, qs, D, dots);
          else lane_dots4<1>(rows4, qs, D, dots);
          for (std::int64_t i = r; i < std::min(group, r + 2); ++i)
            for (std::int64_t j = j0; j < std::min(valid, j0 + 4); ++j) s[i * C + j] = dots[i - r][j - j0];
        }
      }
      // score = fma(dot, scale, mask), or the softcap form, for the valid positions.
      for (std::int64_t r = 0; r < group; ++r) {
        float* sr = s + r * C;
        if (p.softcap > 0.0f) {
          for (std::int64_t j = 0; j < valid; ++j)
            sr[j] = p.softcap * std::tanh(sr[j] * p.scale_over_cap) + (p0 + j < p.window_start ? kMaskedScore : 0.0f);
          continue;
        }
        for (std::int64_t j = 0; j < C; j += W) {
          const __mmask16 live = Vec512::first(valid - j);  // past kv_seq_len stays -inf
          // positions before the window start, counted from p0 (clamped: 64-bit offsets)
          const std::int64_t before = std::clamp<std::int64_t>(p.window_start - p0, 0, C);
          const __mmask16 masked = _mm512_cmpgt_epi32_mask(_mm512_set1_epi32(std::int32_t(before)),
                                                           Vec512::iota(std::int32_t(j)));
          const __m512 mask = _mm512_mask_blend_ps(masked, _mm512_setzero_ps(), _mm512_set1_ps(kMaskedScore));
          const __m512 sv = _mm512_loadu_ps(sr + j);
          _mm512_storeu_ps(sr + j, _mm512_mask_blend_ps(live, sv, _mm512_fmadd_ps(sv, _mm512_set1_ps(p.scale), mask)));
        }
      }
      for (std::int64_t r = 0; r < group; ++r) {
        float* sr = s + r * C;
        float chunk_max = -kInf;
        for (std::int64_t j = 0; j < C; ++j) chunk_max = std::max(chunk_max, sr[j]);
        const float old_max = row_max[r];
        const float new_max = std::max(old_max, chunk_max);
        rescale[r] = simd::exp_f32(old_max - new_max);
        const __m512 nm = _mm512_set1_ps(new_max);
        for (std::int64_t j = 0; j < C; j += W)
          _mm512_storeu_ps(sr + j, exp_v(_mm512_sub_ps(_mm512_loadu_ps(sr + j), nm)));
        row_sum[r] = row_sum[r] * rescale[r] + tree_sum(sr, C);
        row_max[r] = new_max;
      }
      // P·V, four heads per pass over V.
      for (std::int64_t r = 0; r < group; r += 4) {
        const float* w[4];
        float* o_rows[4];
        const std::int64_t n = std::min<std::int64_t>(4, group - r);
        for (std::int64_t i = 0; i < n; ++i) {
          w[i] = s + (r + i) * C;
          o_rows[i] = o + (r + i) * D;
        }
        switch (n) {
          case 4: chunk_pv<4, T>(v, b, kv_head, p0, valid, w, rescale + r, o_rows, D); break;
          case 3: chunk_pv<3, T>(v, b, kv_head, p0, valid, w, rescale + r, o_rows, D); break;
          case 2: chunk_pv<2, T>(v, b, kv_head, p0, valid, w, rescale + r, o_rows, D); break;
          default: chunk_pv<1, T>(v, b, kv_head, p0, valid, w, rescale + r, o_rows, D); break;
        }
      }
    }
  }
  for (std::int64_t g = g_begin; g < g_end; ++g) {
    const float* st = states + (g - g_begin) * state;
    for (std::int64_t r = 0; r < group; ++r) {
      const std::int64_t h = kv_head * group + r;
      std::copy(st + r * D, st + (r + 1) * D, o_part.row<float>(b, h, g));
      *s_part.row<float>(b, h, g) = st[group * (D + 1) + r];
      *m_part.row<float>(b, h, g) = st[group * D + r];
    }
  }
}

#define FATTN_INSTANTIATE(T)                                                                                    \
  template void decode_groups_avx512<T>(const TensorView&, const TensorView&, const TensorView&, const TensorView&, \
                                        const TensorView&, const TensorView&, const Decode&, std::int64_t,          \
                                        std::int64_t, std::int64_t, std::int64_t, std::vector<float>&);
FATTN_INSTANTIATE(float)
FATTN_INSTANTIATE(float16)
FATTN_INSTANTIATE(bfloat16)
#undef FATTN_INSTANTIATE

}  // namespace fattn::decode_detail

#pragma GCC pop_options
