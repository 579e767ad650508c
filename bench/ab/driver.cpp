// Times one kernel case through the C++ API, for bench/ab.py (which builds
// this file against two revisions of the core and alternates them).
//   driver prefill <f32|bf16> <D> <L> <repeats>      B=1, H=16, non-causal
//                   (L may be Lq:Lk, e.g. 8:4096 for a short query block)
//   driver prefill-causal <f32|bf16> <D> <L> <repeats>   the same, causal
//   driver sdpa <f32|bf16> <D> <L> <repeats>     the naive SDPA, B=1, H=16, non-causal
//   driver decode  <f32|f16> <kv_len> <H_kv> <repeats>  H = 2 H_kv, D = 256 (H_kv:G: H = G H_kv)
//   driver decode-q <f16|q8_0|q4_0|tq4> <kv_len> <H> <repeats>  H = H_kv, D = 128
//                   (issue 20's quantized-cache shape; f16 is its baseline)
// Prints "median_ms <x>" (prefill also "min_ms") and, for decode, "paired_read <fraction>": each call
// is followed by a two-thread streaming read of the same K and V bytes, and
// the median of read time / call time is printed (robust to bandwidth that
// drifts between calls).
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "fattn/fattn.hpp"

namespace {

using Clock = std::chrono::steady_clock;
double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }
double median(std::vector<double> x) {
  std::sort(x.begin(), x.end());
  return x[x.size() / 2];
}

volatile std::uint64_t g_sink;
double read_seconds(const void* a, const void* b, std::size_t bytes) {  // a and b: `bytes` each
  auto part = [&](int half) {
    std::uint64_t acc = 0;
    for (const void* buf : {a, b}) {
      const auto* p = static_cast<const std::uint64_t*>(buf) + bytes / 16 * half;
      for (std::size_t i = 0; i < bytes / 16; i += 4) acc += p[i] ^ p[i + 1] ^ p[i + 2] ^ p[i + 3];
    }
    g_sink = g_sink + acc;
  };
  const auto t0 = Clock::now();
  std::thread other(part, 1);
  part(0);
  other.join();
  return seconds_since(t0);
}

// Times flash_attn_vec (the first call warms up), each call followed by a
// streaming read of the `bytes` of K and of V at kp and vp; prints the median
// time, GB/s of cache read and the median read time / call time.
void time_decode(const fattn::TensorView& q, const fattn::CacheView& k, const fattn::CacheView& v,
                 const fattn::TensorView& out, std::int64_t kv_len, int repeats, const void* kp, const void* vp,
                 std::size_t bytes) {
  fattn::DecodeParams params;
  params.kv_seq_len = kv_len;
  std::vector<double> times, ratios;
  for (int r = 0; r <= repeats; ++r) {
    const auto t0 = Clock::now();
    fattn::flash_attn_vec(q, k, v, out, params);
    const double t = seconds_since(t0);
    if (r == 0) continue;
    times.push_back(t);
    ratios.push_back(read_seconds(kp, vp, bytes) / t);
  }
  const double t = median(times);
  std::printf("median_ms %.4f\ngb_per_s %.2f\npaired_read %.3f\n", t * 1e3, 2.0 * double(bytes) / t / 1e9,
              median(ratios));
}

}  // namespace

int main(int argc, char** argv) {
  using namespace fattn;
  if (argc != 6) {
    std::fprintf(stderr, "usage: driver prefill[-causal] <f32|bf16> <D> <L> <repeats> | decode <f32|f16> <kv_len> <H_kv> <repeats> | decode-q <f16|q8_0|q4_0|tq4> <kv_len> <H> <repeats>\n");
    return 2;
  }
  const std::string kind = argv[1], dtype = argv[2];
  const std::int64_t a = std::atoll(argv[3]), b = std::atoll(argv[4]);
  const int repeats = std::atoi(argv[5]);
  std::mt19937 rng(1);
  std::normal_distribution<float> normal;
  std::vector<double> times;
  if (kind == "prefill" || kind == "prefill-causal" || kind == "sdpa") {
    const char* colon = std::strchr(argv[4], ':');
    const std::int64_t H = 16, D = a, Lq = b, L = colon ? std::atoll(colon + 1) : b, n = H * L * D;
    const bool bf16 = dtype == "bf16";
    std::vector<float> f(3 * n), out(n);
    for (auto& x : f) x = normal(rng);
    std::vector<std::uint16_t> h;
    void* base = f.data();
    if (bf16) {
      h.resize(f.size());
      for (std::size_t i = 0; i < f.size(); ++i) h[i] = f32_to_bf16(f[i]);
      base = h.data();
    }
    const std::size_t esize = bf16 ? 2 : 4;
    const DType dt = bf16 ? DType::bf16 : DType::f32;
    auto view = [&](int i) {
      return contiguous_view(static_cast<char*>(base) + i * n * esize, dt, {1, H, i == 0 ? Lq : L, D}, false);
    };
    std::vector<std::uint16_t> out16(bf16 ? n : 0);
    const TensorView ov = contiguous_view(bf16 ? static_cast<void*>(out16.data()) : out.data(), dt, {1, H, Lq, D}, true);
    PrefillParams params;
    params.causal = kind == "prefill-causal";
    SdpaParams sdpa_params;
    sdpa_params.causal = false;
    for (int r = 0; r <= repeats; ++r) {
      const auto t0 = Clock::now();
      if (kind == "sdpa")
        sdpa(view(0), view(1), view(2), ov, sdpa_params);
      else
        flash_attn_prefill(view(0), view(1), view(2), ov, nullptr, nullptr, nullptr, params);
      if (r > 0) times.push_back(seconds_since(t0));  // the first call warms up
    }
    const double t = median(times);
    // The fastest call too: on a shared host noise only ever adds time, so
    // for a compute-bound kernel the minimum is the steadier comparison.
    std::printf("median_ms %.3f\nmin_ms %.3f\ngflops %.1f\n", t * 1e3, *std::min_element(times.begin(), times.end()) * 1e3,
                4.0 * H * D * (params.causal ? double(L) * double(L + 1) / 2 : double(Lq) * double(L)) / t / 1e9);
  } else if (kind == "decode") {
    const char* colon = std::strchr(argv[4], ':');  // H_kv:G for a group of G query heads per KV head
    const std::int64_t kv_len = a, H_kv = b, H = (colon ? std::atoll(colon + 1) : 2) * H_kv, D = 256,
                       n = H_kv * kv_len * D;
    const bool f16 = dtype == "f16";
    std::vector<float> q(H * D), out(H * D), k(f16 ? 0 : n), v(f16 ? 0 : n);
    std::vector<std::uint16_t> k16(f16 ? n : 0), v16(f16 ? n : 0);
    for (auto& x : q) x = normal(rng);
    for (std::int64_t i = 0; i < n; ++i) {
      if (f16) {
        k16[i] = f32_to_f16(normal(rng));
        v16[i] = f32_to_f16(normal(rng));
      } else {
        k[i] = normal(rng);
        v[i] = normal(rng);
      }
    }
    const void* kp = f16 ? static_cast<const void*>(k16.data()) : k.data();
    const void* vp = f16 ? static_cast<const void*>(v16.data()) : v.data();
    const DType dt = f16 ? DType::f16 : DType::f32;
    const TensorView qv = contiguous_view(q.data(), DType::f32, {1, H, 1, D}, false);
    const TensorView kv = contiguous_view(const_cast<void*>(kp), dt, {1, H_kv, kv_len, D}, false);
    const TensorView vv = contiguous_view(const_cast<void*>(vp), dt, {1, H_kv, kv_len, D}, false);
    const TensorView ov = contiguous_view(out.data(), DType::f32, {1, H, 1, D}, true);
    time_decode(qv, kv, vv, ov, kv_len, repeats, kp, vp, std::size_t(n) * (f16 ? 2 : 4));
  } else if (kind == "decode-q") {
    const std::int64_t kv_len = a, H = b, D = 128, n = H * kv_len * D;
    const bool f16 = dtype == "f16";
    const QuantFormat format = dtype == "q4_0" ? QuantFormat::q4_0 : dtype == "tq4" ? QuantFormat::tq4 : QuantFormat::q8_0;
    std::vector<float> q(H * D), out(H * D), x(n);
    for (auto& e : q) e = normal(rng);
    const std::size_t row_bytes = f16 ? std::size_t(2 * D) : std::size_t(quant_row_bytes(format, D));
    const std::size_t bytes = row_bytes * std::size_t(H * kv_len);
    std::vector<std::uint8_t> kb(bytes), vb(bytes);
    for (std::uint8_t* buf : {kb.data(), vb.data()}) {
      for (auto& e : x) e = normal(rng);
      const TensorView xv = contiguous_view(x.data(), DType::f32, {1, H, kv_len, D}, false);
      if (f16) {
        auto* h = reinterpret_cast<std::uint16_t*>(buf);
        for (std::int64_t i = 0; i < n; ++i) h[i] = f32_to_f16(x[i]);
      } else {
        quantize_kv(xv, contiguous_quant_view(buf, format, {1, H, kv_len, D}, true));
      }
    }
    const TensorView qv = contiguous_view(q.data(), DType::f32, {1, H, 1, D}, false);
    const TensorView ov = contiguous_view(out.data(), DType::f32, {1, H, 1, D}, true);
    const CacheView kc = f16 ? CacheView(contiguous_view(kb.data(), DType::f16, {1, H, kv_len, D}, false))
                             : CacheView(contiguous_quant_view(kb.data(), format, {1, H, kv_len, D}, false));
    const CacheView vc = f16 ? CacheView(contiguous_view(vb.data(), DType::f16, {1, H, kv_len, D}, false))
                             : CacheView(contiguous_quant_view(vb.data(), format, {1, H, kv_len, D}, false));
    time_decode(qv, kc, vc, ov, kv_len, repeats, kb.data(), vb.data(), bytes);
  } else {
    std::fprintf(stderr, "unknown case kind '%s'\n", kind.c_str());
    return 2;
  }
  return 0;
}
