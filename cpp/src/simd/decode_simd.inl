// Vec decode on a vector unit, written once for any vector traits V
// (simd/vec_avx512.hpp, simd/vec_avx2.hpp) and compiled once per
// instruction set inside that set's target region. Operation for operation
// the scalar model of decode.cpp: the lane-structured dot (pair sums per
// float4, running sums per simdgroup lane, a tree over the 32 lanes), the
// same exp, the chunk's own P·V accumulator. K and V are widened as they are
// loaded, never copied.
#include <algorithm>

#include "decode_engine.hpp"
#include "simd/vexp.hpp"

namespace fattn::decode_detail {
// Internal linkage: every ISA's file compiles its own copy, so no template
// instance built for one instruction set can be picked by the linker for
// another (templates here that do not depend on V would otherwise be shared).
namespace {

// Sum of t[0..n) vectors (n a power of two) as a balanced tree, in order.
template <class V>
inline typename V::F tree_v(const typename V::F* t, int n) {
  if (n == 1) return t[0];
  return V::add(tree_v<V>(t, n / 2), tree_v<V>(t + n / 2, n / 2));
}

// dot(k_j, q_r) for four positions j and kHeads query heads at once (sharing
// the K loads), with the simdgroup's structure: in each 128-element block,
// float4 group t belongs to simdgroup lane t, and vector u of the block holds
// the lanes u*W/4 .. (u+1)*W/4 - 1. The four product vectors of one block are
// combined inside each 128-bit lane into [dot4(p_0), .., dot4(p_3)] with
// dot4 = (p0+p1)+(p2+p3); each lane's sums accumulate down the blocks in
// order; then the scalar model's tree over the 32 lanes — first across the
// 128-bit lanes of a vector, then across vectors — runs once for the four
// positions: element j of the result is position j's dot.
template <class V, int kHeads, class T>
void lane_dots4(const T* const* k, const float* const* q, std::int64_t D, float (*out)[4]) {
  using F = typename V::F;
  constexpr int NB = int(128 / V::W);  // vectors per 128-element block
  const std::int64_t full = D / 128, rest = (D % 128) / V::W;
  auto dot4s = [&](std::int64_t at, F* acc) {  // acc[r] += [dot4 of 4 positions] for each head r
    F kv[4];
    for (int j = 0; j < 4; ++j) kv[j] = V::widen_n(k[j] + at, V::W);
    for (int r = 0; r < kHeads; ++r) {
      const F qv = V::load(q[r] + at);
      const F p0 = V::mul(kv[0], qv), p1 = V::mul(kv[1], qv), p2 = V::mul(kv[2], qv), p3 = V::mul(kv[3], qv);
      const F a = V::add(V::template shuffle<0x88>(p0, p1), V::template shuffle<0xDD>(p0, p1));
      const F c = V::add(V::template shuffle<0x88>(p2, p3), V::template shuffle<0xDD>(p2, p3));
      acc[r * NB] = V::add(acc[r * NB], V::add(V::template shuffle<0x88>(a, c), V::template shuffle<0xDD>(a, c)));
    }
  };
  F t[kHeads][NB];
  if constexpr (kHeads * NB <= 16) {
    // Every lane sum fits in registers: walk the blocks once, in order.
    for (int r = 0; r < kHeads; ++r)
      for (int u = 0; u < NB; ++u) t[r][u] = V::zero();
    for (std::int64_t blk = 0; blk < full; ++blk)
#pragma GCC unroll 8
      for (int u = 0; u < NB; ++u) dot4s(blk * 128 + V::W * u, &t[0][u]);
    for (int u = 0; u < rest; ++u) dot4s(full * 128 + V::W * u, &t[0][u]);
    for (int r = 0; r < kHeads; ++r)
      for (int u = 0; u < NB; ++u) t[r][u] = V::lane_tree(t[r][u]);
  } else {
    // Too many for the registers: one vector position u at a time, down the blocks.
    for (int u = 0; u < NB; ++u) {
      F acc[kHeads][NB];
      for (int r = 0; r < kHeads; ++r) acc[r][u] = V::zero();
      for (std::int64_t blk = 0; blk < full; ++blk) dot4s(blk * 128 + V::W * u, &acc[0][u]);
      if (u < rest) dot4s(full * 128 + V::W * u, &acc[0][u]);
      for (int r = 0; r < kHeads; ++r) t[r][u] = V::lane_tree(acc[r][u]);
    }
  }
  for (int r = 0; r < kHeads; ++r) V::store4(out[r], tree_v<V>(t[r], NB));
}

// lo_r = fma chain of v_p * w_r[p] over the chunk's positions, for kHeads
// heads sharing each V load; then O_r = O_r * rescale_r + lo_r. D goes in
// blocks of kVec vectors held in registers.
template <class V, int kHeads, int kVec, class T>
inline void chunk_pv_block(const TensorView& v, std::int64_t b, std::int64_t kv_head, std::int64_t p0,
                           std::int64_t valid, const float* const* w, const float* rescale, float* const* o,
                           std::int64_t d0) {
  using F = typename V::F;
  F acc[kHeads][kVec];
  for (int r = 0; r < kHeads; ++r)
    for (int u = 0; u < kVec; ++u) acc[r][u] = V::zero();
  for (std::int64_t j = 0; j < valid; ++j) {
    const T* v_row = v.row<const T>(b, kv_head, p0 + j) + d0;
    F wj[kHeads];
    for (int r = 0; r < kHeads; ++r) wj[r] = V::set1(w[r][j]);
    for (int u = 0; u < kVec; ++u) {
      const F vv = V::widen_n(v_row + u * V::W, V::W);
      for (int r = 0; r < kHeads; ++r) acc[r][u] = V::fmadd(vv, wj[r], acc[r][u]);
    }
  }
  for (int r = 0; r < kHeads; ++r) {
    const F rv = V::set1(rescale[r]);
    for (int u = 0; u < kVec; ++u) {
      float* dst = o[r] + d0 + u * V::W;
      V::store(dst, V::add(V::mul(V::load(dst), rv), acc[r][u]));
    }
  }
}

template <class V, int kHeads, class T>
void chunk_pv(const TensorView& v, std::int64_t b, std::int64_t kv_head, std::int64_t p0, std::int64_t valid,
              const float* const* w, const float* rescale, float* const* o, std::int64_t D) {
  constexpr int kVec = V::kPvVectors;
  std::int64_t d0 = 0;
  for (; d0 + kVec * V::W <= D; d0 += kVec * V::W)
    chunk_pv_block<V, kHeads, kVec, T>(v, b, kv_head, p0, valid, w, rescale, o, d0);
  for (; d0 < D; d0 += V::W)  // D is a multiple of 32, hence of W
    chunk_pv_block<V, kHeads, 1, T>(v, b, kv_head, p0, valid, w, rescale, o, d0);
}

// Asks for the next chunk's rows while this one is computed (on this machine
// the hardware prefetchers alone left ~35% of the bandwidth unused).
template <class T>
inline void prefetch_rows(const TensorView& t, std::int64_t b, std::int64_t kv_head, std::int64_t p0,
                          std::int64_t count, std::int64_t D) {
  for (std::int64_t j = 0; j < count; ++j) {
    const char* row = reinterpret_cast<const char*>(t.row<const T>(b, kv_head, p0 + j));
    for (std::int64_t off = 0; off < D * std::int64_t(sizeof(T)); off += 64) _mm_prefetch(row + off, _MM_HINT_T0);
  }
}

template <class V, class T>
void decode_groups(const TensorView& q, const TensorView& k, const TensorView& v, const TensorView& o_part,
                          const TensorView& s_part, const TensorView& m_part, const Decode& p, std::int64_t b,
                          std::int64_t kv_head, std::int64_t g_begin, std::int64_t g_end,
                          std::vector<float>& work) {
  using F = typename V::F;
  constexpr std::int64_t W = V::W;  // floats per vector
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
          if (r + 1 < group) lane_dots4<V, 2>(rows4, qs, D, dots);
          else lane_dots4<V, 1>(rows4, qs, D, dots);
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
        const std::int64_t before = std::clamp<std::int64_t>(p.window_start - p0, 0, C);  // masked positions
        for (std::int64_t j = 0; j < C; j += W) {
          const auto lanes = V::iota(std::int32_t(j));
          const auto live = V::int_gt(V::iset1(std::int32_t(valid)), lanes);  // past kv_seq_len stays -inf
          const F mask = V::blend(V::int_gt(V::iset1(std::int32_t(before)), lanes), V::zero(), V::set1(kMaskedScore));
          const F sv = V::load(sr + j);
          V::store(sr + j, V::blend(live, sv, V::fmadd(sv, V::set1(p.scale), mask)));
        }
      }
      for (std::int64_t r = 0; r < group; ++r) {
        float* sr = s + r * C;
        float chunk_max = -kInf;
        for (std::int64_t j = 0; j < C; ++j) chunk_max = std::max(chunk_max, sr[j]);
        const float old_max = row_max[r];
        const float new_max = std::max(old_max, chunk_max);
        rescale[r] = simd::exp_f32(old_max - new_max);
        const F nm = V::set1(new_max);
        for (std::int64_t j = 0; j < C; j += W) V::store(sr + j, simd::exp_v<V>(V::sub(V::load(sr + j), nm)));
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
          case 4: chunk_pv<V, 4, T>(v, b, kv_head, p0, valid, w, rescale + r, o_rows, D); break;
          case 3: chunk_pv<V, 3, T>(v, b, kv_head, p0, valid, w, rescale + r, o_rows, D); break;
          case 2: chunk_pv<V, 2, T>(v, b, kv_head, p0, valid, w, rescale + r, o_rows, D); break;
          default: chunk_pv<V, 1, T>(v, b, kv_head, p0, valid, w, rescale + r, o_rows, D); break;
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

}  // namespace
}  // namespace fattn::decode_detail
