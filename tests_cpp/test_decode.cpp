// Vec decode and merge through the C++ API.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "../cpp/src/runtime/isa.hpp"
#include "fattn/fattn.hpp"

using namespace fattn;

namespace {

struct Cache {
  std::int64_t B, H, H_kv, capacity, D;
  DType dt;
  std::vector<float> q, k32, v32;
  std::vector<std::uint16_t> k16, v16;
  Cache(std::int64_t b, std::int64_t h, std::int64_t hkv, std::int64_t cap, std::int64_t d, DType t, std::uint32_t seed)
      : B(b), H(h), H_kv(hkv), capacity(cap), D(d), dt(t) {
    std::mt19937 rng(seed);
    std::normal_distribution<float> nd;
    q.resize(std::size_t(B * H * D));
    for (auto& x : q) x = nd(rng);
    const std::size_t n = std::size_t(B * H_kv * capacity * D);
    k32.resize(n);
    v32.resize(n);
    for (auto& x : k32) x = nd(rng);
    for (auto& x : v32) x = nd(rng);
    if (dt != DType::f32) {
      k16.resize(n);
      v16.resize(n);
      from_f32(dt, k32.data(), k16.data(), std::int64_t(n));
      from_f32(dt, v32.data(), v16.data(), std::int64_t(n));
      to_f32(dt, k16.data(), k32.data(), std::int64_t(n));
      to_f32(dt, v16.data(), v32.data(), std::int64_t(n));
    }
  }
  TensorView qv() { return contiguous_view(q.data(), DType::f32, {B, H, 1, D}, false); }
  TensorView kv() {
    return contiguous_view(dt == DType::f32 ? static_cast<void*>(k32.data()) : k16.data(), dt, {B, H_kv, capacity, D},
                           false);
  }
  TensorView vv() {
    return contiguous_view(dt == DType::f32 ? static_cast<void*>(v32.data()) : v16.data(), dt, {B, H_kv, capacity, D},
                           false);
  }
  std::vector<float> run(const DecodeParams& p) {
    std::vector<float> out(std::size_t(B * H * D));
    flash_attn_vec(qv(), kv(), vv(), contiguous_view(out.data(), DType::f32, {B, H, 1, D}, true), p);
    return out;
  }
  // Exact attention over positions [start, kv_len) in double.
  std::vector<double> exact(std::int64_t kv_len, std::int64_t start, const std::vector<float>& sinks = {}) const {
    std::vector<double> out(std::size_t(B * H * D), 0.0);
    const double scale = 1.0 / std::sqrt(double(float(D)));
    for (std::int64_t b = 0; b < B; ++b)
      for (std::int64_t h = 0; h < H; ++h) {
        const std::int64_t kh = h / (H / H_kv);
        std::vector<double> w;
        double mx = -INFINITY;
        for (std::int64_t p = start; p < kv_len; ++p) {
          double dot = 0;
          for (std::int64_t d = 0; d < D; ++d)
            dot += double(q[std::size_t((b * H + h) * D + d)]) * double(k32[std::size_t(((b * H_kv + kh) * capacity + p) * D + d)]);
          w.push_back(dot * scale);
          mx = std::max(mx, w.back());
        }
        const double sink = sinks.empty() ? -INFINITY : double(sinks[std::size_t(h)]);
        mx = std::max(mx, sink);
        double sum = std::exp(sink - mx);  // the sink: in the denominator only
        for (auto& x : w) sum += (x = std::exp(x - mx));
        for (std::int64_t p = start; p < kv_len; ++p)
          for (std::int64_t d = 0; d < D; ++d)
            out[std::size_t((b * H + h) * D + d)] +=
                w[std::size_t(p - start)] / sum * double(v32[std::size_t(((b * H_kv + kh) * capacity + p) * D + d)]);
      }
    return out;
  }
};

class DecodeAgainstFloat64 : public ::testing::TestWithParam<std::tuple<DType, int, std::int64_t>> {};

TEST_P(DecodeAgainstFloat64, WithinTheHalfQBound) {
  const auto [dt, nwg, kv_len] = GetParam();
  Cache c(2, 8, 2, kv_len + 7, 256, dt, 42);
  DecodeParams p;
  p.kv_seq_len = kv_len;
  p.nwg = nwg;
  const auto got = c.run(p);
  const auto want = c.exact(kv_len, 0);
  // Q rounded to half moves each score by <= 2^-11 * scale * sum|q k| (~0.008 here),
  // hence the output by <= (exp(2E) - 1) * max|V| ~ 0.07; typical errors are ~1e-4.
  for (std::size_t i = 0; i < got.size(); ++i) ASSERT_NEAR(got[i], want[i], 0.07) << i;
  double worst = 0;
  for (std::size_t i = 0; i < got.size(); ++i) worst = std::max(worst, std::fabs(got[i] - want[i]));
  EXPECT_LT(worst, 5e-3);
}

INSTANTIATE_TEST_SUITE_P(Caches, DecodeAgainstFloat64,
                         ::testing::Combine(::testing::Values(DType::f32, DType::f16, DType::bf16),
                                            ::testing::Values(1, 3, 32, 64), ::testing::Values(1, 33, 1000)),
                         [](const auto& info) {
                           return dtype_name(std::get<0>(info.param)) + "_nwg" +
                                  std::to_string(std::get<1>(info.param)) + "_kv" +
                                  std::to_string(std::get<2>(info.param));
                         });

TEST(Decode, PartialsThenReduceIsBitIdentical) {
  Cache c(1, 4, 4, 300, 128, DType::f16, 7);
  DecodeParams p;
  p.kv_seq_len = 290;
  p.nwg = 5;
  p.mask = DecodeMask::sliding_window;
  p.window = 100;
  const auto whole = c.run(p);
  std::vector<float> o(std::size_t(4 * 5 * 128)), s(20), m(20), out(std::size_t(4 * 128));
  flash_attn_vec_partials(c.qv(), c.kv(), c.vv(), contiguous_view(o.data(), DType::f32, {1, 4, 5, 128}, true),
                          contiguous_view(s.data(), DType::f32, {1, 4, 5, 1}, true),
                          contiguous_view(m.data(), DType::f32, {1, 4, 5, 1}, true), p);
  flash_attn_vec_reduce(contiguous_view(o.data(), DType::f32, {1, 4, 5, 128}, false),
                        contiguous_view(s.data(), DType::f32, {1, 4, 5, 1}, false),
                        contiguous_view(m.data(), DType::f32, {1, 4, 5, 1}, false),
                        contiguous_view(out.data(), DType::f32, {1, 4, 1, 128}, true));
  EXPECT_EQ(0, std::memcmp(out.data(), whole.data(), out.size() * 4));
}

TEST(Decode, OutMayBeQItself) {
  // The reduce of a KV head's rows runs as soon as that head's partials are
  // done, while other heads are still being computed: writing the result
  // over q must not change a bit, with one block per head or several.
  const int before = get_num_threads();
  for (const int threads : {1, 2, 8})
    for (const std::int64_t kv_heads : {1, 4}) {
      set_num_threads(threads);
      Cache c(1, 8, kv_heads, 300, 64, DType::f16, 11);  // 1 KV head: more blocks than threads
      DecodeParams p;
      p.kv_seq_len = 297;
      const auto separate = c.run(p);
      flash_attn_vec(c.qv(), c.kv(), c.vv(), contiguous_view(c.q.data(), DType::f32, {1, 8, 1, 64}, true), p);
      EXPECT_EQ(0, std::memcmp(c.q.data(), separate.data(), separate.size() * 4)) << threads << " " << kv_heads;
    }
  set_num_threads(before);
}

TEST(Decode, SlidingWindowEqualsTheTruncatedCache) {
  Cache c(1, 2, 1, 200, 64, DType::f32, 3);
  DecodeParams p;
  p.kv_seq_len = 150;
  p.mask = DecodeMask::sliding_window;
  p.window = 40;
  const auto got = c.run(p);
  const auto want = c.exact(150, 110);
  for (std::size_t i = 0; i < got.size(); ++i) EXPECT_NEAR(got[i], want[i], 5e-3);
}

TEST(Decode, GarbageBeyondKvSeqLenIsNeverRead) {
  Cache c(1, 2, 2, 64, 32, DType::f32, 5);
  DecodeParams p;
  p.kv_seq_len = 40;
  const auto clean = c.run(p);
  for (std::int64_t h = 0; h < 2; ++h)
    for (std::int64_t pos = 40; pos < 64; ++pos)
      for (std::int64_t d = 0; d < 32; ++d) {
        c.k32[std::size_t((h * 64 + pos) * 32 + d)] = std::numeric_limits<float>::quiet_NaN();
        c.v32[std::size_t((h * 64 + pos) * 32 + d)] = std::numeric_limits<float>::infinity();
      }
  EXPECT_EQ(0, std::memcmp(clean.data(), c.run(p).data(), clean.size() * 4));
}

TEST(Decode, SeedValidationErrors) {
  Cache c(1, 4, 2, 10, 64, DType::f32, 1);
  std::vector<float> out(std::size_t(4 * 64));
  const TensorView ov = contiguous_view(out.data(), DType::f32, {1, 4, 1, 64}, true);
  auto expect = [&](DecodeParams p, TensorView q, TensorView k, const char* fragment) {
    try {
      flash_attn_vec(q, k, k, ov, p);
      FAIL() << fragment;
    } catch (const InvalidArgument& e) {
      EXPECT_NE(std::string(e.what()).find(fragment), std::string::npos) << e.what();
    }
  };
  DecodeParams ok;
  ok.kv_seq_len = 5;
  TensorView q = c.qv(), k = c.kv();
  TensorView q48 = q, k48 = k;
  q48.shape[3] = k48.shape[3] = 48;
  expect(ok, q48, k48, "head dim D must be a multiple of 32");
  TensorView q0 = q;
  q0.shape[1] = 0;
  expect(ok, q0, k, "q: every extent must be > 0");
  TensorView k3 = k;
  k3.shape[1] = 3;
  expect(ok, q, k3, "must be divisible");
  DecodeParams zero = ok;
  zero.kv_seq_len = 0;
  expect(zero, q, k, "kv_seq_len: must be >= 1");
  DecodeParams over = ok;
  over.kv_seq_len = 11;
  expect(over, q, k, "kv_seq_len: must be <= the capacity of k_cache and v_cache (10)");
  DecodeParams nwg = ok;
  nwg.nwg = 65;
  expect(nwg, q, k, "nwg: must be from 1 to 64");
  TensorView qh = q;
  qh.dtype = DType::f16;
  expect(ok, qh, k, "q: dtype must be float32");
}

TEST(Decode, SinksJoinTheDenominatorOnly) {
  // Heads: a sink near the scores, one far above them (the output shrinks
  // toward 0), none (-inf), one far below; with a window that leaves group 0
  // no chunk to see (nwg = 64: its only chunk, positions 0-31, is masked).
  const float inf = std::numeric_limits<float>::infinity();
  Cache c(2, 4, 2, 1010, 128, DType::f16, 9);
  DecodeParams p;
  p.kv_seq_len = 1000;
  p.sinks = {0.5f, 9.0f, -inf, -50.0f};
  for (const auto& [nwg, window] : {std::pair<int, int>{32, 0}, {64, 100}, {1, 5}}) {
    p.nwg = nwg;
    p.mask = window ? DecodeMask::sliding_window : DecodeMask::none;
    p.window = window;
    const auto got = c.run(p);
    const auto want = c.exact(1000, 1000 - (window ? window : 1000), p.sinks);
    for (std::size_t i = 0; i < got.size(); ++i) ASSERT_NEAR(got[i], want[i], 5e-3) << nwg << " " << i;
    DecodeParams none = p;
    none.sinks.clear();
    const auto plain = c.run(none);
    // head 2 (-inf) unchanged to the bit; head 1 (sink 9) visibly scaled down
    for (std::int64_t b = 0; b < 2; ++b) {
      EXPECT_EQ(0, std::memcmp(&got[std::size_t((b * 4 + 2) * 128)], &plain[std::size_t((b * 4 + 2) * 128)], 128 * 4));
      double g = 0, q = 0;
      for (std::int64_t d = 0; d < 128; ++d) {
        g += std::fabs(got[std::size_t((b * 4 + 1) * 128 + d)]);
        q += std::fabs(plain[std::size_t((b * 4 + 1) * 128 + d)]);
      }
      EXPECT_LT(g, 0.5 * q);  // e^9 outweighs the keys (sum of e^score ~ 1000 e^0.5)
    }
  }
}

TEST(Decode, RingStartOnARolledCacheIsBitIdentical) {
  // Rolling the cache by r puts logical position p at slot (p + r) % capacity.
  for (const DType dt : {DType::f32, DType::f16, DType::bf16}) {
    Cache c(1, 4, 2, 150, 64, dt, 13);
    DecodeParams p;
    p.kv_seq_len = 141;
    p.nwg = 3;
    p.mask = DecodeMask::sliding_window;
    p.window = 70;
    const auto want = c.run(p);
    for (const std::int64_t r : {1, 9, 75, 149}) {
      Cache rolled = c;
      for (std::int64_t h = 0; h < 2; ++h)
        for (std::int64_t pos = 0; pos < 150; ++pos) {
          const std::size_t from = std::size_t((h * 150 + pos) * 64), to = std::size_t((h * 150 + (pos + r) % 150) * 64);
          std::copy_n(&c.k32[from], 64, &rolled.k32[to]);
          std::copy_n(&c.v32[from], 64, &rolled.v32[to]);
          if (dt != DType::f32) {
            std::copy_n(&c.k16[from], 64, &rolled.k16[to]);
            std::copy_n(&c.v16[from], 64, &rolled.v16[to]);
          }
        }
      DecodeParams ring = p;
      ring.ring_start = r;
      EXPECT_EQ(0, std::memcmp(rolled.run(ring).data(), want.data(), want.size() * 4)) << dtype_name(dt) << " " << r;
      ring.ring_start = (r + 1) % 150;  // the wrong start reads other positions
      EXPECT_NE(0, std::memcmp(rolled.run(ring).data(), want.data(), want.size() * 4));
    }
  }
}

// A paged pool [num_blocks, block_size, H_kv, D] (vLLM's layout) read
// through a shuffled block table equals each sequence's contiguous cache.
TEST(Decode, PagedEqualsEachSequencesContiguousCache) {
  const std::int64_t B = 3, H = 4, H_kv = 2, cap = 96, D = 64;
  for (const std::int64_t bs : {1, 16, 32, 48}) {
    Cache c(B, H, H_kv, cap, D, DType::f32, 21);
    const std::int64_t per_seq = (cap + bs - 1) / bs, num_blocks = B * per_seq + 2;
    std::vector<float> pk(std::size_t(num_blocks * bs * H_kv * D), NAN), pv = pk;
    std::vector<std::int32_t> table(static_cast<std::size_t>(B * per_seq));
    std::mt19937 rng(5);
    std::vector<std::int32_t> order(static_cast<std::size_t>(num_blocks));
    for (std::int32_t i = 0; i < std::int32_t(num_blocks); ++i) order[std::size_t(i)] = i;
    std::shuffle(order.begin(), order.end(), rng);
    for (std::int64_t b = 0; b < B; ++b)
      for (std::int64_t i = 0; i < per_seq; ++i) {
        const std::int32_t blk = order[std::size_t(b * per_seq + i)];
        table[std::size_t(b * per_seq + i)] = blk;
        for (std::int64_t r = 0; r < bs && i * bs + r < cap; ++r)
          for (std::int64_t h = 0; h < H_kv; ++h)
            for (std::int64_t d = 0; d < D; ++d) {
              const std::size_t to = std::size_t(((blk * bs + r) * H_kv + h) * D + d);
              const std::size_t from = std::size_t(((b * H_kv + h) * cap + i * bs + r) * D + d);
              pk[to] = c.k32[from];
              pv[to] = c.v32[from];
            }
      }
    // The pool as [num_blocks, H_kv, block_size, D]: heads inside a block's rows.
    auto pool = [&](std::vector<float>& x) {
      TensorView t = contiguous_view(x.data(), DType::f32, {num_blocks, bs, H_kv, D}, false);
      std::swap(t.shape[1], t.shape[2]);
      std::swap(t.stride[1], t.stride[2]);
      return t;
    };
    const std::vector<std::int64_t> lens = {96, 1, 50};
    DecodeParams p;
    p.nwg = 3;
    std::vector<float> out(std::size_t(B * H * D));
    run(plan_flash_attn_vec_paged(c.qv(), pool(pk), pool(pv), BlockTableView{table.data(), B, per_seq, per_seq}, lens,
                                  p),
        contiguous_view(out.data(), DType::f32, {B, H, 1, D}, true));
    for (std::int64_t b = 0; b < B; ++b) {
      DecodeParams one = p;
      one.kv_seq_len = lens[std::size_t(b)];
      std::vector<float> want(static_cast<std::size_t>(H * D));
      TensorView q1 = c.qv(), k1 = c.kv(), v1 = c.vv();
      for (TensorView* t : {&q1, &k1, &v1}) {
        t->data = static_cast<float*>(t->data) + b * t->stride[0];
        t->shape[0] = 1;
      }
      flash_attn_vec(q1, k1, v1, contiguous_view(want.data(), DType::f32, {1, H, 1, D}, true), one);
      EXPECT_EQ(0, std::memcmp(want.data(), out.data() + b * H * D, want.size() * 4)) << "block size " << bs << " b " << b;
    }
    // A table entry past the pool, or too few entries for a length, is refused.
    std::vector<std::int32_t> bad = table;
    bad[1] = std::int32_t(num_blocks);
    EXPECT_THROW(plan_flash_attn_vec_paged(c.qv(), pool(pk), pool(pv), BlockTableView{bad.data(), B, per_seq, per_seq},
                                           lens, p),
                 InvalidArgument);
    EXPECT_THROW(plan_flash_attn_vec_paged(c.qv(), pool(pk), pool(pv), BlockTableView{table.data(), B, 1, per_seq},
                                           lens, p),
                 InvalidArgument);
  }
}

TEST(Merge, SinksJoinTheMergedDenominator) {
  // Rows [2 heads][2 rows each] of D = 2: row r's sink is sinks[(r / 2) % 2].
  // One part with LSE 0 and output x: with a sink s the result is x / (1 + e^s).
  const float inf = std::numeric_limits<float>::infinity();
  const std::vector<float> x = {1, 2, 3, 4, 5, 6, 7, 8}, l0 = {0, 0, 0, 0};
  const std::vector<float> sinks = {std::log(3.0f), -inf};
  std::vector<float> out(8), lse(4), plain(8), plain_lse(4);
  merge_attention({x.data()}, {l0.data()}, 4, 2, out.data(), lse.data(), MergeSinks{sinks.data(), 2, 2});
  merge_attention({x.data()}, {l0.data()}, 4, 2, plain.data(), plain_lse.data());
  for (int i = 0; i < 4; ++i) EXPECT_NEAR(out[std::size_t(i)], x[std::size_t(i)] / 4.0f, 1e-6);
  EXPECT_EQ(0, std::memcmp(&out[4], &plain[4], 4 * 4));  // -inf: no sink, no bit changed
  EXPECT_EQ(0, std::memcmp(lse.data(), plain_lse.data(), 4 * 4));  // the LSE stays the keys'
  // A sink far above every LSE: the output goes to 0 (its exp overflows), never NaN.
  const std::vector<float> huge = {3e38f, 3e38f};
  merge_attention({x.data()}, {l0.data()}, 4, 2, out.data(), nullptr, MergeSinks{huge.data(), 2, 2});
  for (float f : out) EXPECT_EQ(f, 0.0f);
}

TEST(Merge, TwoHalvesEqualTheWhole) {
  // Two rows of D = 4 over key sets with known LSEs: the merge is the
  // LSE-weighted mean of the parts.
  const std::vector<float> a = {1, 2, 3, 4, 0, 0, 0, 0}, b = {5, 6, 7, 8, 1, 1, 1, 1};
  const std::vector<float> la = {0.0f, -std::numeric_limits<float>::infinity()}, lb = {std::log(3.0f), 2.0f};
  std::vector<float> out(8), lse(2);
  merge_attention({a.data(), b.data()}, {la.data(), lb.data()}, 2, 4, out.data(), lse.data());
  for (int d = 0; d < 4; ++d) EXPECT_NEAR(out[std::size_t(d)], 0.25f * a[std::size_t(d)] + 0.75f * b[std::size_t(d)], 1e-6);
  for (int d = 4; d < 8; ++d) EXPECT_EQ(out[std::size_t(d)], 1.0f);
  EXPECT_NEAR(lse[0], std::log(4.0f), 1e-6);
  EXPECT_EQ(lse[1], 2.0f);
  EXPECT_THROW(merge_attention({a.data()}, {}, 2, 4, out.data(), nullptr), InvalidArgument);
}

TEST(Merge, InPlaceIntoTheFirstPartGivesTheSameBits) {
  // A running result merged into in place (out = outputs[0], out_lse =
  // lses[0]), on every path this build and CPU run, D with a vector tail.
  const std::int64_t rows = 37, D = 41;
  std::vector<float> a(static_cast<std::size_t>(rows * D)), b(a.size()), la(static_cast<std::size_t>(rows)),
      lb(la.size());
  for (std::size_t i = 0; i < a.size(); ++i) {
    a[i] = std::sin(0.37f * float(i));
    b[i] = std::cos(0.11f * float(i)) * 3.0f;
  }
  for (std::size_t r = 0; r < la.size(); ++r) {
    la[r] = r % 5 == 0 ? -std::numeric_limits<float>::infinity() : 0.3f * float(r);
    lb[r] = r % 7 == 0 ? -std::numeric_limits<float>::infinity() : 4.0f - 0.2f * float(r);
  }
  const bool was_auto = simd::isa_is_auto();
  const simd::Isa saved = simd::active_isa();
  for (const std::string& name : simd::available_isas(true)) {
    simd::set_active_isa(simd::isa_from_name(name));
    std::vector<float> out(a.size()), lse(la.size()), acc = a, acc_lse = la;
    merge_attention({a.data(), b.data()}, {la.data(), lb.data()}, rows, D, out.data(), lse.data());
    merge_attention({acc.data(), b.data()}, {acc_lse.data(), lb.data()}, rows, D, acc.data(), acc_lse.data());
    EXPECT_EQ(std::memcmp(out.data(), acc.data(), out.size() * sizeof(float)), 0) << name;
    EXPECT_EQ(std::memcmp(lse.data(), acc_lse.data(), lse.size() * sizeof(float)), 0) << name;
  }
  if (was_auto) {
    simd::set_isa_auto();
  } else {
    simd::set_active_isa(saved);
  }
}

}  // namespace
