// The prefill engine on AVX-512: 32 query rows at a time, one row per vector
// lane, so the online softmax (max, exp, sums, rescale) is plain vertical
// arithmetic. Every operation mirrors the scalar model (prefill.cpp) one for
// one — the same fused multiply-add chains, the same exp, the same trees —
// so the two agree to the bit; tests_py/test_isa.py holds them to it.
//
// Only the kernels below are compiled for AVX-512 (a target pragma, not a
// file-wide flag), so no inline function shared with the portable code is
// ever emitted with AVX-512 instructions.
#include <immintrin.h>

#include <algorithm>
#include <cstring>

#include "prefill_engine.hpp"

#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq,fma,f16c")
#include "simd/avx512_common.hpp"  // after the target pragma: its inline code is AVX-512

namespace fattn::prefill_detail {
namespace {

using namespace simd::avx512;

template <class Arith>
inline __m512 exp_policy(__m512 x) {
  return Arith::kNaturalExp ? exp_v(x) : exp2_v(x);
}

template <class T>
void widen_row(const T* src, float* dst, std::int64_t n) {
  for (std::int64_t d = 0; d < n; d += kLanes) {
    const __mmask16 m = tail_mask(n - d);
    _mm512_mask_storeu_ps(dst + d, m, load16(src + d, m));
  }
}

// For kRows rows that share the V loads: O_r = O_r * f_r (skipped when
// f_r == 1, which changes no bit), then O_r = fma(p_j, v_j, O_r) over the
// keys in order. D goes in blocks of kVec vectors held in registers; the
// last, partial block takes the masked path.
template <int kRows, int kVec>
inline void pv_block(float* const* o_rows, const float* const* p_cols, const float* rescale, const float* vw,
                     std::int64_t keys, std::int64_t D, std::int64_t d0, const __mmask16* masks) {
  __m512 acc[kRows][kVec];
  for (int r = 0; r < kRows; ++r) {
    const __m512 f = _mm512_set1_ps(rescale[r]);
    for (int u = 0; u < kVec; ++u) {
      acc[r][u] = _mm512_maskz_loadu_ps(masks[u], o_rows[r] + d0 + u * kLanes);
      if (rescale[r] != 1.0f) acc[r][u] = _mm512_mul_ps(acc[r][u], f);
    }
  }
  for (std::int64_t j = 0; j < keys; ++j) {
    const float* v_row = vw + j * D + d0;
    __m512 pj[kRows];
    for (int r = 0; r < kRows; ++r) pj[r] = _mm512_set1_ps(p_cols[r][j * kSimdRows]);
    for (int u = 0; u < kVec; ++u) {
      const __m512 vv = _mm512_maskz_loadu_ps(masks[u], v_row + u * kLanes);
      for (int r = 0; r < kRows; ++r) acc[r][u] = _mm512_fmadd_ps(pj[r], vv, acc[r][u]);
    }
  }
  for (int r = 0; r < kRows; ++r)
    for (int u = 0; u < kVec; ++u) _mm512_mask_storeu_ps(o_rows[r] + d0 + u * kLanes, masks[u], acc[r][u]);
}

template <int kRows>
void accumulate_pv(float* const* o_rows, const float* const* p_cols, const float* rescale, const float* vw,
                   std::int64_t keys, std::int64_t D) {
  constexpr int kVec = 4;
  const __mmask16 full[kVec] = {0xffff, 0xffff, 0xffff, 0xffff};
  std::int64_t d0 = 0;
  for (; d0 + kVec * kLanes <= D; d0 += kVec * kLanes)
    pv_block<kRows, kVec>(o_rows, p_cols, rescale, vw, keys, D, d0, full);
  for (; d0 < D; d0 += kLanes) {  // the tail, one (masked) vector at a time
    const __mmask16 m[1] = {tail_mask(D - d0)};
    pv_block<kRows, 1>(o_rows, p_cols, rescale, vw, keys, D, d0, m);
  }
}

}  // namespace

template <class T, class Arith>
void prefill_rows_avx512(const TensorView& q, const TensorView& k, const TensorView& v, const TensorView& out,
                         const Problem& p, std::int64_t b, std::int64_t h, std::int64_t row0,
                         std::vector<float>& workspace) {
  constexpr std::int64_t R = kSimdRows;  // 32 rows: two vectors of lanes
  const std::int64_t D = p.head_dim, BQ = p.geometry.q_tile, BK = p.geometry.k_tile;
  const std::int64_t rows = std::min(R, p.q_len - row0);
  const std::int64_t kv_head = h / (p.heads / p.kv_heads);
  const std::int64_t n_tiles = (p.k_len + BK - 1) / BK;

  workspace.resize(std::size_t(D * R + 2 * BK * D + BK * R + R * D + 4 * R));
  float* qT = workspace.data();  // [D][R]: staged Q, transposed so rows are lanes
  float* kw = qT + D * R;        // [BK][D]: the K tile in f32
  float* vw = kw + BK * D;       // [BK][D]: the V tile in f32
  float* sT = vw + BK * D;       // [BK][R]: scores, then weights
  float* o = sT + BK * R;        // [R][D]: the output accumulators
  float* row_max = o + R * D;
  float* row_sum = row_max + R;
  float* rescale = row_sum + R;

  // Stage Q exactly as the scalar model does, transposed.
  const float factor = Arith::template q_factor<T>(p.scale);
  std::fill(qT, qT + D * R, 0.0f);
  for (std::int64_t r = 0; r < rows; ++r) {
    const T* src = q.row<const T>(b, h, row0 + r);
    for (std::int64_t d = 0; d < D; ++d) qT[d * R + r] = Arith::template stage_q<T>(widen(src[d]), factor);
  }
  std::fill(o, o + R * D, 0.0f);
  std::fill(row_max, row_max + R, kInitialMax);
  std::fill(row_sum, row_sum + R, 0.0f);

  // Each row keeps its own block's tile range and tile-skip bytes.
  std::int64_t limit[R], block_of[R], max_limit = 0;
  for (std::int64_t r = 0; r < rows; ++r) {
    block_of[r] = (row0 + r) / BQ;
    const std::int64_t block_end = std::min(block_of[r] * BQ + BQ, p.q_len);
    limit[r] = p.causal ? std::min(n_tiles, (block_end + BK - 1) / BK) : n_tiles;
    max_limit = std::max(max_limit, limit[r]);
  }
  __m512i row_index[2];
  for (int half = 0; half < 2; ++half)
    row_index[half] = _mm512_add_epi32(_mm512_set1_epi32(std::int32_t(row0 + half * kLanes)),
                                       _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15));
  const __m512 neg_inf = _mm512_set1_ps(-kInf);

  for (std::int64_t tile = 0; tile < max_limit; ++tile) {
    std::uint32_t active = 0, add_mask = 0;
    for (std::int64_t r = 0; r < rows; ++r) {
      const std::uint8_t action = p.blk ? p.blk->data[block_of[r] * p.blk->cols + tile] : 1;
      if (tile < limit[r] && action != 0) {
        active |= 1u << r;
        if (action != 2) add_mask |= 1u << r;
      }
    }
    if (active == 0) continue;
    const std::int64_t key0 = tile * BK, keys = std::min(BK, p.k_len - key0);
    for (std::int64_t j = 0; j < keys; ++j) {
      widen_row(k.row<const T>(b, kv_head, key0 + j), kw + j * D, D);
      widen_row(v.row<const T>(b, kv_head, key0 + j), vw + j * D, D);
    }
    std::fill(kw + keys * D, kw + BK * D, 0.0f);

    // Scores: for 8 keys at a time, 16 accumulators (8 keys x 2 row vectors),
    // each an fma chain over D in order.
    for (std::int64_t jb = 0; jb < BK; jb += 8) {
      __m512 acc0[8], acc1[8];
      for (int jj = 0; jj < 8; ++jj) acc0[jj] = acc1[jj] = _mm512_setzero_ps();
      const float* kb = kw + jb * D;
      for (std::int64_t d = 0; d < D; ++d) {
        const __m512 q0 = _mm512_loadu_ps(qT + d * R), q1 = _mm512_loadu_ps(qT + d * R + kLanes);
#pragma GCC unroll 8
        for (int jj = 0; jj < 8; ++jj) {
          const __m512 kd = _mm512_set1_ps(kb[jj * D + d]);
          acc0[jj] = _mm512_fmadd_ps(q0, kd, acc0[jj]);
          acc1[jj] = _mm512_fmadd_ps(q1, kd, acc1[jj]);
        }
      }
      const __m512 scale = _mm512_set1_ps(p.scale);
      for (int jj = 0; jj < 8; ++jj) {
        float* s = sT + (jb + jj) * R;
        if (jb + jj >= keys) {  // past Lk
          _mm512_storeu_ps(s, neg_inf);
          _mm512_storeu_ps(s + kLanes, neg_inf);
          continue;
        }
        __m512 s0 = acc0[jj], s1 = acc1[jj];
        if (Arith::kNaturalExp) {  // llama.cpp: the scale goes on the f32 score (Arith::score)
          s0 = _mm512_mul_ps(s0, scale);
          s1 = _mm512_mul_ps(s1, scale);
        }
        _mm512_storeu_ps(s, s0);
        _mm512_storeu_ps(s + kLanes, s1);
      }
    }
    // Masks in the seed's order.
    auto apply_causal = [&] {
      if (!p.causal) return;
      for (std::int64_t j = 0; j < keys; ++j) {
        const __m512i key = _mm512_set1_epi32(std::int32_t(key0 + j));
        for (int half = 0; half < 2; ++half) {
          float* s = sT + j * R + half * kLanes;
          const __mmask16 future = _mm512_cmpgt_epi32_mask(key, row_index[half]);
          _mm512_storeu_ps(s, _mm512_mask_blend_ps(future, _mm512_loadu_ps(s), neg_inf));
        }
      }
    };
    auto apply_mask = [&] {
      if (!p.mask || add_mask == 0) return;
      for (std::int64_t r = 0; r < rows; ++r) {
        if (!(add_mask >> r & 1u)) continue;
        const std::int64_t i = row0 + r;
        for (std::int64_t j = 0; j < keys; ++j) {
          float& s = sT[j * R + r];
          if (p.mask->kind == MaskKind::boolean) {
            if (!p.mask->attends(b, h, i, key0 + j)) s = -kInf;
          } else {
            s = s + Arith::mask_term(p.mask->additive_at(b, h, i, key0 + j));
          }
        }
      }
    };
    if (Arith::kCausalOverridesMask) {
      apply_mask();
      apply_causal();
    } else {
      apply_causal();
      apply_mask();
    }

    // Online softmax, all rows at once.
    const std::int64_t group = std::min(Arith::kSumGroup, BK);
    for (int half = 0; half < 2; ++half) {
      const std::int64_t lane0 = half * kLanes;
      const __mmask16 act = __mmask16(active >> lane0);
      if (!act) continue;
      __m512 tile_max = neg_inf;
      for (std::int64_t j = 0; j < BK; ++j) tile_max = _mm512_max_ps(_mm512_loadu_ps(sT + j * R + lane0), tile_max);
      const __m512 old_max = _mm512_loadu_ps(row_max + lane0);
      const __m512 new_max = _mm512_max_ps(tile_max, old_max);  // as std::max(old, tile)
      const __m512 resc = exp_policy<Arith>(_mm512_sub_ps(old_max, new_max));
      for (std::int64_t j = 0; j < BK; ++j) {
        float* s = sT + j * R + lane0;
        _mm512_storeu_ps(s, exp_policy<Arith>(_mm512_sub_ps(_mm512_loadu_ps(s), new_max)));
      }
      __m512 tile_sum = _mm512_setzero_ps();
      __m512 tree[64];
      for (std::int64_t g = 0; g < BK; g += group) {
        for (std::int64_t j = 0; j < group; ++j) tree[j] = _mm512_loadu_ps(sT + (g + j) * R + lane0);
        for (std::int64_t width = group; width > 1; width /= 2)
          for (std::int64_t j = 0; j < width / 2; ++j) tree[j] = _mm512_add_ps(tree[2 * j], tree[2 * j + 1]);
        tile_sum = _mm512_add_ps(tile_sum, tree[0]);
      }
      const __m512 old_sum = _mm512_loadu_ps(row_sum + lane0);
      const __m512 new_sum = _mm512_add_ps(_mm512_mul_ps(old_sum, resc), tile_sum);
      _mm512_storeu_ps(row_sum + lane0, _mm512_mask_blend_ps(act, old_sum, new_sum));
      _mm512_storeu_ps(row_max + lane0, _mm512_mask_blend_ps(act, old_max, new_max));
      _mm512_storeu_ps(rescale + lane0, resc);
    }

    // P·V for the active rows, four at a time so they share the V loads.
    std::int64_t batch[4];
    int n_batch = 0;
    auto flush = [&] {
      float* o_rows[4];
      const float* p_cols[4];
      float f[4];
      for (int i = 0; i < n_batch; ++i) {
        o_rows[i] = o + batch[i] * D;
        p_cols[i] = sT + batch[i];
        f[i] = rescale[batch[i]];
      }
      switch (n_batch) {
        case 4: accumulate_pv<4>(o_rows, p_cols, f, vw, keys, D); break;
        case 3: accumulate_pv<3>(o_rows, p_cols, f, vw, keys, D); break;
        case 2: accumulate_pv<2>(o_rows, p_cols, f, vw, keys, D); break;
        case 1: accumulate_pv<1>(o_rows, p_cols, f, vw, keys, D); break;
        default: break;
      }
      n_batch = 0;
    };
    for (std::int64_t r = 0; r < rows; ++r) {
      if (!(active >> r & 1u)) continue;
      batch[n_batch++] = r;
      if (n_batch == 4) flush();
    }
    flush();
  }

  for (std::int64_t r = 0; r < rows; ++r) {
    const float l = row_sum[r];
    const float* o_row = o + r * D;
    T* dst = out.row<T>(b, h, row0 + r);
    for (std::int64_t d = 0; d < D; ++d) dst[d] = narrow<T>(Arith::normalise(o_row[d], l));
    if (p.lse) *p.lse->row<float>(b, h, row0 + r) = Arith::lse(row_max[r], l);
  }
}

#define FATTN_INSTANTIATE(T, A)                                                                                     \
  template void prefill_rows_avx512<T, A>(const TensorView&, const TensorView&, const TensorView&, const TensorView&, \
                                          const Problem&, std::int64_t, std::int64_t, std::int64_t, std::vector<float>&);
FATTN_INSTANTIATE(float, CandleArithmetic)
FATTN_INSTANTIATE(float16, CandleArithmetic)
FATTN_INSTANTIATE(bfloat16, CandleArithmetic)
FATTN_INSTANTIATE(float, LlamaCppArithmetic)
FATTN_INSTANTIATE(float16, LlamaCppArithmetic)
FATTN_INSTANTIATE(bfloat16, LlamaCppArithmetic)
#undef FATTN_INSTANTIATE

}  // namespace fattn::prefill_detail

#pragma GCC pop_options
