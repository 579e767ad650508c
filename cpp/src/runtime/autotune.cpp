// The "auto" instruction-set choice: for one kernel family, the candidate
// paths are timed on a small call of that family (a few hundred microseconds
// each), in alternation, three rounds after a warm-up; the fastest best time
// wins. All paths compute the same bits, so only speed is at stake, and a
// wrong guess on a noisy machine costs speed, never a result. Measured
// rather than looked up by CPU model: the same instruction set pays on one
// CPU (full-width AVX-512 units) and not on another (Zen 4's double-pumped
// 512-bit operations), and a table cannot know the CPUs it has not met.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <limits>
#include <optional>
#include <string>
#include <vector>

#include "fattn/decode.hpp"
#include "fattn/prefill.hpp"
#include "fattn/sdpa.hpp"
#include "runtime/isa.hpp"

namespace fattn::simd::detail {
namespace {

// Deterministic, varied values (the speed of a kernel does not depend on
// them, but zeros could take shortcuts some day).
template <class T>
std::vector<T> filled(std::size_t n, float scale) {
  std::vector<T> v(n);
  std::uint32_t x = 12345;
  for (auto& e : v) {
    x = x * 1664525u + 1013904223u;
    const float f = (float((x >> 8) & 0xffff) / 32768.0f - 1.0f) * scale;
    if constexpr (std::is_same_v<T, float>)
      e = f;
    else if constexpr (std::is_same_v<T, float16>)
      e = float16{f32_to_f16(f)};
    else
      e = bfloat16{f32_to_bf16(f)};
  }
  return v;
}

// A prefill call of one shape (B = 1, D = 128) in one element type.
template <class T>
struct PrefillCall {
  DType dtype;
  std::int64_t heads, q_len, kv_len;
  std::vector<T> q, k, v, out;
  PrefillCall(DType dt, std::int64_t h, std::int64_t lq, std::int64_t lk)
      : dtype(dt), heads(h), q_len(lq), kv_len(lk), q(filled<T>(std::size_t(h * lq * 128), 1.0f)),
        k(filled<T>(std::size_t(h * lk * 128), 1.0f)), v(filled<T>(k.size(), 1.0f)), out(q.size()) {}
  void run() {
    flash_attn_prefill(contiguous_view(q.data(), dtype, {1, heads, q_len, 128}, false),
                       contiguous_view(k.data(), dtype, {1, heads, kv_len, 128}, false),
                       contiguous_view(v.data(), dtype, {1, heads, kv_len, 128}, false),
                       contiguous_view(out.data(), dtype, {1, heads, q_len, 128}, true), nullptr, nullptr, nullptr);
  }
};

// One call of the family on a small problem of its common kind: prefill bf16
// D = 128, 64 queries, 256 keys, 4 heads (the f32 class: the same in f32; the
// short class: 8 queries, 1024 keys, 8 heads); decode with an f16 cache,
// D = 128, 2048 positions, GQA 4:1; the naive SDPA f32 D = 64 (32 queries,
// 256 keys).
struct Workload {
  std::optional<PrefillCall<bfloat16>> prefill16;
  std::optional<PrefillCall<float>> prefill32;
  std::vector<float> dq, dout, sq, sk, sv, sout;
  std::vector<float16> dk, dv;
  explicit Workload(Family f) {
    if (f == Family::prefill_short) {
      prefill16.emplace(DType::bf16, 8, 8, 1024);
    } else if (f == Family::prefill) {
      prefill16.emplace(DType::bf16, 4, 64, 256);
    } else if (f == Family::prefill_f32) {
      prefill32.emplace(DType::f32, 4, 64, 256);
    } else if (f == Family::decode) {
      dq = filled<float>(8 * 128, 1.0f);
      dk = filled<float16>(2 * 2048 * 128, 1.0f);
      dv = filled<float16>(2 * 2048 * 128, 1.0f);
      dout.resize(dq.size());
    } else {
      sq = filled<float>(4 * 32 * 64, 1.0f);
      sk = filled<float>(4 * 256 * 64, 1.0f);
      sv = filled<float>(4 * 256 * 64, 1.0f);
      sout.resize(sq.size());
    }
  }
  void run(Family f) {
    if (prefill16) {
      prefill16->run();
    } else if (prefill32) {
      prefill32->run();
    } else if (f == Family::decode) {
      DecodeParams p;
      p.kv_seq_len = 2048;
      flash_attn_vec(contiguous_view(dq.data(), DType::f32, {1, 8, 1, 128}, false),
                     contiguous_view(dk.data(), DType::f16, {1, 2, 2048, 128}, false),
                     contiguous_view(dv.data(), DType::f16, {1, 2, 2048, 128}, false),
                     contiguous_view(dout.data(), DType::f32, {1, 8, 1, 128}, true), p);
    } else {
      SdpaParams p;
      p.causal = false;
      sdpa(contiguous_view(sq.data(), DType::f32, {1, 4, 32, 64}, false),
           contiguous_view(sk.data(), DType::f32, {1, 4, 256, 64}, false),
           contiguous_view(sv.data(), DType::f32, {1, 4, 256, 64}, false),
           contiguous_view(sout.data(), DType::f32, {1, 4, 32, 64}, true), p);
    }
  }
};

}  // namespace

Isa measure_fastest(Family f, const std::vector<Isa>& candidates, std::string& report) {
  using Clock = std::chrono::steady_clock;
  Workload work(f);
  std::vector<double> best(candidates.size(), std::numeric_limits<double>::infinity());
  for (int round = 0; round < 4; ++round)  // round 0 warms up (scratch, caches, the pool)
    for (std::size_t i = 0; i < candidates.size(); ++i) {
      const ForcedIsa forced(candidates[i]);
      const auto t0 = Clock::now();
      work.run(f);
      const double t = std::chrono::duration<double>(Clock::now() - t0).count();
      if (round > 0) best[i] = std::min(best[i], t);
    }
  const std::size_t win = std::size_t(std::min_element(best.begin(), best.end()) - best.begin());
  report = std::string(family_name(f)) + " " + isa_name(candidates[win]) + " (";
  for (std::size_t i = 0; i < candidates.size(); ++i) {
    char line[64];
    std::snprintf(line, sizeof line, "%s%s %.3f ms", i ? ", " : "", isa_name(candidates[i]).c_str(), best[i] * 1e3);
    report += line;
  }
  report += ")";
  return candidates[win];
}

}  // namespace fattn::simd::detail
