// Naive SDPA against an independent float64 implementation written here.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "fattn/fattn.hpp"

using namespace fattn;

namespace {

struct Case {
  std::int64_t B, H, H_kv, Lq, kv_len, capacity, D;
  bool causal;
  // Issue 19's options: off unless set.
  float softcap = 0.0f;
  std::int64_t window = 0;  // 0 = none
  bool sinks = false;       // sinks_for(H)
  bool top_left = false;
};

// One sink per query head around the scores' range; every third head none (-inf).
std::vector<float> sinks_for(std::int64_t heads) {
  std::vector<float> s(std::size_t(heads), 0.0f);
  for (std::int64_t h = 0; h < heads; ++h) s[std::size_t(h)] = h % 3 == 1 ? -INFINITY : 0.75f * float(h) - 1.0f;
  return s;
}

// Random values stored as `dt` (so the reference reads exactly what the
// kernel reads), and their widened f32 copies.
struct Buffer {
  DType dt;
  std::vector<std::uint16_t> half;
  std::vector<float> f32;
  std::vector<float> value;  // what the element means, as f32
  Buffer(DType d, std::int64_t n, std::mt19937& rng, float sd) : dt(d), value(std::size_t(n)) {
    std::normal_distribution<float> nd(0.0f, sd);
    for (auto& x : value) x = nd(rng);
    if (dt == DType::f32) {
      f32 = value;
    } else {
      half.resize(std::size_t(n));
      from_f32(dt, value.data(), half.data(), n);
      to_f32(dt, half.data(), value.data(), n);
    }
  }
  void* data() { return dt == DType::f32 ? static_cast<void*>(f32.data()) : static_cast<void*>(half.data()); }
  std::vector<float> read() const {
    if (dt == DType::f32) return f32;
    std::vector<float> out(half.size());
    to_f32(dt, half.data(), out.data(), std::int64_t(half.size()));
    return out;
  }
};

std::vector<double> reference(const Case& c, const std::vector<float>& q, const std::vector<float>& k,
                              const std::vector<float>& v, double scale) {
  std::vector<double> out(std::size_t(c.B * c.H * c.Lq * c.D), 0.0);
  const std::int64_t group = c.H / c.H_kv;
  for (std::int64_t b = 0; b < c.B; ++b)
    for (std::int64_t h = 0; h < c.H; ++h)
      for (std::int64_t i = 0; i < c.Lq; ++i) {
        const std::int64_t kh = h / group;
        // Keys [first, visible): causal up to the row's position, a window the last `window` of them.
        const std::int64_t pos = c.top_left ? i : c.kv_len - c.Lq + i;
        std::int64_t visible = c.kv_len, first = 0;
        if (c.causal) visible = std::max<std::int64_t>(0, std::min(c.kv_len, pos + 1));
        if (c.window) first = std::max<std::int64_t>(0, pos - c.window + 1);
        std::vector<double> s(static_cast<std::size_t>(c.kv_len), 0.0);
        double mx = -INFINITY;
        for (std::int64_t j = first; j < visible; ++j) {
          double dot = 0;
          for (std::int64_t d = 0; d < c.D; ++d)
            dot += double(q[std::size_t(((b * c.H + h) * c.Lq + i) * c.D + d)]) *
                   double(k[std::size_t(((b * c.H_kv + kh) * c.capacity + j) * c.D + d)]);
          double score = dot * scale;
          if (c.softcap > 0) score = double(c.softcap) * std::tanh(score / double(c.softcap));
          s[std::size_t(j)] = score;
          mx = std::max(mx, score);
        }
        const double sink = c.sinks ? double(sinks_for(c.H)[std::size_t(h)]) : -INFINITY;
        mx = std::max(mx, sink);
        double sum = sink == -INFINITY ? 0.0 : std::exp(sink - mx);
        for (std::int64_t j = first; j < visible; ++j) sum += (s[std::size_t(j)] = std::exp(s[std::size_t(j)] - mx));
        for (std::int64_t j = first; j < visible; ++j)
          for (std::int64_t d = 0; d < c.D; ++d)
            out[std::size_t(((b * c.H + h) * c.Lq + i) * c.D + d)] +=
                s[std::size_t(j)] / sum * double(v[std::size_t(((b * c.H_kv + kh) * c.capacity + j) * c.D + d)]);
      }
  return out;
}

double ulp_of(DType dt, double x) {  // spacing of dt's numbers at |x|
  const int mant = dt == DType::bf16 ? 7 : dt == DType::f16 ? 10 : 23;
  const int min_exp = dt == DType::f16 ? -14 : -126;
  int e;
  std::frexp(std::fabs(x), &e);
  return std::ldexp(1.0, std::max(e - 1, min_exp) - mant);
}

struct SdpaRun {
  Case c;
  DType dt;
  Buffer q, k, v;
  std::vector<std::uint8_t> out_bytes;
  SdpaRun(const Case& cs, DType d, std::uint32_t seed)
      : c(cs), dt(d), q(d, cs.B * cs.H * cs.Lq * cs.D, rng(seed), 1.0f),
        k(d, cs.B * cs.H_kv * cs.capacity * cs.D, rng(seed + 1), 1.0f),
        v(d, cs.B * cs.H_kv * cs.capacity * cs.D, rng(seed + 2), 1.0f),
        out_bytes(std::size_t(cs.B * cs.H * cs.Lq * cs.D * dtype_size(d))) {}
  static std::mt19937& rng(std::uint32_t seed) {
    static thread_local std::mt19937 g;
    g.seed(seed);
    return g;
  }
  std::vector<float> run(std::optional<float> scale = {}) {
    SdpaParams p;
    p.causal = c.causal;
    p.kv_seq_len = c.kv_len;
    p.scale = scale;
    p.softcap = c.softcap;
    if (c.window) p.window = c.window;
    if (c.sinks) p.sinks = sinks_for(c.H);
    if (c.top_left) p.causal_align = CausalAlign::top_left;
    sdpa(contiguous_view(q.data(), dt, {c.B, c.H, c.Lq, c.D}, false),
         contiguous_view(k.data(), dt, {c.B, c.H_kv, c.capacity, c.D}, false),
         contiguous_view(v.data(), dt, {c.B, c.H_kv, c.capacity, c.D}, false),
         contiguous_view(out_bytes.data(), dt, {c.B, c.H, c.Lq, c.D}, true), p);
    std::vector<float> out(std::size_t(c.B * c.H * c.Lq * c.D));
    to_f32(dt, out_bytes.data(), out.data(), std::int64_t(out.size()));
    return out;
  }
};

class SdpaMatchesFloat64 : public ::testing::TestWithParam<std::tuple<Case, DType>> {};

TEST_P(SdpaMatchesFloat64, WithinTheDtypeBound) {
  const auto [c, dt] = GetParam();
  SdpaRun r(c, dt, 1234);
  const std::vector<float> got = r.run();
  const std::vector<double> want =
      reference(c, r.q.read(), r.k.read(), r.v.read(), 1.0 / std::sqrt(double(float(c.D))));
  // f32: a few units of 2^-24 times the terms involved; bf16/f16: the final
  // rounding (half an ulp) plus the f32 error (docs/numerics.md).
  double worst = 0;
  for (std::size_t i = 0; i < got.size(); ++i) {
    const double err = std::fabs(double(got[i]) - want[i]);
    // A softcap moves the scores by up to 4 units of 2^-24 times the cap (fattn's tanh and its
    // roundings), the output by twice that times max|v| (< 6 for these samples).
    const double cap_term = 8.0 * std::ldexp(double(c.softcap), -24) * 6.0;
    const double tol = (dt == DType::f32 ? 2e-6 * (1.0 + std::fabs(want[i])) * std::sqrt(double(c.D))
                                         : 0.5 * ulp_of(dt, want[i]) + 4e-6) + cap_term;
    worst = std::max(worst, err / tol);
    ASSERT_LE(err, tol) << "element " << i << " got " << got[i] << " want " << want[i];
  }
  RecordProperty("worst_error_over_tolerance", std::to_string(worst));
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, SdpaMatchesFloat64,
    ::testing::Combine(::testing::Values(Case{1, 1, 1, 1, 1, 1, 8, true}, Case{1, 2, 1, 5, 9, 12, 16, true},
                                         Case{2, 4, 2, 7, 7, 7, 64, false}, Case{3, 8, 1, 3, 33, 40, 32, true},
                                         Case{1, 8, 8, 33, 100, 100, 128, true}, Case{1, 4, 1, 2, 50, 64, 512, false},
                                         Case{1, 2, 2, 10, 4, 6, 24, true},  // Lq > kv_len: first rows see nothing
                                         Case{2, 16, 2, 4, 17, 17, 256, true}),
                       ::testing::Values(DType::f32, DType::bf16, DType::f16)),
    [](const ::testing::TestParamInfo<std::tuple<Case, DType>>& info) {
      const Case& c = std::get<0>(info.param);
      return "B" + std::to_string(c.B) + "_H" + std::to_string(c.H) + "_Hkv" + std::to_string(c.H_kv) + "_Lq" +
             std::to_string(c.Lq) + "_kv" + std::to_string(c.kv_len) + "_cap" + std::to_string(c.capacity) + "_D" +
             std::to_string(c.D) + (c.causal ? "_causal_" : "_full_") + dtype_name(std::get<1>(info.param));
    });

// The same shapes with softcap, window and sinks, alone and together.
Case with(Case c, float softcap, std::int64_t window, bool sinks, bool top_left = false) {
  c.causal = c.causal || window != 0;
  c.softcap = softcap;
  c.window = window;
  c.sinks = sinks;
  c.top_left = top_left;
  return c;
}

INSTANTIATE_TEST_SUITE_P(
    Options, SdpaMatchesFloat64,
    ::testing::Combine(
        ::testing::Values(with(Case{2, 4, 2, 7, 7, 7, 64, false}, 2.0f, 0, false),
                          with(Case{1, 8, 2, 33, 100, 100, 128, true}, 0.0f, 1, false),
                          with(Case{1, 8, 2, 33, 100, 100, 128, true}, 0.0f, 9, false, true),
                          with(Case{1, 2, 2, 10, 4, 6, 24, true}, 0.0f, 3, false),  // rows before the first key
                          with(Case{1, 2, 2, 10, 4, 6, 24, true}, 0.0f, 3, true, true),  // rows past the last key
                          with(Case{3, 6, 1, 5, 33, 40, 32, false}, 0.0f, 0, true),
                          with(Case{1, 6, 3, 45, 45, 50, 40, true}, 1.5f, 20, true),
                          with(Case{1, 3, 1, 3, 50, 64, 512, true}, 30.0f, 1000, true, true)),
        ::testing::Values(DType::f32, DType::bf16, DType::f16)),
    [](const ::testing::TestParamInfo<std::tuple<Case, DType>>& info) {
      const Case& c = std::get<0>(info.param);
      return "H" + std::to_string(c.H) + "_Lq" + std::to_string(c.Lq) + "_kv" + std::to_string(c.kv_len) + "_D" +
             std::to_string(c.D) + (c.causal ? (c.top_left ? "_topleft" : "_causal") : "_full") + "_cap" +
             std::to_string(int(c.softcap * 10)) + "_w" + std::to_string(c.window) + (c.sinks ? "_sinks_" : "_") +
             dtype_name(std::get<1>(info.param));
    });

TEST(Sdpa, WindowOfOneIsTheValueAtTheRowPosition) {
  // Top-left, Lq > kv_len: rows 0..4 see their own key only, rows 5.. see none.
  Case c = with(Case{1, 2, 1, 8, 5, 5, 16, true}, 0.0f, 1, false, true);
  SdpaRun r(c, DType::bf16, 11);
  const auto out = r.run();
  const auto v = r.v.read();
  for (std::int64_t h = 0; h < 2; ++h)
    for (std::int64_t i = 0; i < 8; ++i)
      for (std::int64_t d = 0; d < 16; ++d)
        EXPECT_EQ(out[std::size_t((h * 8 + i) * 16 + d)], i < 5 ? v[std::size_t(i * 16 + d)] : 0.0f) << h << i << d;
}

TEST(Sdpa, NoSinkAndMinusInfinitySinksGiveTheSameBits) {
  Case c = with(Case{1, 4, 2, 9, 20, 20, 32, true}, 2.0f, 6, false);
  SdpaRun r(c, DType::f32, 3);
  const auto plain = r.run();
  SdpaParams p;
  p.kv_seq_len = c.kv_len;
  p.softcap = c.softcap;
  p.window = c.window;
  p.sinks.assign(4, -INFINITY);
  std::vector<float> out(plain.size());
  sdpa(contiguous_view(r.q.data(), DType::f32, {1, 4, 9, 32}, false),
       contiguous_view(r.k.data(), DType::f32, {1, 2, 20, 32}, false),
       contiguous_view(r.v.data(), DType::f32, {1, 2, 20, 32}, false),
       contiguous_view(out.data(), DType::f32, {1, 4, 9, 32}, true), p);
  EXPECT_EQ(0, std::memcmp(out.data(), plain.data(), out.size() * sizeof(float)));
}

TEST(Sdpa, WindowLongerThanEveryPositionIsNoWindow) {
  Case c{1, 2, 1, 6, 9, 9, 16, true};
  SdpaRun r(c, DType::f32, 4);
  const auto plain = r.run();
  for (std::int64_t w : {std::int64_t(9), std::int64_t(1) << 40, std::numeric_limits<std::int64_t>::max()}) {
    r.c.window = w;
    const auto windowed = r.run();
    EXPECT_EQ(0, std::memcmp(windowed.data(), plain.data(), plain.size() * sizeof(float))) << w;
  }
  r.c.window = 8;  // the last row (position 8) no longer sees key 0
  EXPECT_NE(0, std::memcmp(r.run().data(), plain.data(), plain.size() * sizeof(float)));
}

TEST(Sdpa, RowsThatSeeNoKeyAreZero) {
  Case c{1, 1, 1, 6, 3, 3, 8, true};  // rows 0..2 sit before the first key
  SdpaRun r(c, DType::f32, 7);
  const auto out = r.run();
  for (std::int64_t i = 0; i < 3 * 8; ++i) EXPECT_EQ(out[std::size_t(i)], 0.0f);
  for (std::int64_t i = 3 * 8; i < 6 * 8; ++i) EXPECT_NE(out[std::size_t(i)], 0.0f);
}

TEST(Sdpa, BitIdenticalForAnyThreadCount) {
  const int saved = get_num_threads();
  Case c{2, 4, 2, 37, 53, 60, 64, true};
  SdpaRun r(c, DType::bf16, 99);
  set_num_threads(1);
  const auto one = r.run();
  for (int t : {2, 3, 5}) {
    set_num_threads(t);
    const auto many = r.run();
    EXPECT_EQ(0, std::memcmp(one.data(), many.data(), one.size() * sizeof(float))) << t << " threads";
  }
  set_num_threads(saved);
}

TEST(Sdpa, SeqMajorViewGivesTheSameBits) {
  Case c{2, 3, 3, 5, 5, 5, 16, false};
  SdpaRun r(c, DType::f32, 5);
  const auto head_major = r.run();
  // The same tensors copied into [B, L, H, D] order.
  auto to_blhd = [](const std::vector<float>& x, std::int64_t B, std::int64_t H, std::int64_t L, std::int64_t D) {
    std::vector<float> y(x.size());
    for (std::int64_t b = 0; b < B; ++b)
      for (std::int64_t h = 0; h < H; ++h)
        for (std::int64_t l = 0; l < L; ++l)
          for (std::int64_t d = 0; d < D; ++d)
            y[std::size_t(((b * L + l) * H + h) * D + d)] = x[std::size_t(((b * H + h) * L + l) * D + d)];
    return y;
  };
  auto q = to_blhd(r.q.f32, 2, 3, 5, 16), k = to_blhd(r.k.f32, 2, 3, 5, 16), v = to_blhd(r.v.f32, 2, 3, 5, 16);
  std::vector<float> out(q.size());
  SdpaParams p;
  p.causal = false;
  sdpa(seq_major_view(q.data(), DType::f32, {2, 5, 3, 16}, false),
       seq_major_view(k.data(), DType::f32, {2, 5, 3, 16}, false),
       seq_major_view(v.data(), DType::f32, {2, 5, 3, 16}, false),
       seq_major_view(out.data(), DType::f32, {2, 5, 3, 16}, true), p);
  const auto expect = to_blhd(head_major, 2, 3, 5, 16);
  EXPECT_EQ(0, std::memcmp(out.data(), expect.data(), out.size() * sizeof(float)));
}

// --- argument errors: each names the argument --------------------------------

struct Args {
  std::vector<float> q, k, v, out;
  TensorView qv, kv, vv, ov;
  SdpaParams p;
  Args(std::array<std::int64_t, 4> qs, std::array<std::int64_t, 4> ks)
      : q(std::size_t(std::max<std::int64_t>(1, qs[0] * qs[1] * qs[2] * qs[3]))),
        k(std::size_t(std::max<std::int64_t>(1, ks[0] * ks[1] * ks[2] * ks[3]))), v(k.size()), out(q.size()) {
    qv = contiguous_view(q.data(), DType::f32, qs, false);
    kv = contiguous_view(k.data(), DType::f32, ks, false);
    vv = contiguous_view(v.data(), DType::f32, ks, false);
    ov = contiguous_view(out.data(), DType::f32, qs, true);
  }
  void call() { sdpa(qv, kv, vv, ov, p); }
};

template <class E>
void expect_error(Args& a, const std::string& fragment) {
  try {
    a.call();
    FAIL() << "expected an error mentioning '" << fragment << "'";
  } catch (const E& e) {
    EXPECT_NE(std::string(e.what()).find(fragment), std::string::npos) << e.what();
  }
}

TEST(SdpaErrors, ZeroSizes) {
  for (int axis = 0; axis < 4; ++axis) {
    std::array<std::int64_t, 4> qs{1, 2, 3, 8};
    qs[std::size_t(axis)] = 0;
    Args a(qs, {1, 2, 3, 8});
    expect_error<InvalidArgument>(a, "q: every extent must be > 0");
  }
  Args a({1, 2, 3, 8}, {1, 2, 0, 8});
  expect_error<InvalidArgument>(a, "k: every extent must be > 0");
}

TEST(SdpaErrors, HeadsNotDivisible) {
  Args a({1, 6, 3, 8}, {1, 4, 3, 8});
  expect_error<InvalidArgument>(a, "H (6) must be divisible by the number of K/V heads H_kv (4)");
}

TEST(SdpaErrors, MismatchedHeadDim) {
  Args a({1, 2, 3, 8}, {1, 2, 3, 16});
  expect_error<InvalidArgument>(a, "k: head dim D (q.shape[3]) must be 8, got 16");
}

TEST(SdpaErrors, MismatchedBatch) {
  Args a({2, 2, 3, 8}, {1, 2, 3, 8});
  expect_error<InvalidArgument>(a, "k: batch size B (q.shape[0]) must be 2, got 1");
}

TEST(SdpaErrors, DtypeMismatch) {
  Args a({1, 2, 3, 8}, {1, 2, 3, 8});
  a.kv.dtype = DType::bf16;
  expect_error<InvalidDType>(a, "k: dtype must match q (float32), got bfloat16");
  Args b({1, 2, 3, 8}, {1, 2, 3, 8});
  b.ov.dtype = DType::f16;
  expect_error<InvalidDType>(b, "out: dtype must match q");
}

TEST(SdpaErrors, KvSeqLenOutOfRange) {
  Args a({1, 2, 3, 8}, {1, 2, 5, 8});
  a.p.kv_seq_len = 6;
  expect_error<InvalidArgument>(a, "kv_seq_len: must be <= the K/V capacity (k.shape[2] = 5), got 6");
  a.p.kv_seq_len = 0;
  expect_error<InvalidArgument>(a, "kv_seq_len: must be >= 1, got 0");
}

TEST(SdpaErrors, VShapeOutShapeAndWritable) {
  Args a({1, 2, 3, 8}, {1, 2, 5, 8});
  a.vv.shape[2] = 4;
  expect_error<InvalidArgument>(a, "v: shape must equal k's");
  Args b({1, 2, 3, 8}, {1, 2, 5, 8});
  b.ov.writable = false;
  expect_error<InvalidArgument>(b, "out: must be writable");
  Args c({1, 2, 3, 8}, {1, 2, 5, 8});
  c.ov.shape[2] = 2;
  expect_error<InvalidArgument>(c, "out: shape must equal q's");
}

TEST(SdpaErrors, Softcap) {
  Args a({1, 2, 3, 8}, {1, 2, 5, 8});
  for (float bad : {-0.5f, std::nanf(""), INFINITY}) {
    a.p.softcap = bad;
    expect_error<InvalidArgument>(a, "softcap: must be finite and >= 0 (0 = off)");
  }
}

TEST(SdpaErrors, Window) {
  Args a({1, 2, 3, 8}, {1, 2, 5, 8});
  a.p.window = 0;
  expect_error<InvalidArgument>(a, "window: must be >= 1 (None = no window), got 0");
  a.p.window = 2;
  a.p.causal = false;
  expect_error<InvalidArgument>(a, "window: requires causal");
}

TEST(SdpaErrors, Sinks) {
  Args a({1, 2, 3, 8}, {1, 1, 5, 8});
  a.p.sinks = {0.0f};  // one per K/V head is not enough
  expect_error<InvalidArgument>(a, "sinks: expected one per query head (length H = 2), got length 1");
  a.p.sinks = {0.0f, std::nanf("")};
  expect_error<InvalidArgument>(a, "sinks: must be finite or -inf (no sink), got nan for head 1");
  a.p.sinks = {INFINITY, 0.0f};
  expect_error<InvalidArgument>(a, "got inf for head 0");
  a.p.sinks = {-INFINITY, 0.0f};  // -inf: no sink for head 0, valid
  EXPECT_NO_THROW(a.call());
}

TEST(SdpaErrors, NonFiniteScale) {
  Args a({1, 2, 3, 8}, {1, 2, 5, 8});
  a.p.scale = std::nanf("");
  expect_error<InvalidArgument>(a, "scale: must be finite");
}

}  // namespace
