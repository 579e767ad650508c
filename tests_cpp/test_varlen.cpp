// Packed variable-length prefill (issue 21) through the C++ API: every
// sequence of a varlen call is the prefill of that sequence alone, bit for
// bit (empty sequences, length 1, Lq > Lk, GQA, the variants, every path and
// thread count), and bad offsets throw naming the argument before anything
// is read.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "expect_error.hpp"
#include "fattn/fattn.hpp"
#include "runtime/isa.hpp"

using namespace fattn;

namespace {

constexpr float kInf = std::numeric_limits<float>::infinity();

// A packed [total, H, D] array of `dt` values (stored as bytes), seen as [1, H, total, D].
struct Packed {
  DType dt;
  std::int64_t total, heads, dim;
  std::vector<std::uint8_t> bytes;
  Packed(DType d, std::int64_t t, std::int64_t h, std::int64_t D, std::mt19937* rng)
      : dt(d), total(t), heads(h), dim(D), bytes(std::size_t(std::max<std::int64_t>(t * h * D, 1) * dtype_size(d))) {
    if (!rng) return;
    std::normal_distribution<float> nd;
    std::vector<float> x(std::size_t(t * h * D));
    for (auto& e : x) e = nd(*rng);
    from_f32(dt, x.data(), bytes.data(), std::int64_t(x.size()));
  }
  // Rows [row0, row0 + n) (all of them by default) as [1, H, n, D].
  TensorView view(bool writable = false, std::int64_t row0 = 0, std::int64_t n = -1) {
    TensorView t = seq_major_view(bytes.data() + row0 * heads * dim * dtype_size(dt), dt,
                                  {1, n < 0 ? total : n, heads, dim}, writable);
    return t;
  }
};

std::vector<std::int64_t> offsets(const std::vector<std::int64_t>& lengths) {
  std::vector<std::int64_t> cu{0};
  for (std::int64_t n : lengths) cu.push_back(cu.back() + n);
  return cu;
}

struct Case {
  std::vector<std::int64_t> lq, lk;
  std::int64_t heads, kv_heads, dim;
};

// The varlen call and, sequence by sequence, the lone prefill call (or, for
// a sequence without keys, zeros and LSE -inf): their output and LSE bytes.
struct Results {
  std::vector<std::uint8_t> out, lse;
};

Results run_varlen(const Case& c, Packed& q, Packed& k, Packed& v, const VarlenPrefillParams& p) {
  const auto cu_q = offsets(c.lq), cu_k = offsets(c.lk);
  Packed out(q.dt, q.total, c.heads, c.dim, nullptr);
  std::vector<float> lse(std::size_t(std::max<std::int64_t>(q.total * c.heads, 1)), 1.0f);
  TensorView lv = contiguous_view(lse.data(), DType::f32, {1, q.total, c.heads, 1}, true);
  std::swap(lv.shape[1], lv.shape[2]);
  std::swap(lv.stride[1], lv.stride[2]);
  if (q.total == 0) lv.shape = {1, c.heads, 0, 1};
  flash_attn_varlen(q.view(), k.view(), v.view(), out.view(true), cu_q.data(), std::int64_t(cu_q.size()),
                    cu_k.data(), std::int64_t(cu_k.size()), &lv, p);
  Results r{out.bytes, {}};
  r.lse.resize(lse.size() * 4);
  std::memcpy(r.lse.data(), lse.data(), r.lse.size());
  return r;
}

Results run_each(const Case& c, Packed& q, Packed& k, Packed& v, const VarlenPrefillParams& p) {
  const auto cu_q = offsets(c.lq), cu_k = offsets(c.lk);
  Packed out(q.dt, q.total, c.heads, c.dim, nullptr);
  std::fill(out.bytes.begin(), out.bytes.end(), 0);
  std::vector<float> lse(std::size_t(std::max<std::int64_t>(q.total * c.heads, 1)), 1.0f);
  for (std::size_t b = 0; b < c.lq.size(); ++b) {
    const std::int64_t lq = c.lq[b], lk = c.lk[b];
    for (std::int64_t i = 0; i < lq; ++i)
      for (std::int64_t h = 0; h < c.heads; ++h) lse[std::size_t((cu_q[b] + i) * c.heads + h)] = -kInf;
    if (lq == 0 || lk == 0) continue;
    TensorView lv = contiguous_view(&lse[std::size_t(cu_q[b] * c.heads)], DType::f32, {1, lq, c.heads, 1}, true);
    std::swap(lv.shape[1], lv.shape[2]);
    std::swap(lv.stride[1], lv.stride[2]);
    const PrefillParams& plain = p;  // the same fields, alignment included
    flash_attn_prefill(q.view(false, cu_q[b], lq), k.view(false, cu_k[b], lk), v.view(false, cu_k[b], lk),
                       out.view(true, cu_q[b], lq), nullptr, nullptr, &lv, plain);
  }
  Results r{out.bytes, {}};
  r.lse.resize(lse.size() * 4);
  std::memcpy(r.lse.data(), lse.data(), r.lse.size());
  return r;
}

std::vector<VarlenPrefillParams> variants(std::int64_t heads) {
  std::vector<VarlenPrefillParams> all(5);
  all[1].causal = true;
  all[2].causal = true;
  all[2].causal_align = CausalAlign::top_left;
  all[3].window = 13;  // implies causal, bottom-right
  all[4].causal = true;
  all[4].window = 21;
  all[4].softcap = 5.0f;
  for (std::int64_t h = 0; h < heads; ++h) all[4].sinks.push_back(0.5f * float(h) - 1.0f);
  return all;
}

const std::vector<Case> kCases = {
    {{5, 0, 40, 1, 70, 3, 33}, {9, 4, 40, 1, 20, 0, 100}, 4, 2, 64},  // empty both sides, Lq > Lk, length 1
    {{64, 31, 32}, {64, 31, 32}, 2, 2, 80},
    {{0}, {0}, 2, 1, 64},                                              // no rows at all
    {{}, {}, 2, 1, 64},                                                // no sequences
    {{9, 17}, {30, 2}, 2, 1, 512},                                     // the D = 512 geometry
};

}  // namespace

TEST(Varlen, EachSequenceEqualsItsOwnPrefillCall) {
  std::mt19937 rng(21);
  for (DType dt : {DType::f32, DType::f16, DType::bf16})
    for (const Case& c : kCases) {
      const auto cu_q = offsets(c.lq), cu_k = offsets(c.lk);
      Packed q(dt, cu_q.back(), c.heads, c.dim, &rng), k(dt, cu_k.back(), c.kv_heads, c.dim, &rng),
          v(dt, cu_k.back(), c.kv_heads, c.dim, &rng);
      for (const VarlenPrefillParams& base : variants(c.heads))
        for (PrefillKernel kernel : {PrefillKernel::candle, PrefillKernel::llamacpp}) {
          if (kernel == PrefillKernel::llamacpp && c.dim != 512) continue;
          VarlenPrefillParams p = base;
          p.kernel = kernel;
          const Results got = run_varlen(c, q, k, v, p), want = run_each(c, q, k, v, p);
          EXPECT_TRUE(got.out == want.out) << "dtype " << int(dt) << " D " << c.dim << " causal " << p.causal;
          EXPECT_TRUE(got.lse == want.lse) << "dtype " << int(dt) << " D " << c.dim << " causal " << p.causal;
        }
    }
}

TEST(Varlen, EveryPathAndThreadCountGivesTheScalarModelsBits) {
  struct Restore {
    simd::Isa isa = simd::active_isa();
    int threads = get_num_threads();
    ~Restore() {
      simd::set_active_isa(isa);
      set_num_threads(threads);
    }
  } restore;
  std::mt19937 rng(22);
  const Case& c = kCases[0];
  const auto cu_q = offsets(c.lq), cu_k = offsets(c.lk);
  for (DType dt : {DType::f32, DType::bf16}) {
    Packed q(dt, cu_q.back(), c.heads, c.dim, &rng), k(dt, cu_k.back(), c.kv_heads, c.dim, &rng),
        v(dt, cu_k.back(), c.kv_heads, c.dim, &rng);
    const VarlenPrefillParams p = variants(c.heads)[4];
    simd::set_active_isa(simd::Isa::scalar);
    set_num_threads(1);
    const Results want = run_each(c, q, k, v, p);
    for (const std::string& name : simd::available_isas(true))
      for (int threads : {1, 2, 3}) {
        simd::set_active_isa(simd::isa_from_name(name));
        set_num_threads(threads);
        const Results got = run_varlen(c, q, k, v, p);
        EXPECT_TRUE(got.out == want.out) << name << " threads " << threads;
        EXPECT_TRUE(got.lse == want.lse) << name << " threads " << threads;
      }
  }
}

TEST(Varlen, RowsThatSeeNoKeyAreZeroWithLseMinusInfinity) {
  std::mt19937 rng(23);
  const Case c{{6, 3}, {2, 0}, 2, 2, 64};  // bottom-right: rows 0-3 precede the first key; sequence 1 has none
  Packed q(DType::f32, 9, 2, 64, &rng), k(DType::f32, 2, 2, 64, &rng), v(DType::f32, 2, 2, 64, &rng);
  VarlenPrefillParams p;
  p.causal = true;
  p.sinks = {2.0f, -1.0f};
  const Results r = run_varlen(c, q, k, v, p);
  const auto* out = reinterpret_cast<const float*>(r.out.data());
  const auto* lse = reinterpret_cast<const float*>(r.lse.data());
  for (std::int64_t row : {0, 1, 2, 3, 6, 7, 8})
    for (std::int64_t h = 0; h < 2; ++h) {
      EXPECT_EQ(lse[row * 2 + h], -kInf) << row;
      for (std::int64_t d = 0; d < 64; ++d) EXPECT_EQ(out[(row * 2 + h) * 64 + d], 0.0f) << row;
    }
  EXPECT_TRUE(std::isfinite(lse[4 * 2]));
}

// --- bad calls --------------------------------------------------------------------

TEST(VarlenErrors, OffsetsAndShapesAreCheckedNamingTheArgument) {
  std::mt19937 rng(24);
  Packed q(DType::bf16, 5, 4, 64, &rng), k(DType::bf16, 7, 2, 64, &rng), v(DType::bf16, 7, 2, 64, &rng),
      out(DType::bf16, 5, 4, 64, nullptr);
  const std::vector<std::int64_t> cq{0, 2, 5}, ck{0, 3, 7};
  auto call = [&](std::vector<std::int64_t> a, std::vector<std::int64_t> b, VarlenPrefillParams p = {}) {
    flash_attn_varlen(q.view(), k.view(), v.view(), out.view(true), a.data(), std::int64_t(a.size()), b.data(),
                      std::int64_t(b.size()), nullptr, p);
  };
  call(cq, ck);  // the valid call
  expect_error<InvalidArgument>([&] { call({1, 2, 5}, ck); }, "cu_seqlens_q: must start at 0, got 1");
  expect_error<InvalidArgument>([&] { call(cq, {0, 4, 3, 7}); },
                                "cu_seqlens_k: must have as many entries as cu_seqlens_q (B + 1 = 3), got 4");
  expect_error<InvalidArgument>([&] { call(cq, {0, 8, 7}); }, "cu_seqlens_k: must be non-decreasing, got 8 then 7");
  expect_error<InvalidArgument>([&] { call({0, 2, 6}, ck); },
                                "cu_seqlens_q: the last entry must equal the packed rows (total_q = 5), got 6");
  expect_error<InvalidArgument>([&] { call(cq, {0, 3, 6}); },
                                "cu_seqlens_k: the last entry must equal the packed rows (total_k = 7), got 6");
  expect_error<InvalidArgument>([&] { call({}, {}); }, "cu_seqlens_q: must have B + 1 >= 1 entries, got 0");
  expect_error<InvalidArgument>(
      [&] {
        flash_attn_varlen(q.view(), k.view(), v.view(), out.view(true), nullptr, 3, ck.data(), 3, nullptr, {});
      },
      "cu_seqlens_q: data pointer is null");
  // Offsets near int64's end: the subtraction of neighbours must not overflow.
  const std::int64_t big = std::numeric_limits<std::int64_t>::max();
  expect_error<InvalidArgument>([&] { call({0, big, 5}, ck); }, "cu_seqlens_q: sequence 0 has");
  expect_error<InvalidArgument>([&] { call({0, -big, 5}, ck); }, "cu_seqlens_q: must be non-decreasing");
  VarlenPrefillParams offset;
  offset.q_offset = 3;
  expect_error<InvalidArgument>([&] { call(cq, ck, offset); }, "q_offset: must be 0 for a varlen call");
  VarlenPrefillParams window;
  window.window = 0;
  expect_error<InvalidArgument>([&] { call(cq, ck, window); }, "window: must be an int >= 1");
  TensorView batch2 = q.view();
  batch2.shape[0] = 2;
  batch2.stride[0] = 0;
  expect_error<InvalidArgument>(
      [&] {
        flash_attn_varlen(batch2, k.view(), v.view(), out.view(true), cq.data(), 3, ck.data(), 3, nullptr, {});
      },
      "q: packed sequences are read as [1, H, total_q, D] (a batch of 1), got B = 2");
  Packed v6(DType::bf16, 6, 2, 64, &rng);
  expect_error<InvalidArgument>(
      [&] { flash_attn_varlen(q.view(), k.view(), v6.view(), out.view(true), cq.data(), 3, ck.data(), 3, nullptr, {}); },
      "v: shape must equal k's (total_k, H_kv, D) = (7, 2, 64), got (6, 2, 64)");
  Packed kf(DType::f16, 7, 2, 64, &rng);
  expect_error<InvalidDType>(
      [&] { flash_attn_varlen(q.view(), kf.view(), kf.view(), out.view(true), cq.data(), 3, ck.data(), 3, nullptr, {}); },
      "k: dtype must match q");
  Packed short_out(DType::bf16, 4, 4, 64, nullptr);
  expect_error<InvalidArgument>(
      [&] {
        flash_attn_varlen(q.view(), k.view(), v.view(), short_out.view(true), cq.data(), 3, ck.data(), 3, nullptr, {});
      },
      "out: shape must equal q's [1, 4, 5, 64]");
  std::vector<std::uint16_t> lse_half(20);
  TensorView lse_view = contiguous_view(lse_half.data(), DType::f16, {1, 4, 5, 1}, true);
  expect_error<InvalidDType>(
      [&] {
        flash_attn_varlen(q.view(), k.view(), v.view(), out.view(true), cq.data(), 3, ck.data(), 3, &lse_view, {});
      },
      "lse: dtype must be float32");
}
