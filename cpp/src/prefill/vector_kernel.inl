// The prefill engine on a vector unit, written once for any vector traits V
// (simd/vec_avx512.hpp, simd/vec_avx2.hpp) and compiled once per
// instruction set inside that set's target region.
//
// 32 query rows at a time, one row per vector lane, so the online softmax
// (max, exp, sums, rescale) is plain vertical arithmetic. Every operation
// mirrors the scalar model (prefill.cpp) one for one — the same fused
// multiply-add chains, the same exp, the same trees — so the paths agree to
// the bit; tests_py/test_isa.py holds them to it. A row whose block would not
// visit a tile (causal limit, blk 0) is left out of that tile's update.
// Three choices follow the target's traits: P·V with the rows in the lanes
// (kPvRowsInLanes; AVX2, measured on Zen 1, and AVX-512, on an Intel Xeon),
// the bf16 Q·Kᵀ on a dot-product instruction (kBf16Dot; AVX512_BF16) or as
// two FMAs per pair under FtzDazScope (the others): the same bits either
// way (numerics/bf16_dot.hpp), and for those FMAs bf16 K read in place as
// 32-bit pairs (the dot product's unit; AVX2: a widening pass cost ~10% on
// Zen 1) or widened to f32 once per tile (kWidenBf16Keys; AVX-512, where
// splitting each pair takes the FMA ports). bf16 V is read in place as pairs.
#include <algorithm>
#include <cstring>
#include <type_traits>

#include "prefill/engine.hpp"
#include "simd/vexp.hpp"

// Unrolls a loop over register-held accumulators before GCC decides where an
// array of vectors lives: without it the arrays of pv_block stayed in memory,
// every FMA's result stored back to the stack (16 stores per 16 FMAs, half
// the P·V rate on AVX-512).
#define FATTN_UNROLL _Pragma("GCC unroll 16")

namespace fattn::prefill_detail {
// Internal linkage: every ISA's file compiles its own copy, so no template
// instance built for one instruction set can be picked by the linker for
// another (templates here that do not depend on V would otherwise be shared).
namespace {

// Arith::exp on a vector.
template <class V, class Arith>
inline typename V::F exp_policy(typename V::F x) {
  return Arith::kNaturalExp ? simd::exp_v<V>(x) : simd::exp2_v<V>(x);
}

template <class V, class T>
void widen_row(const T* src, float* dst, std::int64_t n) {
  for (std::int64_t d = 0; d < n; d += V::W) V::store_n(dst + d, V::widen_n(src + d, n - d), n - d);
}

// How a K or V row's elements d and d + 1 become broadcast vectors. f32
// rows (and widened ones): a broadcast each. bf16 rows read in place: one
// broadcast of the 32-bit pair, then each half as the f32 it stands for.
template <class V, class E>
struct RowPairs {
  using F = typename V::F;
  using Pair = const float*;
  static Pair load(const float* row) { return row; }
  static F first(Pair p) { return V::set1(p[0]); }
  static F second(Pair p) { return V::set1(p[1]); }
  static F one(const float* row) { return V::set1(row[0]); }
};
template <class V>
struct RowPairs<V, bfloat16> {
  using F = typename V::F;
  using Pair = F;
  static Pair load(const bfloat16* row) { return V::bcast_bf16_pair(row); }
  static F first(Pair p) { return V::bf16_low(p); }
  static F second(Pair p) { return V::bf16_high(p); }
  static F one(const bfloat16* row) {
    bfloat16 x;  // copied as bytes, like the pairs: the past-Lk row is float storage
    std::memcpy(&x, row, sizeof x);
    return V::set1(widen(x));
  }
};

// One pass of the score kernel: acc[jj][u] = the fma chain over d, in
// order, of Q's staged column d (row vector u) times key jj's element d.
template <class V, int KP, std::int64_t NV>
inline void score_step(const float* q_column, const typename V::F* kd, typename V::F (&acc)[KP][NV]) {
  typename V::F qv[NV];
  for (std::int64_t u = 0; u < NV; ++u) qv[u] = V::in_register(V::load(q_column + u * V::W));
  for (int jj = 0; jj < KP; ++jj)
    for (std::int64_t u = 0; u < NV; ++u) acc[jj][u] = V::fmadd(qv[u], kd[jj], acc[jj][u]);
}
template <class V, int KP, std::int64_t NV>
inline void score_pass(const float* qT, const float* const* kb, std::int64_t D, typename V::F (&acc)[KP][NV]) {
  for (std::int64_t d = 0; d < D; ++d) {
    typename V::F kd[KP];
    for (int jj = 0; jj < KP; ++jj) kd[jj] = V::set1(kb[jj][d]);
    score_step<V>(qT + d * kSimdRows, kd, acc);
  }
}
// bf16 keys summed as fattn's bf16 dot product (numerics/bf16_dot.hpp): per
// pair, element d + 1's FMA then element d's; an odd D ends with a pair whose
// second element is 0 (fma(0, 0, acc), then the last element's). The caller
// holds FtzDazScope, which makes each FMA the instruction's step (DAZ
// inputs, FTZ results). The rows are read in place (E = bfloat16: two
// elements per broadcast, RowPairs) or widened to f32 first (E = float: a
// broadcast each, the same values).
template <class V, int KP, std::int64_t NV, class E>
inline void score_pass_pairs(const float* qT, const E* const* kb, std::int64_t D, typename V::F (&acc)[KP][NV]) {
  using Pairs = RowPairs<V, E>;
  using F = typename V::F;
  const E* rows[KP];  // local copies: the barrier below does not reload them
  for (int jj = 0; jj < KP; ++jj) rows[jj] = kb[jj];
  std::int64_t d = 0;
  if constexpr (2 * NV + KP * NV <= 12) {
    // Few row vectors: both elements' Q columns stay in registers and each
    // key's pair is used at once.
    for (; d + 2 <= D; d += 2) {
      F q0[NV], q1[NV];
      for (std::int64_t u = 0; u < NV; ++u) {
        q0[u] = V::in_register(V::load(qT + d * kSimdRows + u * V::W));
        q1[u] = V::in_register(V::load(qT + (d + 1) * kSimdRows + u * V::W));
      }
      for (int jj = 0; jj < KP; ++jj) {
        const auto pair = Pairs::load(rows[jj] + d);
        const F lo = Pairs::first(pair), hi = Pairs::second(pair);
        for (std::int64_t u = 0; u < NV; ++u) acc[jj][u] = V::fmadd(q1[u], hi, acc[jj][u]);
        for (std::int64_t u = 0; u < NV; ++u) acc[jj][u] = V::fmadd(q0[u], lo, acc[jj][u]);
      }
    }
  } else {
    for (; d + 2 <= D; d += 2) {
      typename Pairs::Pair pair[KP];
      F kd[KP];
      for (int jj = 0; jj < KP; ++jj) pair[jj] = Pairs::load(rows[jj] + d);
      for (int jj = 0; jj < KP; ++jj) kd[jj] = Pairs::second(pair[jj]);
      score_step<V>(qT + (d + 1) * kSimdRows, kd, acc);
      // Keeps element d's Q loads after element d + 1's FMAs: hoisted, they
      // took 4 more of AVX2's 16 registers and an accumulator went to the stack.
      asm volatile("" ::: "memory");
      for (int jj = 0; jj < KP; ++jj) kd[jj] = Pairs::first(pair[jj]);
      score_step<V>(qT + d * kSimdRows, kd, acc);
    }
  }
  if (d < D) {
    const F zero = V::zero();
    F kd[KP];
    for (int jj = 0; jj < KP; ++jj) {
      kd[jj] = Pairs::one(rows[jj] + d);
      for (std::int64_t u = 0; u < NV; ++u) acc[jj][u] = V::fmadd(zero, zero, acc[jj][u]);
    }
    score_step<V>(qT + d * kSimdRows, kd, acc);
  }
}

// The same sum on a dot-product instruction (V::kBf16Dot): Q staged as bf16
// pairs (qP[p * kSimdRows + row]: elements 2p and 2p + 1 of the row in one
// 32-bit lane, the second 0 past an odd D), each key's pair broadcast, one
// V::dot_bf16 per pair, key and row vector.
template <class V, int KP, std::int64_t NV>
inline void score_pass_dot(const float* qP, const bfloat16* const* kb, std::int64_t D,
                           typename V::F (&acc)[KP][NV]) {
  using F = typename V::F;
  const bfloat16* rows[KP];
  for (int jj = 0; jj < KP; ++jj) rows[jj] = kb[jj];
  std::int64_t d = 0;
  auto step = [&](const float* q_pairs, const F (&kd)[KP]) {
    F qv[NV];
    for (std::int64_t u = 0; u < NV; ++u) qv[u] = V::in_register(V::load(q_pairs + u * V::W));
    for (int jj = 0; jj < KP; ++jj)
      for (std::int64_t u = 0; u < NV; ++u) acc[jj][u] = V::dot_bf16(acc[jj][u], qv[u], kd[jj]);
  };
  for (; d + 2 <= D; d += 2) {
    F kd[KP];
    for (int jj = 0; jj < KP; ++jj) kd[jj] = V::bcast_bf16_pair(rows[jj] + d);
    step(qP + (d / 2) * kSimdRows, kd);
  }
  if (d < D) {
    F kd[KP];
    for (int jj = 0; jj < KP; ++jj) kd[jj] = V::bcast_bf16_lone(rows[jj] + d);
    step(qP + (d / 2) * kSimdRows, kd);
  }
}

// Row vectors of a block that hold at least one row: a block of fewer than
// kSimdRows rows (a short query, the last block of any) computes only those.
// fn gets the count as a compile-time constant from 1 to NV.
template <std::int64_t NV, class Fn>
inline void with_row_vectors(std::int64_t n, Fn&& fn) {
  if constexpr (NV > 1)
    if (n < NV) return with_row_vectors<NV - 1>(n, fn);
  fn(std::integral_constant<std::int64_t, NV>{});
}

// Keys per score pass for NV row vectors: the target's choice for a full
// block, more keys as fewer row vectors leave registers free (at most 8,
// the smallest k_tile).
template <class V, std::int64_t NV>
constexpr int score_keys() {
  const std::int64_t keys = V::kScoreKeys * ((kSimdRows / V::W) / NV);
  return int(keys < 8 ? keys : 8);
}

// No scope: the f32 and f16 score chains keep IEEE denormals.
struct NoScope {};

// What turns a dot product into a score in the policy's units: llama.cpp's
// scale multiply, or the softcap (which folds that scale into `in`).
struct ScoreUnits {
  float scale;
  bool softcap;
  float in, out;
};

// The scores of one key tile for the first NV row vectors: sT[j * R + row],
// each the fma chain over D in order (bf16: fattn's bf16 dot product, inside
// FtzDazScope); keys past `keys` get -inf. llama.cpp's scale multiply or the
// softcap comes after the scope. The scope's MXCSR writes are compiler memory barriers and
// the sums start from loads (Q, K) and end in stores (sT), so no FMA can move
// out of the scope and no multiply into it.
// kBf16: the keys are bf16 (read in place, or widened to f32 when E = float).
template <class V, class Arith, std::int64_t NV, bool kBf16, class E>
inline void score_tile(const float* qT, const E* const* k_rows, std::int64_t BK, std::int64_t keys, std::int64_t D,
                       float* sT, const ScoreUnits& units) {
  using F = typename V::F;
  constexpr int KP = score_keys<V, NV>();
  {
    [[maybe_unused]] const std::conditional_t<kBf16, simd::FtzDazScope, NoScope> scope;
    for (std::int64_t jb = 0; jb < BK; jb += KP) {
      F acc[KP][NV];
      for (int jj = 0; jj < KP; ++jj)
        for (std::int64_t u = 0; u < NV; ++u) acc[jj][u] = V::zero();
      const E* kb[KP];  // local copies: the compiler keeps them in registers
      for (int jj = 0; jj < KP; ++jj) kb[jj] = k_rows[jb + jj];
      if constexpr (kBf16 && V::kBf16Dot)
        score_pass_dot<V, KP, NV>(qT, kb, D, acc);
      else if constexpr (kBf16)
        score_pass_pairs<V, KP, NV>(qT, kb, D, acc);
      else
        score_pass<V, KP, NV>(qT, kb, D, acc);
      for (int jj = 0; jj < KP; ++jj) {
        float* s = sT + (jb + jj) * kSimdRows;
        for (std::int64_t u = 0; u < NV; ++u) {
          F sv = acc[jj][u];
          if (jb + jj >= keys) sv = V::set1(-kInf);  // past Lk
          V::store(s + u * V::W, sv);
        }
      }
    }
  }
  if (units.softcap) {  // softcap_score, after the scope
    const F in = V::set1(units.in), out = V::set1(units.out);
    for (std::int64_t j = 0; j < keys; ++j)
      for (std::int64_t u = 0; u < NV; ++u) {
        float* s = sT + j * kSimdRows + u * V::W;
        V::store(s, V::mul(out, simd::tanh_v<V>(V::mul(V::load(s), in))));
      }
  } else if (Arith::kScaleAfterDot) {  // Arith::score, after the scope
    for (std::int64_t j = 0; j < keys; ++j)
      for (std::int64_t u = 0; u < NV; ++u) {
        float* s = sT + j * kSimdRows + u * V::W;
        V::store(s, V::mul(V::load(s), V::set1(units.scale)));
      }
  }
}

// The same for a short block, out of line: inlined next to the full
// block's, it changed how the compiler allocated the full block's registers
// (an accumulator went to the stack).
template <class V, class Arith, std::int64_t NV, bool kBf16, class E>
__attribute__((noinline)) void score_tile_short(const float* qT, const E* const* k_rows, std::int64_t BK,
                                                std::int64_t keys, std::int64_t D, float* sT,
                                                const ScoreUnits& units) {
  score_tile<V, Arith, NV, kBf16>(qT, k_rows, BK, keys, D, sT, units);
}

// A batch of `tiles` consecutive key tiles (their P·V deferred so the
// accumulators stay in registers across them), for kRows rows sharing the V
// loads: per tile t, O_r = O_r * f_r[t] (skipped when the factor is 1, which
// changes no bit), then O_r = fma(p_j, v_j, O_r) over the tile's keys in
// order: per element the scalar model's sequence, tile after tile. Tile t's
// weights are p_cols[r][t * tile_stride + j * kSimdRows], its V rows
// v_rows[t * bk + j], its key count keys[t]; kVec vectors of D from d0 (the
// last may be partial). (O * 1 is O to the bit, NaN payloads included, as
// the multiply returns its first operand's quiet NaN.)
template <class E = float>  // V's element type as read: float, or bfloat16 in place
struct PvBatch {
  const E* const* v_rows;
  const std::int64_t* keys;
  std::int64_t tiles, bk, tile_stride;
};

template <class V, int kRows, int kVec, class E>
inline void pv_block(float* const* o_rows, const float* const* p_cols, const float* rescale, const PvBatch<E>& batch,
                     std::int64_t D, std::int64_t d0) {
  using F = typename V::F;
  F acc[kRows][kVec];
  FATTN_UNROLL for (int r = 0; r < kRows; ++r)
    FATTN_UNROLL for (int u = 0; u < kVec; ++u) acc[r][u] = V::load_n(o_rows[r] + d0 + u * V::W, D - d0 - u * V::W);
  for (std::int64_t t = 0; t < batch.tiles; ++t) {
    const float* f = rescale + t * kSimdRows;  // the rows' factors for tile t, see accumulate_pv
    bool all_one = true;
    FATTN_UNROLL for (int r = 0; r < kRows; ++r) all_one = all_one && f[r] == 1.0f;
    if (!all_one)  // x * 1 is x to the bit, so the rows whose factor is 1 may take it too
      FATTN_UNROLL for (int r = 0; r < kRows; ++r)
        FATTN_UNROLL for (int u = 0; u < kVec; ++u) acc[r][u] = V::mul(acc[r][u], V::set1(f[r]));
    const E* const* v_rows = batch.v_rows + t * batch.bk;
    const std::int64_t offset = t * batch.tile_stride, keys = batch.keys[t];
    for (std::int64_t j = 0; j < keys; ++j) {
      const E* v_row = v_rows[j] + d0;
      F pj[kRows];
      FATTN_UNROLL for (int r = 0; r < kRows; ++r) pj[r] = V::set1(p_cols[r][offset + j * kSimdRows]);
      FATTN_UNROLL for (int u = 0; u < kVec; ++u) {
        const F vv = V::widen_n(v_row + u * V::W, D - d0 - u * V::W);
        FATTN_UNROLL for (int r = 0; r < kRows; ++r) acc[r][u] = V::fmadd(pj[r], vv, acc[r][u]);
      }
    }
  }
  FATTN_UNROLL for (int r = 0; r < kRows; ++r)
    FATTN_UNROLL for (int u = 0; u < kVec; ++u) V::store_n(o_rows[r] + d0 + u * V::W, acc[r][u], D - d0 - u * V::W);
}

// rescale[t * kSimdRows + r]: row r's factor for tile t (gathered by the caller).
template <class V, int kRows, class E>
void accumulate_pv(float* const* o_rows, const float* const* p_cols, const float* rescale, const PvBatch<E>& batch,
                   std::int64_t D) {
  constexpr int kVec = V::pv_vectors(kRows);
  std::int64_t d0 = 0;
  for (; d0 + kVec * V::W <= D; d0 += kVec * V::W) pv_block<V, kRows, kVec>(o_rows, p_cols, rescale, batch, D, d0);
  for (; d0 < D; d0 += V::W) pv_block<V, kRows, 1>(o_rows, p_cols, rescale, batch, D, d0);
}

// The same P·V with the rows in the lanes, for targets whose 16 registers
// let the row form above share each V load over only two FMAs: O is kept
// transposed ([D][kSimdRows]), a key's weights for the block's NV row
// vectors sit in NV vectors, and each V element is one broadcast for NV
// FMAs. kD elements of D per pass (1, or pairs: more as fewer row vectors
// leave registers free, so enough FMA chains overlap). Per element the
// sequence is the row form's (rescale by the tile's factor, then fma(p_j,
// v_j, O) over the keys in order); rows outside `active` skip the batch in
// the scalar model, so they keep their old O. rescaled[t]: some active
// row's factor for tile t is not 1.
template <class V, int kD, std::int64_t NV, class E>
inline void pv_lanes_block(float* oT, const float* p, const float* rescale, const bool* rescaled,
                           const PvBatch<E>& batch, const typename V::M* active, bool all_active, std::int64_t d0) {
  static_assert(kD == 1 || kD % 2 == 0, "a pass takes one element of D or pairs");
  using F = typename V::F;
  using Pairs = RowPairs<V, E>;
  constexpr std::int64_t R = kSimdRows;
  F acc[kD][NV];
  FATTN_UNROLL for (int dd = 0; dd < kD; ++dd)
    FATTN_UNROLL for (std::int64_t u = 0; u < NV; ++u) acc[dd][u] = V::load(oT + (d0 + dd) * R + u * V::W);
  for (std::int64_t t = 0; t < batch.tiles; ++t) {
    if (rescaled[t])
      FATTN_UNROLL for (std::int64_t u = 0; u < NV; ++u) {
        const F f = V::load(rescale + t * R + u * V::W);
        FATTN_UNROLL for (int dd = 0; dd < kD; ++dd) acc[dd][u] = V::mul(acc[dd][u], f);
      }
    const E* const* v_rows = batch.v_rows + t * batch.bk;
    const float* pt = p + t * batch.tile_stride;
    const std::int64_t keys = batch.keys[t];
    for (std::int64_t j = 0; j < keys; ++j) {
      F pj[NV];
      for (std::int64_t u = 0; u < NV; ++u) pj[u] = V::in_register(V::load(pt + j * R + u * V::W));
      const E* v_row = v_rows[j] + d0;
      // The row's next line, read by a later pass over these keys: the
      // passes jump from row to row, which no hardware prefetcher follows
      // (+2-5% at f32/bf16 D = 128/256 on this project's Intel Xeon, avx512;
      // avx2 unchanged; bench/ab.py, 5 rounds).
      _mm_prefetch(reinterpret_cast<const char*>(v_row) + 64, _MM_HINT_T0);
      if constexpr (kD == 1) {
        const F vd = Pairs::one(v_row);
        for (std::int64_t u = 0; u < NV; ++u) acc[0][u] = V::fmadd(pj[u], vd, acc[0][u]);
      } else {
        for (int dd = 0; dd < kD; dd += 2) {
          const auto pair = Pairs::load(v_row + dd);
          const F lo = Pairs::first(pair), hi = Pairs::second(pair);
          for (std::int64_t u = 0; u < NV; ++u) acc[dd][u] = V::fmadd(pj[u], lo, acc[dd][u]);
          for (std::int64_t u = 0; u < NV; ++u) acc[dd + 1][u] = V::fmadd(pj[u], hi, acc[dd + 1][u]);
        }
      }
    }
  }
  // Rows outside `active` keep their O (a block's rows are all active
  // unless causal or a tile-skip map sets them apart).
  if (all_active) {
    FATTN_UNROLL for (int dd = 0; dd < kD; ++dd)
      FATTN_UNROLL for (std::int64_t u = 0; u < NV; ++u) V::store(oT + (d0 + dd) * R + u * V::W, acc[dd][u]);
  } else {
    FATTN_UNROLL for (int dd = 0; dd < kD; ++dd)
      FATTN_UNROLL for (std::int64_t u = 0; u < NV; ++u) {
        float* o = oT + (d0 + dd) * R + u * V::W;
        V::store(o, V::blend(active[u], V::load(o), acc[dd][u]));
      }
  }
}

// All of D for the block's NV row vectors.
template <class V, std::int64_t NV, class E>
inline void pv_lanes(float* oT, const float* p, const float* rescale, const bool* rescaled, const PvBatch<E>& batch,
                     const typename V::M* active, bool all_active, std::int64_t D) {
  constexpr int kD = int(V::kPvLaneAccumulators / NV) / 2 * 2;  // accumulators: kD x NV (kD even)
  static_assert(kD >= 2, "the lanes form takes pairs of D");
  std::int64_t d0 = 0;
  for (; d0 + kD <= D; d0 += kD) pv_lanes_block<V, kD, NV>(oT, p, rescale, rescaled, batch, active, all_active, d0);
  for (; d0 + 2 <= D; d0 += 2) pv_lanes_block<V, 2, NV>(oT, p, rescale, rescaled, batch, active, all_active, d0);
  if (d0 < D) pv_lanes_block<V, 1, NV>(oT, p, rescale, rescaled, batch, active, all_active, d0);
}

template <class V, std::int64_t NV, class E>
__attribute__((noinline)) void pv_lanes_short(float* oT, const float* p, const float* rescale, const bool* rescaled,
                                              const PvBatch<E>& batch, const typename V::M* active, bool all_active,
                                              std::int64_t D) {
  pv_lanes<V, NV>(oT, p, rescale, rescaled, batch, active, all_active, D);  // out of line: see score_tile_short
}

// The row form over a batch for the active rows (bit r of `active`, r <
// rows), four at a time so they share the V loads. O is [kSimdRows][D];
// `factors` is scratch for the gathered rescale factors.
template <class V, class E>
inline void pv_rows(float* o, const float* p, const float* rescale, float* factors, const PvBatch<E>& batch,
                    std::uint32_t active, std::int64_t rows, std::int64_t D) {
  std::int64_t rows_in[4];
  int n = 0;
  auto run = [&] {
    float* o_rows[4];
    const float* p_cols[4];
    for (int i = 0; i < n; ++i) {
      o_rows[i] = o + rows_in[i] * D;
      p_cols[i] = p + rows_in[i];
      for (std::int64_t t = 0; t < batch.tiles; ++t) factors[t * kSimdRows + i] = rescale[t * kSimdRows + rows_in[i]];
    }
    switch (n) {
      case 4: accumulate_pv<V, 4>(o_rows, p_cols, factors, batch, D); break;
      case 3: accumulate_pv<V, 3>(o_rows, p_cols, factors, batch, D); break;
      case 2: accumulate_pv<V, 2>(o_rows, p_cols, factors, batch, D); break;
      case 1: accumulate_pv<V, 1>(o_rows, p_cols, factors, batch, D); break;
      default: break;
    }
    n = 0;
  };
  for (std::int64_t r = 0; r < rows; ++r) {
    if (!(active >> r & 1u)) continue;
    rows_in[n++] = r;
    if (n == 4) run();
  }
  run();
}
// Out of line, for the lanes-form targets' short blocks (see score_tile_short).
template <class V, class E>
__attribute__((noinline)) void pv_rows_short(float* o, const float* p, const float* rescale, float* factors,
                                             const PvBatch<E>& batch, std::uint32_t active, std::int64_t rows,
                                             std::int64_t D) {
  pv_rows<V>(o, p, rescale, factors, batch, active, rows, D);
}

// dst[c * dst_stride + r] = src[r * src_stride + c] for r < rows, c < cols:
// W x W blocks in registers (V::transpose), the edges element by element.
// It moves the staged Q into the lanes and O back out of them.
template <class V>
inline void transpose_matrix(const float* src, std::int64_t src_stride, float* dst, std::int64_t dst_stride,
                             std::int64_t rows, std::int64_t cols) {
  const std::int64_t whole_rows = rows / V::W * V::W, whole_cols = cols / V::W * V::W;
  for (std::int64_t r0 = 0; r0 < whole_rows; r0 += V::W)
    for (std::int64_t c0 = 0; c0 < whole_cols; c0 += V::W)
      V::transpose(src + r0 * src_stride + c0, src_stride, dst + c0 * dst_stride + r0, dst_stride);
  for (std::int64_t r = 0; r < rows; ++r)
    for (std::int64_t c = r < whole_rows ? whole_cols : 0; c < cols; ++c)
      dst[c * dst_stride + r] = src[r * src_stride + c];
}

// Keys whose P·V a batch defers at most (whole tiles; a larger tile is one batch).
constexpr std::int64_t kPvBatchKeys = 64;

// Keys per P·V batch: as many (up to kPvBatchKeys) as keep the batch's V rows,
// as the kernel reads them (f32, or bf16 in place), within two thirds of the
// core's L1 data cache, beside the batch's weights and O. Each pass of the
// lanes form reads a few elements of every V row of the batch, so the rows
// must stay in L1 from one pass to the next. 48 KiB (this project's Intel
// Xeon): 32 KiB, 64 keys at f32 D = 128, as tuned there. 32 KiB (Zen 4 with
// AVX2): ~21 KiB, 32 keys at f32 D = 128 and 16 at D = 256, 5% and 4%
// faster than 32 KiB batches there (bench/ab/driver.cpp against both
// revisions, 5 alternated rounds); bf16 keeps 64 and 32 keys.
inline std::int64_t pv_batch_keys(std::int64_t head_dim, std::int64_t element_bytes) {
  const std::int64_t budget = std::int64_t(simd::cpu_features().l1d_bytes) * 2 / 3;
  return std::clamp<std::int64_t>(budget / (head_dim * element_bytes), 8, kPvBatchKeys);
}

// One 32-row block's state while a group of blocks takes the keys a chunk at
// a time (prefill_rows).
template <class V>
struct BlockState {
  std::int64_t row0 = 0, rows = 0, row_vectors = 0;
  bool o_in_lanes = false;
  float *qT = nullptr, *o = nullptr, *row_max = nullptr, *row_sum = nullptr;
  // Each row keeps its own block's tile range and tile-skip bytes.
  std::int64_t first[kSimdRows], limit[kSimdRows], block_of[kSimdRows];
  std::int64_t min_first = 0, max_limit = 0;
  std::uint32_t all_rows = 0;
  bool same_rows_every_tile = false;
  typename V::I diag_index[kSimdRows / V::W], oldest_index[kSimdRows / V::W];
};

// Rows [item_row0, item_row0 + row_count) of (b, h): blocks of kSimdRows rows
// (at most kMaxBlocksPerItem). Several blocks take the keys one chunk at a
// time (prefill_chunk_keys), all blocks per chunk, so the chunk's K and V
// rows serve them all from L2 instead of streaming from L3 for each block;
// each row still sees its tiles in order, so the bits are one block's alone.
template <class V, class T, class Arith>
void prefill_rows(const TensorView& q, const TensorView& k, const TensorView& v, const TensorView& out,
                  const PrefillPlan& p, std::int64_t b, std::int64_t h, std::int64_t item_row0,
                  std::int64_t row_count, std::vector<float>& workspace) {
  using F = typename V::F;
  using I = typename V::I;
  constexpr std::int64_t R = kSimdRows;
  constexpr std::int64_t NV = R / V::W;  // row vectors
  const std::int64_t D = p.head_dim, BQ = p.geometry.q_tile, BK = p.geometry.k_tile;
  const std::int64_t n_blocks = (row_count + R - 1) / R;
  const std::int64_t kv_head = h / (p.heads / p.kv_heads);
  const std::int64_t k_step = k.stride[2], v_step = v.stride[2];  // elements from one key's row to the next
  const std::int64_t n_tiles = (p.kv_len + BK - 1) / BK;

  // Tiles per P·V batch (pv_batch_keys).
  constexpr bool kInPlace = std::is_same_v<T, float> || std::is_same_v<T, bfloat16>;
  using E = std::conditional_t<kInPlace, T, float>;  // the element type the kernels read
  const std::int64_t batch_tiles = std::max<std::int64_t>(1, pv_batch_keys(D, sizeof(E)) / BK);
  // 16 floats more, so the buffers can start on a 64-byte line: every vector
  // load of Q, the scores and O then stays within one line (malloc's 16-byte
  // alignment split most of them in two).
  const std::int64_t block_floats = 2 * D * R + 2 * R;  // a block's qT, o, row_max, row_sum
  workspace.resize(std::size_t(n_blocks * block_floats + BK * D + batch_tiles * (BK * D + BK * R + 2 * R) + D + 16));
  float* blocks_base = reinterpret_cast<float*>((reinterpret_cast<std::uintptr_t>(workspace.data()) + 63) / 64 * 64);
  float* kw = blocks_base + n_blocks * block_floats;  // [BK][D]: the K tile in f32
  float* vw = kw + BK * D;             // [batch][BK][D]: the batch's V tiles in f32
  float* sT_batch = vw + batch_tiles * BK * D;  // [batch][BK][R]: scores, then weights
  float* rescale_batch = sT_batch + batch_tiles * BK * R;  // [batch][R]: each tile's factors
  float* factors = rescale_batch + batch_tiles * R;  // [batch][R]: one P·V call's rows' factors (first 4 used)
  float* zero_row = factors + batch_tiles * R;  // stands in for keys past Lk
  std::fill(zero_row, zero_row + D, 0.0f);
  // f32 K/V rows are read in place, bf16 ones too (in pairs, RowPairs; but
  // see kWidenKeys below); f16 ones are widened into kw/vw first (E, above).
  // bf16 K rows widened into kw where the target says so (V::kWidenBf16Keys):
  // in place, each pair's two halves cost two vector ALU operations per key,
  // on the ports the FMAs use; widened once per tile they are broadcast loads.
  constexpr bool kBf16Keys = std::is_same_v<T, bfloat16>;
  constexpr bool kWidenKeys = kBf16Keys && V::kWidenBf16Keys && !V::kBf16Dot;
  using EK = std::conditional_t<kWidenKeys, float, E>;  // K's element type as read
  const EK* k_rows[1024];
  const E* v_rows[1024];  // the batch's tiles, BK apart
  std::int64_t batch_keys[kPvBatchKeys / 8];  // keys of each tile in the batch (BK >= 8)
  std::int64_t pending = 0;                    // tiles in the batch
  std::uint32_t pending_active = 0;            // their rows (a batch shares one set)

  // Q staged: each row scaled and rounded as the scalar model does, into a
  // row-major scratch (o, unused until the first tile: contiguous rows, which
  // the compiler vectorises), then moved into qT ([column][R], rows in the
  // lanes) a W x W block at a time (V::transpose). Rows past `rows` are 0.
  // Written straight into qT one element at a time, the staging was ~a fifth
  // of a 32-row block's time when the block sees 2 key tiles (perf, AVX-512).
  // For the dot-product instruction the columns are bf16 pairs
  // (qP[p * kSimdRows + row]: elements 2p and 2p + 1 of the row in one 32-bit
  // lane, the second 0 past an odd D; the staged values are bf16's, so the
  // packing rounds nothing).
  constexpr bool kQPairs = std::is_same_v<T, bfloat16> && V::kBf16Dot;
  const std::int64_t q_columns = kQPairs ? (D + 1) / 2 : D;
  BlockState<V> states[kMaxBlocksPerItem];
  for (std::int64_t blk_i = 0; blk_i < n_blocks; ++blk_i) {
    BlockState<V>& bs = states[blk_i];
    bs.row0 = item_row0 + blk_i * R;
    bs.rows = std::min(R, item_row0 + row_count - bs.row0);
    bs.row_vectors = (bs.rows + V::W - 1) / V::W;  // the rest hold no row: not computed
    // P·V and O with the rows in the lanes ([D][R]) or in the row form ([R][D]):
    // the target's choice, except that a block of at most 4 rows takes the row
    // form everywhere (one pass over V for all of them, instead of a vector
    // of 8 lanes that holds at most 4 rows).
    bs.o_in_lanes = V::kPvRowsInLanes && bs.rows > 4;
    bs.qT = blocks_base + blk_i * block_floats;  // [D][R]: staged Q, transposed so rows are lanes
    bs.o = bs.qT + D * R;  // the output accumulators: [D][R] in the lanes form, else [R][D]
    bs.row_max = bs.o + R * D;
    bs.row_sum = bs.row_max + R;
    const std::int64_t row0 = bs.row0, rows = bs.rows;
    float* const qT = bs.qT;
    float* const o = bs.o;
    {
      const float factor = Arith::template q_factor<T>(p.scale);
      float* q_rows = o;  // [R][q_columns]
      for (std::int64_t r = 0; r < rows; ++r) {
        const T* src = q.row<const T>(b, h, row0 + r);
        float* dst = q_rows + r * q_columns;
        if constexpr (kQPairs) {
          for (std::int64_t pr = 0; pr < q_columns; ++pr) {
            const std::uint32_t lo = f32_to_bf16(Arith::template stage_q<T>(widen(src[2 * pr]), factor));
            const std::uint32_t hi =
                2 * pr + 1 < D ? f32_to_bf16(Arith::template stage_q<T>(widen(src[2 * pr + 1]), factor)) : 0u;
            const std::uint32_t pair = lo | hi << 16;
            std::memcpy(dst + pr, &pair, 4);
          }
        } else {
          for (std::int64_t d = 0; d < D; ++d) dst[d] = Arith::template stage_q<T>(widen(src[d]), factor);
        }
      }
      std::fill(q_rows + rows * q_columns, q_rows + R * q_columns, 0.0f);
      transpose_matrix<V>(q_rows, q_columns, qT, R, R, q_columns);
    }
    std::fill(o, o + R * D, 0.0f);
    std::fill(bs.row_max, bs.row_max + R, kInitialMax);
    std::fill(bs.row_sum, bs.row_sum + R, 0.0f);

    std::int64_t* const first = bs.first;
    std::int64_t* const limit = bs.limit;
    std::int64_t* const block_of = bs.block_of;
    std::int64_t min_first = n_tiles, max_limit = 0;
    for (std::int64_t r = 0; r < rows; ++r) {
      block_of[r] = (row0 + r) / BQ;
      const std::int64_t block_end = std::min(block_of[r] * BQ + BQ, p.q_len);
      first[r] = window_tile_start(block_of[r] * BQ, p.causal_offset, p.window, BK);
      limit[r] = p.causal ? causal_tile_limit(block_end, p.causal_offset, BK, n_tiles) : n_tiles;
      min_first = std::min(min_first, first[r]);
      max_limit = std::max(max_limit, limit[r]);
    }
    // Rows of one q_tile block (BQ = kSimdRows) share their range, and without
    // a tile-skip map every tile in it has them all.
    bs.min_first = min_first;
    bs.max_limit = max_limit;
    bs.all_rows = rows == 32 ? ~0u : (1u << rows) - 1u;
    bs.same_rows_every_tile =
        !p.blk && std::all_of(first, first + rows, [&](std::int64_t f) { return f == min_first; }) &&
        std::all_of(limit, limit + rows, [&](std::int64_t l) { return l == max_limit; });
    // Causal: lane r masks keys past row0 + r + causal_offset; with a window,
    // also keys before row0 + r + causal_offset - window + 1 (the plan keeps
    // both within 31 bits).
    for (std::int64_t u = 0; u < NV; ++u) {
      bs.diag_index[u] = V::iota(std::int32_t(row0 + p.causal_offset + u * V::W));
      bs.oldest_index[u] = V::iota(std::int32_t(row0 + p.causal_offset - p.window + 1 + u * V::W));
    }
  }  // blocks
  const ScoreUnits units{p.scale, p.softcap, p.softcap_in, p.softcap_out};
  const F neg_inf = V::set1(-kInf);

  // Tiles [tile_begin, tile_end) of one block, its P·V flushed at the end.
  auto run_tiles = [&](BlockState<V>& bs, std::int64_t tile_begin, std::int64_t tile_end) {
    const std::int64_t row0 = bs.row0, rows = bs.rows, row_vectors = bs.row_vectors;
    const bool o_in_lanes = bs.o_in_lanes, same_rows_every_tile = bs.same_rows_every_tile;
    const std::uint32_t all_rows = bs.all_rows;
    float* const o = bs.o;
    float* const qT = bs.qT;
    float* const row_max = bs.row_max;
    float* const row_sum = bs.row_sum;
    const std::int64_t* const first = bs.first;
    const std::int64_t* const limit = bs.limit;
    const std::int64_t* const block_of = bs.block_of;
    const I* const diag_index = bs.diag_index;
    const I* const oldest_index = bs.oldest_index;

    // P·V of the pending tiles for their active rows: all rows at once in the
    // lanes form, else four rows at a time so they share the V loads.
    auto flush_pv = [&] {
      if (pending == 0) return;
      const PvBatch<E> batch{v_rows, batch_keys, pending, BK, BK * R};
      if (!o_in_lanes) {
        if constexpr (V::kPvRowsInLanes)
          pv_rows_short<V>(o, sT_batch, rescale_batch, factors, batch, pending_active, rows, D);
        else
          pv_rows<V>(o, sT_batch, rescale_batch, factors, batch, pending_active, rows, D);
      } else if constexpr (V::kPvRowsInLanes) {
        typename V::M active[NV];
        for (std::int64_t u = 0; u < NV; ++u) active[u] = V::from_bits((pending_active >> (u * V::W)) & ((1u << V::W) - 1u));
        bool rescaled[kPvBatchKeys / 8] = {};
        for (std::int64_t t = 0; t < pending; ++t)
          for (std::int64_t u = 0; u < row_vectors; ++u)
            rescaled[t] = rescaled[t] ||
                          V::any(V::and_mask(active[u], V::ne(V::load(rescale_batch + t * R + u * V::W), V::set1(1.0f))));
        const bool all_active = pending_active == ~0u;  // all 32 rows
        if (row_vectors == NV)
          pv_lanes<V, NV>(o, sT_batch, rescale_batch, rescaled, batch, active, all_active, D);
        else
          with_row_vectors<NV - 1>(row_vectors, [&](auto nv) {
            pv_lanes_short<V, decltype(nv)::value>(o, sT_batch, rescale_batch, rescaled, batch, active, all_active,
                                                   D);
          });
      }
      pending = 0;
    };

    for (std::int64_t tile = tile_begin; tile < tile_end; ++tile) {
      std::uint32_t active = 0, add_mask = 0;
      if (same_rows_every_tile) {
        active = add_mask = all_rows;
      } else {
        for (std::int64_t r = 0; r < rows; ++r) {
          if (tile < first[r] || tile >= limit[r]) continue;
          const std::uint8_t action = p.blk ? p.blk->at(block_of[r], tile) : 1;
          if (action != 0) {
            active |= 1u << r;
            if (action != 2) add_mask |= 1u << r;
          }
        }
      }
      if (active == 0) continue;
      if (pending > 0 && (active != pending_active || pending == batch_tiles)) flush_pv();
      pending_active = active;
      float* sT = sT_batch + pending * BK * R;
      float* rescale = rescale_batch + pending * R;
      const E** tile_v_rows = v_rows + pending * BK;
      float* tile_vw = vw + pending * BK * D;
      const std::int64_t key0 = tile * BK, keys = std::min(BK, p.kv_len - key0);
      const T* const k_tile = k.row<const T>(b, kv_head, key0);  // row j: k_tile + j * k_step
      const T* const v_tile = v.row<const T>(b, kv_head, key0);
      for (std::int64_t j = 0; j < keys; ++j) {
        if constexpr (kWidenKeys) {
          widen_row<V>(k_tile + j * k_step, kw + j * D, D);
          k_rows[j] = kw + j * D;
          tile_v_rows[j] = v_tile + j * v_step;
        } else if constexpr (kInPlace) {
          k_rows[j] = k_tile + j * k_step;
          tile_v_rows[j] = v_tile + j * v_step;
        } else {
          widen_row<V>(k_tile + j * k_step, kw + j * D, D);
          widen_row<V>(v_tile + j * v_step, tile_vw + j * D, D);
          k_rows[j] = kw + j * D;
          tile_v_rows[j] = tile_vw + j * D;
        }
      }
      // All-zero bits read as +0 in any element type.
      for (std::int64_t j = keys; j < BK; ++j) {
        k_rows[j] = reinterpret_cast<const EK*>(zero_row);
        tile_v_rows[j] = reinterpret_cast<const E*>(zero_row);
      }

      // Scores: KP keys x NV row vectors per pass, each an fma chain over D in order.
      if (row_vectors == NV)
        score_tile<V, Arith, NV, kBf16Keys>(qT, k_rows, BK, keys, D, sT, units);
      else
        with_row_vectors<NV - 1>(row_vectors, [&](auto nv) {
          score_tile_short<V, Arith, decltype(nv)::value, kBf16Keys>(qT, k_rows, BK, keys, D, sT, units);
        });
      // Masks in the seed's order.
      auto apply_causal = [&] {
        if (!p.causal) return;
        // No key past the group's first row's diagonal, and none at or before
        // its last row's window edge: nothing to mask.
        const bool past_diagonal = key0 + keys - 1 > row0 + p.causal_offset;
        const bool before_window = p.window > 0 && key0 <= row0 + rows - 1 + p.causal_offset - p.window;
        if (!past_diagonal && !before_window) return;
        for (std::int64_t j = 0; j < keys; ++j) {
          const I key = V::iset1(std::int32_t(key0 + j));
          for (std::int64_t u = 0; u < row_vectors; ++u) {
            float* s = sT + j * R + u * V::W;
            F sv = V::blend(V::int_gt(key, diag_index[u]), V::load(s), neg_inf);
            if (before_window) sv = V::blend(V::int_gt(oldest_index[u], key), sv, neg_inf);
            V::store(s, sv);
          }
        }
      };
      auto apply_mask = [&] {
        if (!p.mask || add_mask == 0) return;
        for (std::int64_t r = 0; r < rows; ++r)
          if (add_mask >> r & 1u) apply_mask_row<Arith>(*p.mask, b, h, row0 + r, key0, keys, sT + r, R);
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
      for (std::int64_t u = 0; u < NV; ++u) {
        const std::int64_t lane0 = u * V::W;
        const std::uint32_t bits = (active >> lane0) & ((1u << V::W) - 1u);
        if (!bits) continue;
        const typename V::M act = V::from_bits(bits);
        F tile_max = neg_inf;
        for (std::int64_t j = 0; j < BK; ++j) tile_max = V::max(V::load(sT + j * R + lane0), tile_max);
        const F old_max = V::load(row_max + lane0);
        const F new_max = V::max(tile_max, old_max);  // as std::max(old, tile)
        const F resc = exp_policy<V, Arith>(V::sub(old_max, new_max));
        for (std::int64_t j = 0; j < BK; ++j) {
          float* s = sT + j * R + lane0;
          V::store(s, exp_policy<V, Arith>(V::sub(V::load(s), new_max)));
        }
        F tile_sum = V::zero();
        F tree[64];
        for (std::int64_t g = 0; g < BK; g += group) {
          for (std::int64_t j = 0; j < group; ++j) tree[j] = V::load(sT + (g + j) * R + lane0);
          for (std::int64_t width = group; width > 1; width /= 2)
            for (std::int64_t j = 0; j < width / 2; ++j) tree[j] = V::add(tree[2 * j], tree[2 * j + 1]);
          tile_sum = V::add(tile_sum, tree[0]);
        }
        const F old_sum = V::load(row_sum + lane0);
        const F new_sum = V::add(V::mul(old_sum, resc), tile_sum);
        V::store(row_sum + lane0, V::blend(act, old_sum, new_sum));
        V::store(row_max + lane0, V::blend(act, old_max, new_max));
        V::store(rescale + lane0, resc);
      }

      batch_keys[pending++] = keys;  // its P·V waits for the batch
    }
    flush_pv();
  };  // run_tiles

  // Every block's tiles, a chunk of keys at a time when the item has more
  // than one block (the tiles between the blocks' first and last).
  std::int64_t tiles_from = n_tiles, tiles_to = 0;
  for (std::int64_t i = 0; i < n_blocks; ++i) {
    tiles_from = std::min(tiles_from, states[i].min_first);
    tiles_to = std::max(tiles_to, states[i].max_limit);
  }
  const std::int64_t chunk_tiles = n_blocks == 1 ? n_tiles : std::max<std::int64_t>(1, prefill_chunk_keys<T>(D) / BK);
  for (std::int64_t c0 = tiles_from; c0 < tiles_to; c0 += chunk_tiles)
    for (std::int64_t i = 0; i < n_blocks; ++i) {
      BlockState<V>& bs = states[i];
      const std::int64_t t0 = std::max(c0, bs.min_first), t1 = std::min(c0 + chunk_tiles, bs.max_limit);
      if (t0 < t1) run_tiles(bs, t0, t1);
    }

  for (std::int64_t i = 0; i < n_blocks; ++i) {
    const BlockState<V>& bs = states[i];
    const std::int64_t row0 = bs.row0, rows = bs.rows, row_vectors = bs.row_vectors;
    float* const o = bs.o;
    float* const qT = bs.qT;
    float* const row_max = bs.row_max;
    float* const row_sum = bs.row_sum;
    if (bs.o_in_lanes) {
      // O back into row-major rows (in qT, unused now) a W x W block at a
      // time, so that each row's normalise and narrowing run on contiguous
      // elements (the compiler vectorises them; strided, they were ~a fifth
      // of a 2-tile block's time).
      float* o_rows = qT;  // [R][D]
      transpose_matrix<V>(o, R, o_rows, D, D, row_vectors * V::W);
      for (std::int64_t r = 0; r < rows; ++r)
        finish_row<T, Arith>(p, out, b, h, row0 + r, row_max[r], row_sum[r], o_rows + r * D, 1);
    } else {
      for (std::int64_t r = 0; r < rows; ++r)
        finish_row<T, Arith>(p, out, b, h, row0 + r, row_max[r], row_sum[r], o + r * D, 1);
    }
  }  // blocks
}

}  // namespace
}  // namespace fattn::prefill_detail
