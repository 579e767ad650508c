// The prefill engine through its C++ API: against a float64 reference written
// here, bit-exact invariants (tile-skip map, broadcast masks, threads), and the
// seed's validation errors.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "expect_error.hpp"
#include "fattn/fattn.hpp"

using namespace fattn;

namespace {

constexpr float kInf = std::numeric_limits<float>::infinity();

struct Shape {
  std::int64_t B, H, H_kv, Lq, Lk, D;
};

// Stored values (as `dt`) plus their f32 meaning.
struct Tensor {
  DType dt;
  std::array<std::int64_t, 4> shape;
  std::vector<std::uint16_t> half;
  std::vector<float> f32;
  Tensor(DType d, std::array<std::int64_t, 4> s, std::mt19937& rng) : dt(d), shape(s) {
    const std::int64_t n = s[0] * s[1] * s[2] * s[3];
    std::normal_distribution<float> nd;
    f32.resize(std::size_t(n));
    for (auto& x : f32) x = nd(rng);
    if (dt != DType::f32) {
      half.resize(std::size_t(n));
      from_f32(dt, f32.data(), half.data(), n);
      to_f32(dt, half.data(), f32.data(), n);
    }
  }
  TensorView view(bool writable = false) {
    void* p = dt == DType::f32 ? static_cast<void*>(f32.data()) : static_cast<void*>(half.data());
    return contiguous_view(p, dt, shape, writable);
  }
  std::vector<float> values() const {
    if (dt == DType::f32) return f32;
    std::vector<float> out(half.size());
    to_f32(dt, half.data(), out.data(), std::int64_t(out.size()));
    return out;
  }
};

// Exact attention in double, top-left causal, with an additive [Lq, Lk] mask.
std::vector<double> exact(const Shape& s, const std::vector<float>& q, const std::vector<float>& k,
                          const std::vector<float>& v, const std::vector<float>* mask, bool causal) {
  std::vector<double> out(std::size_t(s.B * s.H * s.Lq * s.D), 0.0);
  const double scale = 1.0 / std::sqrt(double(float(s.D)));
  for (std::int64_t b = 0; b < s.B; ++b)
    for (std::int64_t h = 0; h < s.H; ++h)
      for (std::int64_t i = 0; i < s.Lq; ++i) {
        const std::int64_t kh = h / (s.H / s.H_kv);
        std::vector<double> w(std::size_t(s.Lk), -INFINITY);
        double mx = -INFINITY;
        for (std::int64_t j = 0; j < s.Lk; ++j) {
          if (causal && j > i) continue;
          double m = mask ? double((*mask)[std::size_t(i * s.Lk + j)]) : 0.0;
          if (m == -INFINITY) continue;
          double dot = 0;
          for (std::int64_t d = 0; d < s.D; ++d)
            dot += double(q[std::size_t(((b * s.H + h) * s.Lq + i) * s.D + d)]) *
                   double(k[std::size_t(((b * s.H_kv + kh) * s.Lk + j) * s.D + d)]);
          w[std::size_t(j)] = dot * scale + m;
          mx = std::max(mx, w[std::size_t(j)]);
        }
        if (mx == -INFINITY) continue;
        double sum = 0;
        for (auto& x : w) sum += (x = std::exp(x - mx));
        for (std::int64_t j = 0; j < s.Lk; ++j)
          for (std::int64_t d = 0; d < s.D; ++d)
            out[std::size_t(((b * s.H + h) * s.Lq + i) * s.D + d)] +=
                w[std::size_t(j)] / sum * double(v[std::size_t(((b * s.H_kv + kh) * s.Lk + j) * s.D + d)]);
      }
  return out;
}

struct Problem {
  Shape s;
  DType dt;
  std::mt19937 rng;
  Tensor q, k, v;
  std::vector<std::uint8_t> out_bytes;
  Problem(Shape sh, DType d, std::uint32_t seed)
      : s(sh), dt(d), rng(seed), q(d, {sh.B, sh.H, sh.Lq, sh.D}, rng), k(d, {sh.B, sh.H_kv, sh.Lk, sh.D}, rng),
        v(d, {sh.B, sh.H_kv, sh.Lk, sh.D}, rng), out_bytes(std::size_t(sh.B * sh.H * sh.Lq * sh.D * dtype_size(d))) {}
  TensorView out_view() { return contiguous_view(out_bytes.data(), dt, {s.B, s.H, s.Lq, s.D}, true); }
  std::vector<std::uint8_t> run(const MaskView* mask, const BlkView* blk, const PrefillParams& p,
                                std::vector<float>* lse = nullptr) {
    TensorView lse_view;
    if (lse) {
      lse->assign(std::size_t(s.B * s.H * s.Lq), 0.0f);
      lse_view = contiguous_view(lse->data(), DType::f32, {s.B, s.H, s.Lq, 1}, true);
    }
    flash_attn_prefill(q.view(), k.view(), v.view(), out_view(), mask, blk, lse ? &lse_view : nullptr, p);
    return out_bytes;
  }
  std::vector<float> output_values() const {
    std::vector<float> out(std::size_t(s.B * s.H * s.Lq * s.D));
    to_f32(dt, out_bytes.data(), out.data(), std::int64_t(out.size()));
    return out;
  }
};

MaskView rank2_mask(const std::vector<float>& m, const Shape& s) {
  MaskView mv;
  mv.data = m.data();
  mv.kind = MaskKind::additive;
  mv.dtype = DType::f32;
  mv.shape = {1, 1, s.Lq, s.Lk};
  mv.stride = {0, 0, s.Lk, 1};
  return mv;
}

std::vector<float> window_mask(const Shape& s, std::int64_t window) {
  std::vector<float> m(std::size_t(s.Lq * s.Lk));
  for (std::int64_t i = 0; i < s.Lq; ++i)
    for (std::int64_t j = 0; j < s.Lk; ++j)
      m[std::size_t(i * s.Lk + j)] = (j <= i && j > i - window) ? 0.0f : -kInf;
  return m;
}

class PrefillAgainstFloat64 : public ::testing::TestWithParam<std::tuple<DType, PrefillKernel, bool>> {};

TEST_P(PrefillAgainstFloat64, MaskedAndCausal) {
  const auto [dt, kernel, causal] = GetParam();
  const Shape s{2, 4, 2, 37, 75, kernel == PrefillKernel::llamacpp ? 512 : 64};
  Problem pb(s, dt, 11);
  std::vector<float> mask = window_mask(s, 50);
  for (std::size_t i = 0; i < mask.size(); i += 7)
    if (mask[i] == 0.0f) mask[i] = 0.25f;  // some finite biases too
  const MaskView mv = rank2_mask(mask, s);
  PrefillParams p;
  p.kernel = kernel;
  p.causal = causal;
  pb.run(&mv, nullptr, p);
  const auto got = pb.output_values();
  const auto want = exact(s, pb.q.values(), pb.k.values(), pb.v.values(), &mask, causal);
  // Output error: the candle kernel's Q-scale rounding in the I/O type moves
  // each score by up to 2u_T * sum|q k| * scale; through the softmax that is
  // at most exp(2E)-1 of max|V| (docs/numerics.md). For these N(0,1) inputs
  // E is below 0.12 (bf16), 0.015 (f16), 1e-5 (f32 / llamacpp).
  const double e = kernel == PrefillKernel::llamacpp || dt == DType::f32 ? 1e-5 : dt == DType::f16 ? 0.015 : 0.12;
  // Plus the store's rounding to the I/O type (half an ulp, relative u_T).
  const double u_t = dt == DType::bf16 ? 0x1p-8 : dt == DType::f16 ? 0x1p-11 : 0x1p-24;
  for (std::size_t i = 0; i < got.size(); ++i) {
    const double tol = 5.0 * (std::expm1(2 * e) + 1e-5) + u_t * std::fabs(want[i]);
    ASSERT_NEAR(got[i], want[i], tol) << "element " << i;
  }
}

INSTANTIATE_TEST_SUITE_P(Kernels, PrefillAgainstFloat64,
                         ::testing::Combine(::testing::Values(DType::f32, DType::f16, DType::bf16),
                                            ::testing::Values(PrefillKernel::candle, PrefillKernel::llamacpp),
                                            ::testing::Bool()),
                         [](const auto& info) {
                           return dtype_name(std::get<0>(info.param)) +
                                  (std::get<1>(info.param) == PrefillKernel::llamacpp ? "_llamacpp" : "_candle") +
                                  (std::get<2>(info.param) ? "_causal" : "_full");
                         });

TEST(Prefill, TileSkipMapNeverChangesABit) {
  for (PrefillKernel kernel : {PrefillKernel::candle, PrefillKernel::llamacpp}) {
    const Shape s{1, 2, 1, 70, 300, kernel == PrefillKernel::llamacpp ? 512 : 256};
    Problem pb(s, DType::bf16, 3);
    const std::vector<float> mask = window_mask(s, 33);
    const MaskView mv = rank2_mask(mask, s);
    PrefillParams p;
    p.kernel = kernel;
    const PrefillGeometry g = prefill_geometry(kernel, s.D);
    const std::int64_t rows = (s.Lq + g.q_tile - 1) / g.q_tile, cols = (s.Lk + g.k_tile - 1) / g.k_tile;
    std::vector<std::uint8_t> blk(std::size_t(rows * cols));
    flash_attn_prefill_blk(mv, kernel, g, blk.data(), rows, cols);
    EXPECT_GT(std::count(blk.begin(), blk.end(), 0), 0);
    const BlkView bv{blk.data(), rows, cols};
    std::vector<float> lse_a, lse_b;
    const auto a = pb.run(&mv, nullptr, p, &lse_a);
    const auto b = pb.run(&mv, &bv, p, &lse_b);
    EXPECT_EQ(a, b);
    EXPECT_EQ(0, std::memcmp(lse_a.data(), lse_b.data(), lse_a.size() * 4));
  }
}

TEST(Prefill, Rank2MaskEqualsItsRank4Expansion) {
  const Shape s{2, 2, 2, 20, 33, 64};
  Problem pb(s, DType::f16, 5);
  std::vector<float> mask = window_mask(s, 9);
  std::vector<float> expanded;
  for (int r = 0; r < 4; ++r) expanded.insert(expanded.end(), mask.begin(), mask.end());
  MaskView m4 = rank2_mask(expanded, s);
  m4.shape = {2, 2, s.Lq, s.Lk};
  m4.stride = {2 * s.Lq * s.Lk, s.Lq * s.Lk, s.Lk, 1};
  const MaskView m2 = rank2_mask(mask, s);
  EXPECT_EQ(pb.run(&m2, nullptr, {}), pb.run(&m4, nullptr, {}));
}

TEST(Prefill, FullyMaskedRowIsZeroWithLseMinusInf) {
  const Shape s{1, 1, 1, 4, 20, 64};
  Problem pb(s, DType::bf16, 9);
  std::vector<float> mask(std::size_t(s.Lq * s.Lk), 0.0f);
  for (std::int64_t j = 0; j < s.Lk; ++j) mask[std::size_t(2 * s.Lk + j)] = -kInf;
  const MaskView mv = rank2_mask(mask, s);
  std::vector<float> lse;
  pb.run(&mv, nullptr, {}, &lse);
  const auto out = pb.output_values();
  for (std::int64_t d = 0; d < s.D; ++d) EXPECT_EQ(out[std::size_t(2 * s.D + d)], 0.0f);
  EXPECT_EQ(lse[2], -kInf);
  for (float x : out) EXPECT_FALSE(std::isnan(x));
}

TEST(Prefill, ThreadCountDoesNotChangeBits) {
  const int saved = get_num_threads();
  const Shape s{1, 3, 1, 65, 50, 80};
  Problem pb(s, DType::f32, 2);
  PrefillParams p;
  p.causal = true;
  set_num_threads(1);
  const auto one = pb.run(nullptr, nullptr, p);
  set_num_threads(3);
  EXPECT_EQ(one, pb.run(nullptr, nullptr, p));
  set_num_threads(saved);
}

TEST(PrefillGeometry, SeedPresets) {
  EXPECT_EQ(prefill_geometry(PrefillKernel::candle, 64).k_tile, 16);
  EXPECT_EQ(prefill_geometry(PrefillKernel::candle, 256).q_tile, 32);
  EXPECT_EQ(prefill_geometry(PrefillKernel::candle, 512).k_tile, 8);
  EXPECT_EQ(prefill_geometry(PrefillKernel::llamacpp, 512).k_tile, 64);
  EXPECT_EQ(prefill_geometry(PrefillKernel::llamacpp, 512).q_tile, 8);
  EXPECT_THROW(prefill_geometry(PrefillKernel::candle, 64, {}, 12), InvalidArgument);
}

// --- the seed's validation errors ----------------------------------------------

TEST(PrefillErrors, SeedValidationList) {
  const Shape s{1, 4, 2, 3, 5, 64};
  Problem pb(s, DType::bf16, 1);
  auto call = [&](TensorView q, TensorView k, TensorView v, const MaskView* m, const BlkView* b, PrefillParams p) {
    flash_attn_prefill(q, k, v, pb.out_view(), m, b, nullptr, p);
  };
  TensorView q = pb.q.view(), k = pb.k.view(), v = pb.v.view();
  TensorView zero = q;
  zero.shape[2] = 0;
  expect_error<InvalidArgument>([&] { call(zero, k, v, nullptr, nullptr, {}); }, "q: every extent must be > 0");
  TensorView k3 = k;
  k3.shape[1] = 3;
  expect_error<InvalidArgument>([&] { call(q, k3, k3, nullptr, nullptr, {}); }, "must be divisible");
  PrefillParams llama;
  llama.kernel = PrefillKernel::llamacpp;
  expect_error<InvalidArgument>([&] { call(q, k, v, nullptr, nullptr, llama); },
                                "head dim D must be 512 for kernel='llamacpp'");
  TensorView kf = k;
  kf.dtype = DType::f16;
  expect_error<InvalidDType>([&] { call(q, kf, v, nullptr, nullptr, {}); }, "k: dtype must match q");
  PrefillParams bad_nsg;
  bad_nsg.nsg = 2;
  expect_error<InvalidArgument>([&] { call(q, k, v, nullptr, nullptr, bad_nsg); }, "nsg: must be 4 or 8");
  std::vector<float> mask(std::size_t(3 * 6), 0.0f);
  MaskView wrong = rank2_mask(mask, Shape{1, 1, 1, 3, 6, 64});
  expect_error<InvalidArgument>([&] { call(q, k, v, &wrong, nullptr, {}); }, "mask: extent Lk must be 5");
  std::vector<std::uint8_t> blk(4, 1);
  BlkView bv{blk.data(), 2, 2};
  expect_error<InvalidArgument>([&] { call(q, k, v, nullptr, &bv, {}); }, "blk: a tile-skip map needs the mask");
  std::vector<float> good(std::size_t(3 * 5), 0.0f);
  const MaskView mv = rank2_mask(good, s);
  expect_error<InvalidArgument>([&] { call(q, k, v, &mv, &bv, {}); }, "blk: shape must be [ceil(Lq/32), ceil(Lk/16)]");
  blk[0] = 7;
  BlkView bad{blk.data(), 1, 1};
  expect_error<InvalidArgument>([&] { call(q, k, v, &mv, &bad, {}); }, "blk: entries must be 0, 1 or 2");
}

// Issue 19's variants through the C++ API: a window with q_offset is the
// same window as a mask (tiles skipped, no bit changed), q_offset chunks are
// the one-shot call, the sink changes the output but not the LSE, and the
// variants' bad values throw naming the parameter.
TEST(PrefillVariants, WindowWithOffsetEqualsTheWindowAsAMask) {
  const Shape s{1, 2, 1, 40, 70, 64};
  Problem pb(s, DType::f16, 21);
  std::vector<float> mask(std::size_t(s.Lq * s.Lk));
  const std::int64_t offset = 30, window = 9;
  for (std::int64_t i = 0; i < s.Lq; ++i)
    for (std::int64_t j = 0; j < s.Lk; ++j)
      mask[std::size_t(i * s.Lk + j)] = (j <= i + offset && j > i + offset - window) ? 0.0f : -kInf;
  const MaskView mv = rank2_mask(mask, s);
  PrefillParams windowed;
  windowed.window = window;
  windowed.q_offset = offset;
  EXPECT_EQ(pb.run(&mv, nullptr, {}), pb.run(nullptr, nullptr, windowed));
}

TEST(PrefillVariants, ChunksWithOffsetEqualTheOneShotCall) {
  const Shape s{1, 2, 2, 50, 50, 64};
  Problem whole(s, DType::bf16, 22);
  PrefillParams p;
  p.causal = true;
  p.softcap = 5.0f;
  p.sinks = {0.5f, -1.0f};
  p.window = 20;
  const auto want = whole.run(nullptr, nullptr, p);
  const std::int64_t split = 19, row_bytes = s.D * 2;
  // The second chunk: rows 19..49 against keys 0..49, at offset 19.
  Shape tail = s;
  tail.Lq = s.Lq - split;
  Problem part(tail, DType::bf16, 22);
  part.k = whole.k;
  part.v = whole.v;
  for (std::int64_t h = 0; h < s.H; ++h)
    std::copy_n(whole.q.half.begin() + (h * s.Lq + split) * s.D, tail.Lq * s.D, part.q.half.begin() + h * tail.Lq * s.D);
  p.q_offset = split;
  const auto got = part.run(nullptr, nullptr, p);
  for (std::int64_t h = 0; h < s.H; ++h)
    EXPECT_TRUE(std::equal(got.begin() + h * tail.Lq * row_bytes, got.begin() + (h + 1) * tail.Lq * row_bytes,
                           want.begin() + (h * s.Lq + split) * row_bytes))
        << "head " << h;
}

TEST(PrefillVariants, SinksChangeTheOutputButNotTheLse) {
  const Shape s{1, 2, 1, 20, 33, 64};
  Problem pb(s, DType::f32, 23);
  std::vector<float> plain_lse, sunk_lse;
  PrefillParams p;
  const auto plain = pb.run(nullptr, nullptr, p, &plain_lse);
  p.sinks = {1.0f, -kInf};
  const auto sunk = pb.run(nullptr, nullptr, p, &sunk_lse);
  EXPECT_EQ(plain_lse, sunk_lse);
  const std::size_t head = std::size_t(s.Lq * s.D * 4);
  EXPECT_FALSE(std::equal(plain.begin(), plain.begin() + head, sunk.begin()));
  EXPECT_TRUE(std::equal(plain.begin() + head, plain.end(), sunk.begin() + head));  // -inf: no sink
}

TEST(PrefillErrors, VariantValues) {
  const Shape s{1, 2, 1, 3, 5, 64};
  Problem pb(s, DType::f32, 24);
  auto call = [&](PrefillParams p) { pb.run(nullptr, nullptr, p); };
  PrefillParams p;
  p.window = 0;
  expect_error<InvalidArgument>([&] { call(p); }, "window: must be an int >= 1");
  p = {};
  p.q_offset = -2;
  expect_error<InvalidArgument>([&] { call(p); }, "q_offset: must be an int from 0 to 2^30");
  p = {};
  p.q_offset = 1;
  p.causal = true;
  p.causal_align = CausalAlign::bottom_right;
  expect_error<InvalidArgument>([&] { call(p); }, "q_offset: cannot be combined with causal='bottom_right'");
  p = {};
  p.softcap = -1.0f;
  expect_error<InvalidArgument>([&] { call(p); }, "softcap: must be finite and >= 0");
  p.softcap = NAN;
  expect_error<InvalidArgument>([&] { call(p); }, "softcap: must be finite and >= 0");
  p = {};
  p.sinks = {0.0f};
  expect_error<InvalidArgument>([&] { call(p); }, "sinks: expected one per query head (length H = 2), got length 1");
  p.sinks = {0.0f, NAN};
  expect_error<InvalidArgument>([&] { call(p); }, "sinks: must be finite or -inf (no sink)");
  p.sinks = {kInf, 0.0f};
  expect_error<InvalidArgument>([&] { call(p); }, "sinks: must be finite or -inf (no sink)");
  p.sinks = {3e38f, 0.0f};
  expect_error<InvalidArgument>([&] { call(p); }, "overflows float32 in log2 units");
}

}  // namespace
