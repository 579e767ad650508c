// Vec decode on a vector unit, written once for any vector traits V
// (simd/vec_avx512.hpp, simd/vec_avx2.hpp) and compiled once per
// instruction set inside that set's target region. Operation for operation
// the scalar model of decode.cpp: the lane-structured dot (pair sums per
// float4, running sums per simdgroup lane, a tree over the 32 lanes), the
// same exp, the chunk's own P·V accumulator. The scores take one of two
// forms, chosen by the traits (V::kDecodeRowScores): on 16-lane AVX-512 a K
// row is widened once into transposed planes shared by the query heads; on
// 8-lane vectors (AVX2, AVX-512VL) each row's products meet in pair sums, the
// lane structure's own order (row_block_scores). V is widened as it is loaded.
#include <algorithm>
#include <cstdint>
#include <utility>

#include "decode/engine.hpp"
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

// The scores use the seed's simdgroup structure: float4 group g of D belongs
// to lane g mod 32, each lane adds dot4(k4, q4) = (k0 q0 + k1 q1) + (k2 q2 +
// k3 q3) of its groups in order, and the 32 lane sums meet in a balanced
// tree. Done here with vertical operations only: a row's float4 groups are
// transposed, W at a time (one "segment" of 4 vectors), into four planes —
// plane e holds element e of each group — so dot4 of W groups is 4 multiplies
// and 3 adds, and segment s adds into the lane sums of lanes (s·W) mod 32,
// i.e. lane vector s mod (32 / W). The transpose is done once per K row and
// shared by every query head of the group. Inside a segment the planes hold
// the groups in transposed order (V::untranspose restores it).
template <class V>
inline void transpose4(typename V::F* x) {  // 4x4 transpose within each 128-bit lane
  using F = typename V::F;
  const F t0 = V::unpacklo(x[0], x[1]), t1 = V::unpackhi(x[0], x[1]);
  const F t2 = V::unpacklo(x[2], x[3]), t3 = V::unpackhi(x[2], x[3]);
  x[0] = V::template shuffle<0x44>(t0, t2);
  x[1] = V::template shuffle<0xEE>(t0, t2);
  x[2] = V::template shuffle<0x44>(t1, t3);
  x[3] = V::template shuffle<0xEE>(t1, t3);
}

// Row [0, D) as planes: 4 vectors per segment of 4W elements; elements past
// D read as 0 (their products are 0 and leave the lane sums as they are).
template <class V, class T>
inline void load_planes(const T* row, std::int64_t D, typename V::F* planes) {
  constexpr std::int64_t W = V::W;
  std::int64_t s = 0;
  for (; (s + 1) * 4 * W <= D; ++s) {
    typename V::F* x = planes + 4 * s;
    for (int u = 0; u < 4; ++u) x[u] = V::widen_n(row + s * 4 * W + u * W, W);
    transpose4<V>(x);
  }
  if (s * 4 * W < D) {
    typename V::F* x = planes + 4 * s;
    for (int u = 0; u < 4; ++u) x[u] = V::widen_n(row + s * 4 * W + u * W, std::clamp<std::int64_t>(D - s * 4 * W - u * W, 0, W));
    transpose4<V>(x);
  }
}

// Lane sums of one position for one head: out[t·stride] = lanes t·W .. t·W + W - 1.
template <class V>
inline void lane_sums(const typename V::F* kp, const typename V::F* qp, std::int64_t segments, typename V::F* out,
                      std::int64_t stride) {
  using F = typename V::F;
  constexpr int S = int(32 / V::W);
  F acc[S];
  for (int t = 0; t < S; ++t) acc[t] = V::zero();
  for (std::int64_t s0 = 0; s0 < segments; s0 += S)
    for (int t = 0; t < S && s0 + t < segments; ++t) {  // t a constant after unrolling: acc stays in registers
      const F* k4 = kp + 4 * (s0 + t);
      const F* q4 = qp + 4 * (s0 + t);
      const F dot4 = V::add(V::add(V::mul(k4[0], q4[0]), V::mul(k4[1], q4[1])),
                            V::add(V::mul(k4[2], q4[2]), V::mul(k4[3], q4[3])));
      acc[t] = V::add(acc[t], dot4);
    }
  for (int t = 0; t < S; ++t) out[t * stride] = V::untranspose(acc[t]);
}

// x[j] (j < W): W lanes of position j, in lane order. Returns the vector whose
// element j is the balanced tree of x[j]'s lanes: two levels of pair sums
// inside 128-bit lanes, then across them (each level halves the vectors and
// keeps the positions in order). Destroys x.
template <class V>
inline typename V::F transposed_tree(typename V::F* x) {
  int n = int(V::W);
  for (int level = 0; level < 2; ++level, n /= 2)
    for (int m = 0; m < n / 2; ++m)
      x[m] = V::add(V::template shuffle<0x88>(x[2 * m], x[2 * m + 1]), V::template shuffle<0xDD>(x[2 * m], x[2 * m + 1]));
  for (; n > 1; n /= 2)
    for (int m = 0; m < n / 2; ++m) x[m] = V::fold128(x[2 * m], x[2 * m + 1]);
  return x[0];
}

// Scores of W = 16 positions from K planes, D a multiple of 4W (SEG
// segments, a compile-time count so a row's planes stay in registers): the
// operations of load_planes + lane_sums + transposed_tree above, on the same
// operands in the same order, with less data movement. Each position's row is
// widened and transposed once for every head of the group; a head's lane sums
// stay in the transposed order (element 4l + i of lane vector t holds lane
// 16t + 4i + l), and the 16-lane tree over them takes its first two levels
// (lanes 4i + 0 + 4i + 1, then the pairs of pairs) across 128-bit lanes
// (fold128) and its last two inside them: the same balanced tree, with the
// positions left in transposed order, put back by one permute per head.
template <class V>
inline typename V::F folded_tree(typename V::F* x) {  // x[j]: lane vector of position j; destroys x
  for (int m = 0; m < 8; ++m) x[m] = V::fold128(x[2 * m], x[2 * m + 1]);
  for (int m = 0; m < 4; ++m) x[m] = V::fold128(x[2 * m], x[2 * m + 1]);
  for (int m = 0; m < 2; ++m)
    x[m] = V::add(V::template shuffle<0x88>(x[2 * m], x[2 * m + 1]), V::template shuffle<0xDD>(x[2 * m], x[2 * m + 1]));
  return V::add(V::template shuffle<0x88>(x[0], x[1]), V::template shuffle<0xDD>(x[0], x[1]));
}

// `row_of(j)` gives position j's row (j < n); positions from n on get 0
// (their scores are overwritten by the caller). `prefetch(j)` issues
// position j's prefetches, before its row is read, as the loop it replaces.
template <class V, int SEG, class RowOf, class Prefetch>
inline void planes_scores(const RowOf& row_of, std::int64_t n, const typename V::F* q_planes, std::int64_t group,
                          typename V::F* lanes, float* s, std::int64_t s_stride, const Prefetch& prefetch) {
  using F = typename V::F;
  constexpr std::int64_t W = V::W;
  static_assert(W == 16, "two lane vectors per position, 16 positions per tree");
  for (std::int64_t j = 0; j < W; ++j) {
    if (j >= n) {
      for (std::int64_t i = 0; i < 2 * group; ++i) lanes[i * W + j] = V::zero();
      continue;
    }
    prefetch(j);
    const auto* row = row_of(j);
    F x[SEG][4];
    for (int seg = 0; seg < SEG; ++seg) {
      for (int u = 0; u < 4; ++u) x[seg][u] = V::widen_n(row + seg * 4 * W + u * W, W);
      transpose4<V>(x[seg]);
    }
    for (std::int64_t r = 0; r < group; ++r) {
      const F* q = q_planes + r * 4 * SEG;
      F acc[2] = {V::zero(), V::zero()};
      for (int seg = 0; seg < SEG; ++seg) {
        const F* q4 = q + 4 * seg;
        const F d4 = V::add(V::add(V::mul(x[seg][0], q4[0]), V::mul(x[seg][1], q4[1])),
                            V::add(V::mul(x[seg][2], q4[2]), V::mul(x[seg][3], q4[3])));
        acc[seg & 1] = V::add(acc[seg & 1], d4);
      }
      lanes[(2 * r) * W + j] = acc[0];
      lanes[(2 * r + 1) * W + j] = acc[1];
    }
  }
  for (std::int64_t r = 0; r < group; ++r) {
    const F low = folded_tree<V>(lanes + (2 * r) * W), high = folded_tree<V>(lanes + (2 * r + 1) * W);
    V::store(s + r * s_stride, V::untranspose(V::add(low, high)));
  }
}

// Asks for a stored row's cache lines (`bytes` of it).
inline void prefetch_row(const char* row, std::int64_t bytes) {
  // Into L2, not L1: on an Intel Xeon (family 6 model 167) +4% (f16) to +7%
  // (f32) at 256-512 MiB caches over T0, whose requests hold L1's few fill
  // buffers; NTA ran at 40%, no prefetch at 85-90%.
  const char* base = row - reinterpret_cast<std::uintptr_t>(row) % 64;  // a quantized row need not start a line
  for (; base < row + bytes; base += 64) _mm_prefetch(base, _MM_HINT_T1);
}

// A block's f16 scale as f32 with F16C: exact, as quant::block_scale, for
// every pattern but a signalling NaN, which F16C quiets (quiet bit set,
// payload kept) where f16_to_f32 keeps it signalling. No element can tell:
// each is the scale times an integer, and that multiply quiets a signalling
// NaN the same way (tests_py/test_decode_quant.py, non-finite scales).
inline float block_scale_v(const std::uint8_t* block) {
  std::uint16_t h;
  std::memcpy(&h, block, 2);
  return _cvtsh_ss(h);
}

// The same scores a row at a time, for 8-lane vectors (AVX2 and its
// AVX-512VL form): one position's D products are D / 8 multiplies of its
// widened row by Q's, and the seed's sums are pair sums of neighbours
// (pair_sums: [a0+a1, a2+a3, b0+b1, b2+b3 | a4+a5, ...]), which the lane
// structure asks for at every level: two levels give dot4 of the 8 groups of
// a 32-element block, in lane order [0 2 4 6 | 1 3 5 7]; block m adds into
// lane vector m mod 4 (lanes 8(m mod 4) ..), from +0 as the model's lanes;
// the tree's first level adds the halves of a lane vector, its next two are
// pair sums, the fourth adds halves again (fold128 of two positions) and the
// last is a pair sum that leaves 8 positions in the order [0 1 4 5 | 2 3 6 7].
// The same operations on the same operands as lane_dot, with no transposes
// (the positions-in-lanes form it replaced transposed 8 rows' float4 groups
// in registers: with one query head per K row, f16 D = 128, the whole decode
// ran 45% fewer instructions this way, and 1.9x faster from DRAM).
template <class V>
inline typename V::F pair_sums(typename V::F a, typename V::F b) {
  return V::add(V::template shuffle<0x88>(a, b), V::template shuffle<0xDD>(a, b));
}

// The widened elements 32m .. 32m + 31 of a row, as four vectors: a dense
// row's (T), or a q8_0 / q4_0 row's block m dequantized in registers, the
// operations of dequantize_row_v (exact: the same values).
template <class V, class T>
struct DenseBlocks {
  static void load(const T* row, std::int64_t m, typename V::F* x) {
    for (int i = 0; i < 4; ++i) x[i] = V::widen_n(row + 32 * m + 8 * i, 8);
  }
};
// (QuantBlocks makes 8-lane vectors on any target: dequantize_row_v's AVX2
// form uses it too.)
template <QuantFormat kFormat>
struct QuantBlocks {
  static void load(const std::uint8_t* row, std::int64_t m, __m256* x) {
    const auto widen8 = [](__m128i q, __m256 d) { return _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(q)), d); };
    if constexpr (kFormat == QuantFormat::q8_0) {
      const std::uint8_t* block = row + m * quant::kQ8Bytes;
      const __m256 d = _mm256_set1_ps(block_scale_v(block));
      for (int i = 0; i < 4; ++i) x[i] = widen8(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(block + 2 + 8 * i)), d);
    } else {
      static_assert(kFormat == QuantFormat::q4_0, "q8_0 or q4_0");
      const std::uint8_t* block = row + m * quant::kQ4Bytes;
      const __m256 d = _mm256_set1_ps(block_scale_v(block));
      const __m128i bytes = _mm_loadu_si128(reinterpret_cast<const __m128i*>(block + 2));
      const __m128i low4 = _mm_set1_epi8(0x0f), eight = _mm_set1_epi8(8);
      const __m128i lo = _mm_sub_epi8(_mm_and_si128(bytes, low4), eight);                     // elements 0..15
      const __m128i hi = _mm_sub_epi8(_mm_and_si128(_mm_srli_epi16(bytes, 4), low4), eight);  // elements 16..31
      x[0] = widen8(lo, d);
      x[1] = widen8(_mm_srli_si128(lo, 8), d);
      x[2] = widen8(hi, d);
      x[3] = widen8(_mm_srli_si128(hi, 8), d);
    }
  }
};

// Lane vectors of one position for query row q (D floats), after the tree's
// first two levels.
template <class V, class Blocks, class Row>
inline typename V::F row_tree_levels_1_2(const Row* row, const float* q, std::int64_t D) {
  using F = typename V::F;
  static_assert(V::W == 8, "a 32-element block is four vectors");
  F lane[4] = {V::zero(), V::zero(), V::zero(), V::zero()};
  for (std::int64_t m0 = 0; m0 * 32 < D; m0 += 4)
    for (int t = 0; t < 4 && (m0 + t) * 32 < D; ++t) {  // t a constant after unrolling: lane stays in registers
      F x[4];
      Blocks::load(row, m0 + t, x);
      const float* qm = q + 32 * (m0 + t);
      const F a = V::mul(x[0], V::load(qm)), b = V::mul(x[1], V::load(qm + 8));
      const F c = V::mul(x[2], V::load(qm + 16)), d = V::mul(x[3], V::load(qm + 24));
      lane[t] = V::add(lane[t], pair_sums<V>(pair_sums<V>(a, b), pair_sums<V>(c, d)));
    }
  return pair_sums<V>(V::fold128(lane[0], lane[1]), V::fold128(lane[2], lane[3]));
}

// Scores of up to 8 rows (row_of(j), j < n; zeros past n, overwritten by
// the caller) for every head: s[r * s_stride + j], q_rows[r * D ..] head r's
// staged Q.
template <class V, class Blocks, class RowOf>
inline void row_block_scores(const RowOf& row_of, std::int64_t n, std::int64_t D, const float* q_rows,
                             std::int64_t group, float* s, std::int64_t s_stride) {
  using F = typename V::F;
  for (std::int64_t r = 0; r < group; ++r) {
    const float* q = q_rows + r * D;
    F h[8];
    for (std::int64_t j = 0; j < 8; ++j) h[j] = j < n ? row_tree_levels_1_2<V, Blocks>(row_of(j), q, D) : V::zero();
    const F g0 = V::fold128(pair_sums<V>(h[0], h[1]), pair_sums<V>(h[2], h[3]));
    const F g1 = V::fold128(pair_sums<V>(h[4], h[5]), pair_sums<V>(h[6], h[7]));
    const F sums = pair_sums<V>(g0, g1);  // positions 0 1 4 5 | 2 3 6 7
    V::store(s + r * s_stride, _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(sums), 0xD8)));
  }
}

// The scalar model's chunk max, std::max(m, s[j]) for j in order: a lane
// takes s only when s > m (never NaN, the first of equal values). Across
// lanes only the sign of a zero maximum could depend on the order, so a zero
// is redone in order.
template <class V>
inline float chunk_max_of(const float* s) {
  typename V::F m = V::set1(-kInf);
  for (std::int64_t j = 0; j < kDecodeChunk; j += V::W) m = V::max(V::load(s + j), m);
  alignas(64) float lane[V::W];
  V::store(lane, m);
  float chunk_max = -kInf;
  for (std::int64_t j = 0; j < V::W; ++j) chunk_max = std::max(chunk_max, lane[j]);
  if (chunk_max == 0.0f) {
    chunk_max = -kInf;
    for (std::int64_t j = 0; j < kDecodeChunk; ++j) chunk_max = std::max(chunk_max, s[j]);
  }
  return chunk_max;
}

// The chunk's V rows as at most two runs of consecutive slots: rows
// [0, split) from `first` on, rows [split, valid) from `wrapped` on (a ring's
// chunk that crosses the cache's end; split = valid otherwise).
template <class T>
struct ChunkRows {
  const T* first;
  const T* wrapped;
  std::int64_t split, stride;
  const T* row(std::int64_t j) const { return j < split ? first + j * stride : wrapped + (j - split) * stride; }
  // f(row, j) for the rows j < valid, in order.
  template <class Fn>
  void each(std::int64_t valid, const Fn& f) const {
    for (std::int64_t j = 0; j < split; ++j) f(first + j * stride, j);
    for (std::int64_t j = split; j < valid; ++j) f(wrapped + (j - split) * stride, j);
  }
  // Elements e .. e + kRun W - 1 of a row, widened into x.
  template <class V, int kRun>
  static void widen(const T* row, std::int64_t e, typename V::F* x) {
    for (int u = 0; u < kRun; ++u) x[u] = V::widen_n(row + e + u * V::W, V::W);
  }
};

// A q8_0 or q4_0 chunk's rows read in place, a block (or 8 elements) at a
// time dequantized in registers (8-lane targets): the values of
// dequantize_row_v. (Per vector, the scale's conversion and the nibble split
// repeated per 8 elements cost q4_0 16% more instructions than dequantizing
// the chunk first; per block, 15% fewer.)
template <QuantFormat kFormat>
struct QuantChunkRows {
  const CacheView& c;
  std::int64_t b, kv_head;
  ChunkSlots cs;
  template <class Fn>
  void each(std::int64_t valid, const Fn& f) const {
    for (std::int64_t j = 0; j < valid; ++j) f(c.quant_row(b, kv_head, cs(j)), j);
  }
  // Elements e .. e + kRun W - 1: a whole block (kRun = 4, e a multiple of
  // 32) as the row form's K, or one vector of one.
  template <class V, int kRun>
  static void widen(const std::uint8_t* row, std::int64_t e, typename V::F* x) {
    static_assert(V::W == 8 && (kRun == 4 || kRun == 1), "a block is 4 vectors of 8");
    if constexpr (kRun == 4) {
      QuantBlocks<kFormat>::load(row, e / kQuantBlock, x);
    } else if constexpr (kFormat == QuantFormat::q8_0) {
      const std::uint8_t* block = row + e / kQuantBlock * quant::kQ8Bytes;
      const __m128i q = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(block + 2 + e % kQuantBlock));
      x[0] = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(q)), _mm256_set1_ps(block_scale_v(block)));
    } else {
      static_assert(kFormat == QuantFormat::q4_0, "q8_0 or q4_0");
      const std::int64_t within = e % kQuantBlock;
      const std::uint8_t* block = row + e / kQuantBlock * quant::kQ4Bytes;
      const __m128i bytes = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(block + 2 + within % 16));
      const __m128i nibbles = within < 16 ? bytes : _mm_srli_epi16(bytes, 4);  // elements 0..15 low, 16..31 high
      const __m128i q = _mm_sub_epi8(_mm_and_si128(nibbles, _mm_set1_epi8(0x0f)), _mm_set1_epi8(8));
      x[0] = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(q)), _mm256_set1_ps(block_scale_v(block)));
    }
  }
};
template <class T>
inline ChunkRows<T> chunk_rows(const TensorView& t, std::int64_t b, std::int64_t kv_head, const ChunkSlots& cs,
                               std::int64_t valid) {
  const std::int64_t split = std::min(valid, cs.wrap);
  return {t.row<const T>(b, kv_head, cs.first), split < valid ? t.row<const T>(b, kv_head, 0) : nullptr, split,
          t.stride[2]};
}

// lo_r = fma chain of v_p * w_r[p] over the chunk's positions, for kHeads
// heads sharing each V load; then O_r = O_r * rescale_r + lo_r. D goes in
// blocks of kVec vectors held in registers. The chain runs over the rows in
// position order whichever run of slots they come from.
template <class V, int kHeads, int kVec, class Rows>
inline void chunk_pv_block(const Rows& rows, std::int64_t valid, const float* const* w,
                           const float* rescale, float* const* o, std::int64_t d0) {
  using F = typename V::F;
  F acc[kHeads][kVec];
  for (int r = 0; r < kHeads; ++r)
    for (int u = 0; u < kVec; ++u) acc[r][u] = V::zero();
  rows.each(valid, [&](const auto* v_row, std::int64_t j) {
    F wj[kHeads];
    for (int r = 0; r < kHeads; ++r) wj[r] = V::set1(w[r][j]);
    // Runs of 4 vectors where they can be whole blocks (d0 is then a multiple of 32).
    constexpr int kRun = kVec % 4 == 0 && V::W == 8 ? 4 : 1;
    for (int u0 = 0; u0 < kVec; u0 += kRun) {
      F vv[kRun];
      Rows::template widen<V, kRun>(v_row, d0 + u0 * V::W, vv);
      for (int u = 0; u < kRun; ++u)
        for (int r = 0; r < kHeads; ++r) acc[r][u0 + u] = V::fmadd(vv[u], wj[r], acc[r][u0 + u]);
    }
  });
  for (int r = 0; r < kHeads; ++r) {
    const F rv = V::set1(rescale[r]);
    for (int u = 0; u < kVec; ++u) {
      float* dst = o[r] + d0 + u * V::W;
      V::store(dst, V::add(V::mul(V::load(dst), rv), acc[r][u]));
    }
  }
}

// Vectors of D per pass: the prefill's choice, but on 16-lane vectors 8 for
// one or two heads — each accumulator is one fma chain over the chunk's
// positions, and 4 chains (the prefill's count) left half the FMA rate to
// their latency (one head, D = 128: 2 passes of 4 -> 1 pass of 8).
template <class V>
constexpr int decode_pv_vectors(int heads) {
  return V::W == 16 && heads <= 2 ? 8 : V::pv_vectors(heads);
}

template <class V, int kHeads, class Rows>
void chunk_pv(const Rows& rows, std::int64_t valid, const float* const* w, const float* rescale,
              float* const* o, std::int64_t D) {
  constexpr int kVec = decode_pv_vectors<V>(kHeads);
  std::int64_t d0 = 0;
  for (; d0 + kVec * V::W <= D; d0 += kVec * V::W)
    chunk_pv_block<V, kHeads, kVec>(rows, valid, w, rescale, o, d0);
  if constexpr (kVec > 4)
    for (; d0 + 4 * V::W <= D; d0 += 4 * V::W) chunk_pv_block<V, kHeads, 4>(rows, valid, w, rescale, o, d0);
  for (; d0 < D; d0 += V::W)  // D is a multiple of 32, hence of W
    chunk_pv_block<V, kHeads, 1>(rows, valid, w, rescale, o, d0);
}

// Rows are asked for kAhead chunks before they are used, one K and one V row
// per row computed (on Zen 4 the hardware prefetchers alone left ~35% of the
// bandwidth unused, on Zen 1 30%, and a whole chunk's prefetches at once
// stalled the loads of the chunk being computed; 1, 2 or 3 chunks ahead ran
// alike on Zen 1).
constexpr int kAhead = 2;

// The chunk a walk over groups [g_begin, g_end) reaches `steps` chunks after `chunk`.
inline std::int64_t walk_ahead(std::int64_t chunk, int steps, std::int64_t nwg, std::int64_t g_begin,
                               std::int64_t g_end) {
  for (int i = 0; i < steps; ++i) {
    const std::int64_t g = chunk % nwg;
    chunk = g + 1 < g_end ? chunk + 1 : chunk - g + nwg + g_begin;
  }
  return chunk;
}

// A tq4 row's rotated values (quant::dequantize_tq4_rotated, bit for bit):
// per 16 (AVX-512) or 8 (AVX2) coordinates, the nibbles widened to indices,
// the centroids gathered from registers by a permute, times the row's scale.
template <class V>
inline void dequantize_tq4_row_v(const std::uint8_t* row, std::int64_t D, float* out) {
  float scales[2];
  quant::tq4_code_scales(row, D, scales);
  const __m128i low4 = _mm_set1_epi8(0x0f);
  // 2n nibbles of n bytes in coordinate order: byte i's low nibble, then its high one.
  const auto indices = [&](const std::uint8_t* bytes) {
    const __m128i b = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(bytes));
    return _mm_unpacklo_epi8(_mm_and_si128(b, low4), _mm_and_si128(_mm_srli_epi16(b, 4), low4));
  };
  if constexpr (std::is_same_v<typename V::F, __m512>) {
    const __m512 codebook = _mm512_loadu_ps(quant::kTq4Codebook);
    for (std::int64_t j = 0; j < D; j += 16) {
      const __m512i idx = _mm512_cvtepu8_epi32(indices(row + j / 2));
      const __m512 s = _mm512_set1_ps(scales[j >= 256 ? 1 : 0]);
      _mm512_storeu_ps(out + j, _mm512_mul_ps(_mm512_permutexvar_ps(idx, codebook), s));
    }
  } else {
    const __m256 low_half = _mm256_loadu_ps(quant::kTq4Codebook), high_half = _mm256_loadu_ps(quant::kTq4Codebook + 8);
    for (std::int64_t j = 0; j < D; j += 16) {
      const __m128i nibbles = indices(row + j / 2);
      const __m256 s = _mm256_set1_ps(scales[j >= 256 ? 1 : 0]);
      for (int part = 0; part < 2; ++part) {
        const __m256i idx = _mm256_cvtepu8_epi32(part ? _mm_srli_si128(nibbles, 8) : nibbles);
        // indices 8..15 (bit 3 set) from the high half: blendv reads the sign bit
        const __m256 from_low = _mm256_permutevar8x32_ps(low_half, idx);
        const __m256 from_high = _mm256_permutevar8x32_ps(high_half, idx);
        const __m256 c = _mm256_blendv_ps(from_low, from_high, _mm256_castsi256_ps(_mm256_slli_epi32(idx, 28)));
        _mm256_storeu_ps(out + j + 8 * part, _mm256_mul_ps(c, s));
      }
    }
  }
}

// A quantized row of D elements (quant/blocks.hpp) as its exact f32 values:
// each int8 (q8_0) or nibble - 8 (q4_0) converted exactly, times the block's
// scale (block_scale_v); the products are exact in f32 (at most 8 by 11
// significant bits), so these are quant::dequantize_row's values, bit for
// bit. On 512-bit vectors with AVX-512, else with AVX2 and F16C, which every
// target's region includes (simd/targets.hpp).
template <class V>
inline void dequantize_row_v(QuantFormat format, const std::uint8_t* row, std::int64_t D, float* out) {
  if (format == QuantFormat::tq4) return dequantize_tq4_row_v<V>(row, D, out);
  const std::int64_t blocks = D / kQuantBlock;
  if constexpr (std::is_same_v<typename V::F, __m512>) {  // native AVX-512: 16 elements per instruction
    const __m128i low4 = _mm_set1_epi8(0x0f), eight = _mm_set1_epi8(8);
    const auto store16 = [](float* dst, __m128i q, __m512 d) {  // 16 int8 of q, times d
      _mm512_storeu_ps(dst, _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(q)), d));
    };
    if (format == QuantFormat::q8_0) {
      for (std::int64_t blk = 0; blk < blocks; ++blk, row += quant::kQ8Bytes, out += kQuantBlock) {
        const __m512 d = _mm512_set1_ps(block_scale_v(row));
        store16(out, _mm_loadu_si128(reinterpret_cast<const __m128i*>(row + 2)), d);
        store16(out + 16, _mm_loadu_si128(reinterpret_cast<const __m128i*>(row + 18)), d);
      }
      return;
    }
    for (std::int64_t blk = 0; blk < blocks; ++blk, row += quant::kQ4Bytes, out += kQuantBlock) {
      const __m512 d = _mm512_set1_ps(block_scale_v(row));
      const __m128i bytes = _mm_loadu_si128(reinterpret_cast<const __m128i*>(row + 2));
      store16(out, _mm_sub_epi8(_mm_and_si128(bytes, low4), eight), d);                           // 0..15
      store16(out + 16, _mm_sub_epi8(_mm_and_si128(_mm_srli_epi16(bytes, 4), low4), eight), d);  // 16..31
    }
  } else {  // AVX2 (every other target, the emulated ones included): the row form's blocks
    const auto store = [&](auto blocks_of) {
      for (std::int64_t blk = 0; blk < blocks; ++blk, out += kQuantBlock) {
        __m256 x[4];
        decltype(blocks_of)::load(row, blk, x);
        for (int i = 0; i < 4; ++i) _mm256_storeu_ps(out + 8 * i, x[i]);
      }
    };
    if (format == QuantFormat::q8_0)
      store(QuantBlocks<QuantFormat::q8_0>{});
    else
      store(QuantBlocks<QuantFormat::q4_0>{});
  }
}

// A cache's rows as the kernel reads them, elements of type T: a dense
// cache's in place; a quantized cache's (T = float) a chunk at a time,
// dequantized into `scratch` (C rows of D floats by position, so a chunk the
// ring's end splits is one run). What streams from memory, and is
// prefetched, is the stored row either way (`bytes` of it).
//
// A paged cache (CacheView::pages) places the chunk's rows block by block: a
// chunk (32 positions from a multiple of 32; no ring) that spans at most two
// blocks is read in place as two runs, as a ring's end is; one spread over
// more (possible for blocks of fewer than 32 rows) is copied into `scratch` first.
template <class V, class T>
struct CacheRows {
  const CacheView& c;
  float* scratch;
  std::int64_t D, bytes;
  const char* stored(std::int64_t b, std::int64_t kv_head, std::int64_t row_slot) const {
    if constexpr (std::is_same_v<T, float>)
      if (c.quant) return reinterpret_cast<const char*>(c.quant_row(b, kv_head, row_slot));
    return reinterpret_cast<const char*>(c.dense_row<T>(b, kv_head, row_slot));
  }
  ChunkRows<T> chunk(std::int64_t b, std::int64_t kv_head, const ChunkSlots& cs, std::int64_t valid) const {
    if constexpr (std::is_same_v<T, float>)
      if (c.quant) {
        for (std::int64_t j = 0; j < valid; ++j)
          dequantize_row_v<V>(c.quant->format, c.quant_row(b, kv_head, cs(j)), D, scratch + j * D);
        return {scratch, nullptr, valid, D};
      }
    if (!c.paged()) return chunk_rows<T>(c.dense, b, kv_head, cs, valid);
    const std::int64_t first = cs(0), in_first = std::min(valid, c.page_size - first % c.page_size);
    if (valid - in_first <= c.page_size) {  // one or two blocks: two runs in place
      const T* second = in_first < valid ? c.dense_row<T>(b, kv_head, first + in_first) : nullptr;
      return {c.dense_row<T>(b, kv_head, first), second, in_first, c.dense.stride[2]};
    }
    T* rows = reinterpret_cast<T*>(scratch);
    for (std::int64_t j = 0; j < valid; ++j) {
      const T* src = c.dense_row<T>(b, kv_head, cs(j));
      std::copy(src, src + D, rows + j * D);
    }
    return {rows, nullptr, valid, D};
  }
};
inline std::int64_t stored_row_bytes(const CacheView& c, std::int64_t D, std::int64_t element_bytes) {
  return c.quant ? quant_row_bytes(c.quant->format, D) : D * element_bytes;
}

template <class V, class TK, class TV>
void decode_groups(const TensorView& q, const CacheView& k, const CacheView& v, const TensorView& o_part,
                          const TensorView& s_part, const TensorView& m_part, const DecodePlan& p, std::int64_t b,
                          std::int64_t kv_begin, std::int64_t kv_end, std::int64_t g_begin, std::int64_t g_end,
                          std::vector<float>& work) {
  using F = typename V::F;
  constexpr std::int64_t W = V::W;  // floats per vector
  constexpr std::int64_t C = kDecodeChunk;
  const std::int64_t D = p.head_dim, group = p.heads / p.kv_heads;
  // Groups past the cache's end (g * C >= kv_seq_len) take no chunk: they
  // get no state, only the empty partials (a short cache would otherwise
  // fill and copy nwg states per KV head for a few positions).
  const std::int64_t g_live = std::clamp(live_groups(p), g_begin, g_end);
  const std::int64_t n_groups = g_live - g_begin;
  constexpr int S = int(32 / W);  // lane vectors per position
  const std::int64_t segments = (D + 4 * W - 1) / (4 * W), P = 4 * segments;  // plane vectors per row
  // work, vectors first (aligned): Q's planes per head (group x P), one K
  // row's planes (P), the lane sums of W positions (group x S x W); then
  // floats: per NWG group its O (group x D), max and sum (group each); the
  // chunk's scores/weights (group x C) and rescales.
  // The row form (V::kDecodeRowScores) needs no vectors: the floats start
  // with Q staged (group x D per KV head).
  //
  // KV heads [kv_begin, kv_end) go together, position by position: each has
  // its own staged Q (nkv x the above) and states; the chunk's temporaries
  // are shared (a cache whose heads sit side by side in each position, as a
  // paged pool's, is then read in memory order).
  constexpr bool kRows = V::kDecodeRowScores;
  const std::int64_t nkv = kv_end - kv_begin;
  const std::int64_t q_vectors = kRows ? 0 : group * P;  // per KV head
  const std::int64_t vectors = kRows ? 0 : nkv * q_vectors + P + group * S * W;
  const std::int64_t staged = kRows ? nkv * group * D : 0;
  const std::int64_t state = group * (D + 2);
  // Last, for a quantized K and V: a chunk's rows dequantized (C x D each,
  // 64-byte aligned).
  // (Also for a paged dense cache with blocks of fewer than 32 rows, whose
  // chunks may spread over more than two blocks: their rows gathered.)
  const auto gathered = [&](const CacheView& c) { return c.quantized() || (c.paged() && c.page_size < 32); };
  const std::int64_t dequantized = (gathered(k) + gathered(v)) * C * D;
  const std::int64_t floats = (vectors + 1) * W + staged + nkv * n_groups * state + group * C + group;
  work.resize(std::size_t(floats + (dequantized ? dequantized + 16 : 0)));
  F* qp = reinterpret_cast<F*>((reinterpret_cast<std::uintptr_t>(work.data()) + sizeof(F) - 1) / sizeof(F) * sizeof(F));
  F* const q_base = qp;  // KV head i's Q planes at q_base + i * q_vectors
  F* kp = qp + nkv * q_vectors;
  F* lanes = kp + P;
  float* qh = reinterpret_cast<float*>(qp + vectors);  // the row form's staged Q: KV head i's at qh + i * group * D
  // The state of KV head i for group block offset gi at state_base + (gi * nkv + i) * state: a
  // chunk's KV heads side by side, as their rows are in a paged pool (head-major, the 8 states a
  // chunk updated lay n_groups states apart: the bench's paged decode at 512 positions, in cache,
  // ran at 81% of the contiguous batch's speed, 92% side by side; Intel Xeon family 6 model 167).
  float* const state_base = qh + staged;
  const auto state_of = [&](std::int64_t kv, std::int64_t gi) { return state_base + (gi * nkv + kv) * state; };
  float* s = state_base + nkv * n_groups * state;
  float* rescale = s + group * C;
  float* dequant = reinterpret_cast<float*>((reinterpret_cast<std::uintptr_t>(rescale + group) + 63) / 64 * 64);
  const CacheRows<V, TK> k_cache{k, dequant, D, stored_row_bytes(k, D, sizeof(TK))};
  const CacheRows<V, TV> v_cache{v, dequant + (gathered(k) ? C * D : 0), D, stored_row_bytes(v, D, sizeof(TV))};
  for (std::int64_t kv = 0; kv < nkv; ++kv) {
    F* qk = q_base + kv * q_vectors;
    for (std::int64_t r = 0; r < group; ++r) {  // Q staged as half (then as planes)
      const float* src = q.row<const float>(b, (kv_begin + kv) * group + r, 0);
      float* dst = kRows ? qh + (kv * group + r) * D : reinterpret_cast<float*>(kp);
      for (std::int64_t d = 0; d < D; ++d) dst[d] = f16_to_f32(f32_to_f16(src[d]));
      if constexpr (!kRows) load_planes<V>(dst, D, qk + r * P);
    }
    for (std::int64_t gi = 0; gi < n_groups; ++gi) {
      float* st = state_of(kv, gi);
      std::fill(st, st + group * D, 0.0f);
      std::fill(st + group * D, st + group * (D + 1), kInitialMax);
      std::fill(st + group * (D + 1), st + state, 0.0f);
    }
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
      const ChunkSlots cs = chunk_slots(p, p0);  // rows by slot: the ring's end may fall inside the chunk
      // Rows to prefetch: those of the chunk `ahead` chunks on, one K and one
      // V row per row computed, in memory order — the kernel's step s of the
      // chunk (KV head s / C, position s % C) asks for position s / nkv, KV
      // head s % nkv, so KV heads side by side (a paged pool) are asked for
      // line after line, not a 256-byte row out of every H_kv rows: 81% ->
      // 92-96% of the contiguous batch's speed for the bench's paged decode
      // (f16, H_kv = 8, 128 MiB, 2 threads, Intel Xeon family 6 model 167).
      // With KV heads together a chunk is nkv times the bytes, and one chunk
      // ahead measured best (a lead of 64 to 512 rows: 74%, 84%, 93%, 87%).
      const std::int64_t next = walk_ahead(chunk, nkv > 1 ? 1 : kAhead, p.nwg, g_begin, g_end) * C;
      for (std::int64_t kv_head = kv_begin; kv_head < kv_end; ++kv_head) {
      float* st = state_of(kv_head - kv_begin, g - g_begin);
      F* const q_planes = q_base + (kv_head - kv_begin) * q_vectors;  // this KV head's staged Q
      const std::int64_t kv_step = (kv_head - kv_begin) * C;
      // The row step j of this KV head's chunk prefetches (see `next`): its
      // slot and KV head, or slot -1 past the cache's end.
      const auto ahead_of = [&](std::int64_t j) {
        const std::int64_t step = kv_step + j, pos = next + step / nkv;
        return std::pair<std::int64_t, std::int64_t>{pos < p.kv_len ? slot(p, pos) : -1, kv_begin + step % nkv};
      };
      float* o = st;
      float* row_max = st + group * D;
      float* row_sum = row_max + group;
      // Dot products for every head of the group, W positions at a time.
      // The row form reads a q8_0 or q4_0 K in place (dequantized in registers).
      const bool k_in_place = kRows && std::is_same_v<TK, float> && k.quantized() &&
                              (k.quant->format == QuantFormat::q8_0 || k.quant->format == QuantFormat::q4_0);
      const ChunkRows<TK> k_rows = k_in_place ? ChunkRows<TK>{nullptr, nullptr, 0, 0} : k_cache.chunk(b, kv_head, cs, valid);
      // The row form asks for a dense cache's rows only: a quantized row (68-136
      // bytes, lines shared with its neighbours) streams faster on the hardware
      // prefetchers alone (Zen 4 with AVX2 only, H = H_kv = 8, D = 128, 128 MiB
      // f16 equivalent, 2 threads, 5 alternated rounds: q8_0 5.23 -> 4.05 ms,
      // q4_0 5.73 -> 5.16, tq4 9.36 -> 8.65; f16 alike, 4.77 -> 4.69, but at
      // D = 256 f32 with groups of 2 lost ~7% of a paired read without them,
      // f16 with groups of 4 35% of its time).
      const bool ask_k = !k.quantized(), ask_v = !v.quantized();
      if constexpr (kRows) for (std::int64_t j0 = 0; j0 < valid; j0 += W) {
        const std::int64_t n = std::min(W, valid - j0);
        if (ask_k || ask_v)
          for (std::int64_t j = 0; j < n; ++j)
            if (const auto [ahead_slot, ahead_head] = ahead_of(j0 + j); ahead_slot >= 0) {
              if (ask_k) prefetch_row(k_cache.stored(b, ahead_head, ahead_slot), k_cache.bytes);
              if (ask_v) prefetch_row(v_cache.stored(b, ahead_head, ahead_slot), v_cache.bytes);
            }
        const float* q_rows = qh + (kv_head - kv_begin) * group * D;
        float* const sj = s + j0;  // past n: -inf below
        if constexpr (std::is_same_v<TK, float>) {
          if (k_in_place) {
            const auto row_of = [&](std::int64_t j) { return k.quant_row(b, kv_head, cs(j0 + j)); };
            if (k.quant->format == QuantFormat::q8_0)
              row_block_scores<V, QuantBlocks<QuantFormat::q8_0>>(row_of, n, D, q_rows, group, sj, C);
            else
              row_block_scores<V, QuantBlocks<QuantFormat::q4_0>>(row_of, n, D, q_rows, group, sj, C);
            continue;
          }
        }
        const auto row_of = [&](std::int64_t j) { return k_rows.row(j0 + j); };
        row_block_scores<V, DenseBlocks<V, TK>>(row_of, n, D, q_rows, group, sj, C);
      }
      // planes_scores for a quantized K (rows dequantized into L1 scratch):
      // in cache 1.45x faster than the loop below (Intel Xeon family 6 model
      // 167, f16 D = 128, 30 -> 21 ns per position and head), but on dense
      // caches read in place from DRAM (128 MiB, 2 threads) 1.3-1.6x slower —
      // the faster loop's demand loads and prefetches streamed worse (prefetch
      // distance and hint made no difference) — so dense caches keep the loop.
      // q4_0 -23%, tq4 -15-20%, q8_0 within noise at 32768 positions.
      else if (const int seg_count = int(D / (4 * W)); k.quantized() && W == 16 && D % (4 * W) == 0 && seg_count <= 8)
        for (std::int64_t j0 = 0; j0 < valid; j0 += W) {
          const std::int64_t n = std::min(W, valid - j0);
          const auto row_of = [&](std::int64_t j) { return k_rows.row(j0 + j); };
          const auto prefetch = [&](std::int64_t j) {
            if (const auto [ahead_slot, ahead_head] = ahead_of(j0 + j); ahead_slot >= 0) {
              prefetch_row(k_cache.stored(b, ahead_head, ahead_slot), k_cache.bytes);
              prefetch_row(v_cache.stored(b, ahead_head, ahead_slot), v_cache.bytes);
            }
          };
          float* sj = s + j0;
          switch (seg_count) {
            case 1: planes_scores<V, 1>(row_of, n, q_planes, group, lanes, sj, C, prefetch); break;
            case 2: planes_scores<V, 2>(row_of, n, q_planes, group, lanes, sj, C, prefetch); break;
            case 3: planes_scores<V, 3>(row_of, n, q_planes, group, lanes, sj, C, prefetch); break;
            case 4: planes_scores<V, 4>(row_of, n, q_planes, group, lanes, sj, C, prefetch); break;
            case 5: planes_scores<V, 5>(row_of, n, q_planes, group, lanes, sj, C, prefetch); break;
            case 6: planes_scores<V, 6>(row_of, n, q_planes, group, lanes, sj, C, prefetch); break;
            case 7: planes_scores<V, 7>(row_of, n, q_planes, group, lanes, sj, C, prefetch); break;
            default: planes_scores<V, 8>(row_of, n, q_planes, group, lanes, sj, C, prefetch); break;
          }
        }
      else for (std::int64_t j0 = 0; j0 < valid; j0 += W) {
        const std::int64_t n = std::min(W, valid - j0);
        for (std::int64_t j = 0; j < W; ++j) {
          if (j >= n) {  // past the chunk's end: zeros, overwritten with -inf below
            for (std::int64_t i = 0; i < group * S; ++i) lanes[i * W + j] = V::zero();
            continue;
          }
          // The prefetch calls written out, not through a shared lambda: that form ran
          // this dense loop 1.75x slower from DRAM (f16 128 MiB, 2 threads; compiler
          // placement). Only the row's index math is shared (ahead_of: measured alike).
          if (const auto [ahead_slot, ahead_head] = ahead_of(j0 + j); ahead_slot >= 0) {
            prefetch_row(k_cache.stored(b, ahead_head, ahead_slot), k_cache.bytes);
            prefetch_row(v_cache.stored(b, ahead_head, ahead_slot), v_cache.bytes);
          }
          load_planes<V>(k_rows.row(j0 + j), D, kp);
          for (std::int64_t r = 0; r < group; ++r)
            lane_sums<V>(kp, q_planes + r * P, segments, lanes + r * S * W + j, W);
        }
        for (std::int64_t r = 0; r < group; ++r) {
          F tree[S];
          for (int t = 0; t < S; ++t) tree[t] = transposed_tree<V>(lanes + (r * S + t) * W);
          V::store(s + r * C + j0, tree_v<V>(tree, S));
        }
      }
      for (std::int64_t j = valid; j < C; ++j)
        for (std::int64_t r = 0; r < group; ++r) s[r * C + j] = -kInf;
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
        const float chunk_max = chunk_max_of<V>(sr);
        const float old_max = row_max[r];
        const float new_max = std::max(old_max, chunk_max);
        rescale[r] = simd::exp_f32(old_max - new_max);
        const F nm = V::set1(new_max);
        for (std::int64_t j = 0; j < C; j += W) V::store(sr + j, simd::exp_v<V>(V::sub(V::load(sr + j), nm)));
        row_sum[r] = row_sum[r] * rescale[r] + tree_sum<C>(sr);
        row_max[r] = new_max;
      }
      // P·V, four heads per pass over V.
      const auto pv = [&](const auto& v_rows) {
        for (std::int64_t r = 0; r < group; r += 4) {
          const float* w[4];
          float* o_rows[4];
          const std::int64_t n = std::min<std::int64_t>(4, group - r);
          for (std::int64_t i = 0; i < n; ++i) {
            w[i] = s + (r + i) * C;
            o_rows[i] = o + (r + i) * D;
          }
          switch (n) {
            case 4: chunk_pv<V, 4>(v_rows, valid, w, rescale + r, o_rows, D); break;
            case 3: chunk_pv<V, 3>(v_rows, valid, w, rescale + r, o_rows, D); break;
            case 2: chunk_pv<V, 2>(v_rows, valid, w, rescale + r, o_rows, D); break;
            default: chunk_pv<V, 1>(v_rows, valid, w, rescale + r, o_rows, D); break;
          }
        }
      };
      // On 8-lane targets a q8_0 or q4_0 V is read in place, as K is.
      if constexpr (kRows && std::is_same_v<TV, float>) {
        if (v.quantized() && v.quant->format == QuantFormat::q8_0) {
          pv(QuantChunkRows<QuantFormat::q8_0>{v, b, kv_head, cs});
          continue;
        }
        if (v.quantized() && v.quant->format == QuantFormat::q4_0) {
          pv(QuantChunkRows<QuantFormat::q4_0>{v, b, kv_head, cs});
          continue;
        }
      }
      pv(v_cache.chunk(b, kv_head, cs, valid));
      }  // KV heads
    }
  }
  for (std::int64_t kv_head = kv_begin; kv_head < kv_end; ++kv_head) {
  if (g_begin == 0 && n_groups > 0) {  // the sinks join group 0 once it has seen its chunks (even none)
    float* const first = state_of(kv_head - kv_begin, 0);
    for (std::int64_t r = 0; r < group; ++r)
      fold_sink(p, kv_head * group + r, first[group * D + r], first[group * (D + 1) + r], first + r * D);
  }
  for (std::int64_t g = g_begin; g < g_end; ++g) {
    const float* st = state_of(kv_head - kv_begin, g - g_begin);
    for (std::int64_t r = 0; r < group; ++r) {
      const std::int64_t h = kv_head * group + r;
      float* o_row = o_part.row<float>(b, h, g);
      if (g >= g_live) {  // no chunk: the scalar model's untouched state
        if (!p.write_idle) continue;
        std::fill(o_row, o_row + D, 0.0f);
        *s_part.row<float>(b, h, g) = 0.0f;
        *m_part.row<float>(b, h, g) = kInitialMax;
        continue;
      }
      std::copy(st + r * D, st + (r + 1) * D, o_row);
      *s_part.row<float>(b, h, g) = st[group * (D + 1) + r];
      *m_part.row<float>(b, h, g) = st[group * D + r];
    }
  }
  }  // KV heads
}

// merge_attention's row (decode.cpp): the same fma chain per element as the
// scalar loop — parts in order, from 0 — then one multiply, W elements at a
// time; the parts' order inside each element is all that fixes the bits. The
// destination may be part 0's row (each element is read before it is written).
template <class V>
void merge_row(const float* const* parts, const float* weights, std::size_t n, std::int64_t offset,
               std::int64_t head_dim, float inv, float* dst) {
  using F = typename V::F;
  const F scale = V::set1(inv);
  std::int64_t d = 0;
  for (; d + V::W <= head_dim; d += V::W) {
    F acc = V::zero();
    for (std::size_t i = 0; i < n; ++i) acc = V::fmadd(V::load(parts[i] + offset + d), V::set1(weights[i]), acc);
    V::store(dst + d, V::mul(acc, scale));
  }
  if (d < head_dim) {
    const std::int64_t rest = head_dim - d;
    F acc = V::zero();
    for (std::size_t i = 0; i < n; ++i)
      acc = V::fmadd(V::load_n(parts[i] + offset + d, rest), V::set1(weights[i]), acc);
    V::store_n(dst + d, V::mul(acc, scale), rest);
  }
}

}  // namespace
}  // namespace fattn::decode_detail
