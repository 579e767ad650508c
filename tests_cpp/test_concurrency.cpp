// Kernels called from several threads at once, while another thread changes
// the thread count: every result must equal, bit for bit, the one computed
// alone on one thread. Built with ThreadSanitizer by `make test-tsan`.
#include <gtest/gtest.h>

#include <atomic>
#include <cstring>
#include <random>
#include <thread>
#include <vector>

#include "fattn/fattn.hpp"

using namespace fattn;

namespace {

std::vector<float> random_values(std::size_t n, unsigned seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> nd;
  std::vector<float> x(n);
  for (auto& v : x) v = nd(rng);
  return x;
}

// Inputs shared read-only by every caller; each call writes its own output.
struct Inputs {
  static constexpr std::int64_t B = 1, H = 4, Hkv = 2, Lq = 37, Lk = 45, D = 64, Cap = 96;
  std::vector<float> q = random_values(std::size_t(B * H * Lq * D), 1);
  std::vector<float> k = random_values(std::size_t(B * Hkv * Lk * D), 2);
  std::vector<float> v = random_values(std::size_t(B * Hkv * Lk * D), 3);
  std::vector<float> q1 = random_values(std::size_t(B * H * D), 4);
  std::vector<float> kc = random_values(std::size_t(B * Hkv * Cap * D), 5);
  std::vector<float> vc = random_values(std::size_t(B * Hkv * Cap * D), 6);

  std::vector<float> run_sdpa() const {
    std::vector<float> out(q.size());
    SdpaParams p;
    p.kv_seq_len = 40;
    sdpa(contiguous_view(const_cast<float*>(q.data()), DType::f32, {B, H, Lq, D}, false),
         contiguous_view(const_cast<float*>(k.data()), DType::f32, {B, Hkv, Lk, D}, false),
         contiguous_view(const_cast<float*>(v.data()), DType::f32, {B, Hkv, Lk, D}, false),
         contiguous_view(out.data(), DType::f32, {B, H, Lq, D}, true), p);
    return out;
  }
  std::vector<float> run_prefill() const {
    std::vector<float> out(q.size() + std::size_t(B * H * Lq));  // output, then the LSE
    PrefillParams p;
    p.causal = true;
    const TensorView lse = contiguous_view(out.data() + q.size(), DType::f32, {B, H, Lq, 1}, true);
    flash_attn_prefill(contiguous_view(const_cast<float*>(q.data()), DType::f32, {B, H, Lq, D}, false),
                       contiguous_view(const_cast<float*>(k.data()), DType::f32, {B, Hkv, Lk, D}, false),
                       contiguous_view(const_cast<float*>(v.data()), DType::f32, {B, Hkv, Lk, D}, false),
                       contiguous_view(out.data(), DType::f32, {B, H, Lq, D}, true), nullptr, nullptr, &lse, p);
    return out;
  }
  std::vector<float> run_decode() const {
    std::vector<float> out(q1.size());
    DecodeParams p;
    p.kv_seq_len = 90;
    p.nwg = 4;
    flash_attn_vec(contiguous_view(const_cast<float*>(q1.data()), DType::f32, {B, H, 1, D}, false),
                   contiguous_view(const_cast<float*>(kc.data()), DType::f32, {B, Hkv, Cap, D}, false),
                   contiguous_view(const_cast<float*>(vc.data()), DType::f32, {B, Hkv, Cap, D}, false),
                   contiguous_view(out.data(), DType::f32, {B, H, 1, D}, true), p);
    return out;
  }
};

bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

struct RestoreThreads {
  int saved = get_num_threads();
  ~RestoreThreads() { set_num_threads(saved); }
};

}  // namespace

TEST(Concurrency, KernelsFromSeveralThreadsWhileTheThreadCountChanges) {
  RestoreThreads restore;
  const Inputs in;
  set_num_threads(1);
  const auto sdpa_ref = in.run_sdpa(), prefill_ref = in.run_prefill(), decode_ref = in.run_decode();
  set_num_threads(3);

  std::atomic<bool> stop{false};
  std::atomic<int> mismatches{0}, calls{0};
  std::vector<std::thread> callers;
  for (int t = 0; t < 3; ++t)
    callers.emplace_back([&, t] {
      for (int i = 0; i < 4; ++i)
        for (int kind = 0; kind < 3; ++kind) {
          const int which = (kind + t) % 3;
          const bool ok = which == 0   ? same_bits(in.run_sdpa(), sdpa_ref)
                          : which == 1 ? same_bits(in.run_prefill(), prefill_ref)
                                       : same_bits(in.run_decode(), decode_ref);
          if (!ok) ++mismatches;
          ++calls;
        }
    });
  std::thread changer([&] {
    for (int i = 0; !stop.load(); ++i) {
      set_num_threads(1 + i % 4);
      std::this_thread::yield();
    }
  });
  for (auto& c : callers) c.join();
  stop = true;
  changer.join();
  EXPECT_EQ(calls.load(), 3 * 4 * 3);
  EXPECT_EQ(mismatches.load(), 0);
}

TEST(Concurrency, KernelCalledFromInsideAParallelBody) {
  RestoreThreads restore;
  const Inputs in;
  set_num_threads(1);
  const auto ref = in.run_sdpa();
  set_num_threads(2);
  std::atomic<int> mismatches{0};
  parallel_for(4, 1, [&](std::int64_t b, std::int64_t e) {
    for (std::int64_t i = b; i < e; ++i)
      if (!same_bits(in.run_sdpa(), ref)) ++mismatches;
  });
  EXPECT_EQ(mismatches.load(), 0);
}

TEST(Concurrency, SetNumThreadsInsideABodyThrowsAndChangesNothing) {
  RestoreThreads restore;
  for (int threads : {1, 2, 3}) {
    set_num_threads(threads);
    std::atomic<int> thrown{0};
    parallel_for(6, 1, [&](std::int64_t b, std::int64_t e) {
      for (std::int64_t i = b; i < e; ++i) {
        try {
          set_num_threads(1);
        } catch (const InvalidArgument& err) {
          if (std::string(err.what()).find("inside a parallel_for body") != std::string::npos) ++thrown;
        }
      }
    });
    EXPECT_EQ(thrown.load(), 6);
    EXPECT_EQ(get_num_threads(), threads);
  }
  set_num_threads(2);  // outside any body it works again
  EXPECT_EQ(get_num_threads(), 2);
}
