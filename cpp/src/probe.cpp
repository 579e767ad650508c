#include "fattn/probe.hpp"

#include <atomic>
#include <chrono>
#include <cstdint>
#include <thread>
#include <vector>

#include "fattn/error.hpp"
#include "runtime/cpu_features.hpp"
#include "runtime/isa.hpp"

#if FATTN_SIMD_X86
#include <immintrin.h>

#include "simd/target.hpp"
#endif

namespace fattn {
namespace {

using Clock = std::chrono::steady_clock;

// Runs work(thread_index) on `threads` threads at once; returns seconds.
template <class F>
double run_threads(int threads, F work) {
  std::vector<std::thread> pool;
  std::atomic<int> ready{0};
  std::atomic<bool> go{false};
  Clock::time_point start;
  for (int t = 0; t < threads; ++t)
    pool.emplace_back([&, t] {
      ready++;
      while (!go.load()) std::this_thread::yield();
      work(t);
    });
  while (ready.load() < threads) std::this_thread::yield();
  start = Clock::now();
  go = true;
  for (auto& th : pool) th.join();
  return std::chrono::duration<double>(Clock::now() - start).count();
}

#if FATTN_SIMD_X86
FATTN_TARGET_BEGIN("avx512f,avx512bf16")
// The lanes' sum (GCC 12's _mm512_reduce_add_ps trips -Wuninitialized in its own header).
float sum_lanes(__m512 x) {
  alignas(64) float lane[16];
  _mm512_store_ps(lane, x);
  float s = 0.0f;
  for (float v : lane) s += v;
  return s;
}

// 16 independent chains hide the FMA latency; returns a value so the loop stays.
float fma_loop(std::int64_t iterations) {
  __m512 acc[16];
  for (int i = 0; i < 16; ++i) acc[i] = _mm512_set1_ps(float(i));
  const __m512 a = _mm512_set1_ps(0.999999f), b = _mm512_set1_ps(1e-7f);
  for (std::int64_t it = 0; it < iterations; ++it)
#pragma GCC unroll 16
    for (int i = 0; i < 16; ++i) acc[i] = _mm512_fmadd_ps(acc[i], a, b);
  __m512 s = acc[0];
  for (int i = 1; i < 16; ++i) s = _mm512_add_ps(s, acc[i]);
  return sum_lanes(s);
}

float bf16_loop(std::int64_t iterations) {
  __m512 acc[16];
  for (int i = 0; i < 16; ++i) acc[i] = _mm512_setzero_ps();
  const __m512bh a = (__m512bh)_mm512_set1_epi16(0x3f80), b = (__m512bh)_mm512_set1_epi16(0x3380);
  for (std::int64_t it = 0; it < iterations; ++it)
#pragma GCC unroll 16
    for (int i = 0; i < 16; ++i) acc[i] = _mm512_dpbf16_ps(acc[i], a, b);
  __m512 s = acc[0];
  for (int i = 1; i < 16; ++i) s = _mm512_add_ps(s, acc[i]);
  return sum_lanes(s);
}

float read_loop(const float* p, std::int64_t n) {
  __m512 acc[4] = {_mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps()};
  for (std::int64_t i = 0; i + 64 <= n; i += 64)
    for (int u = 0; u < 4; ++u) acc[u] = _mm512_add_ps(acc[u], _mm512_loadu_ps(p + i + 16 * u));
  return sum_lanes(_mm512_add_ps(_mm512_add_ps(acc[0], acc[1]), _mm512_add_ps(acc[2], acc[3])));
}
FATTN_TARGET_END

FATTN_TARGET_BEGIN("avx2,fma")
// AVX2 machines (no AVX-512): 12 chains of 8 lanes cover two FMA ports of latency 4-5.
float fma_loop_avx2(std::int64_t iterations) {
  __m256 acc[12];
  for (int i = 0; i < 12; ++i) acc[i] = _mm256_set1_ps(float(i));
  const __m256 a = _mm256_set1_ps(0.999999f), b = _mm256_set1_ps(1e-7f);
  for (std::int64_t it = 0; it < iterations; ++it)
#pragma GCC unroll 12
    for (int i = 0; i < 12; ++i) acc[i] = _mm256_fmadd_ps(acc[i], a, b);
  __m256 s = acc[0];
  for (int i = 1; i < 12; ++i) s = _mm256_add_ps(s, acc[i]);
  alignas(32) float lanes[8];
  _mm256_store_ps(lanes, s);
  return lanes[0] + lanes[7];
}

float read_loop_avx2(const float* p, std::int64_t n) {
  __m256 acc[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()};
  for (std::int64_t i = 0; i + 32 <= n; i += 32)
    for (int u = 0; u < 4; ++u) acc[u] = _mm256_add_ps(acc[u], _mm256_loadu_ps(p + i + 8 * u));
  alignas(32) float lanes[8];
  _mm256_store_ps(lanes, _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3])));
  return lanes[0] + lanes[7];
}
FATTN_TARGET_END
#endif  // FATTN_SIMD_X86

float scalar_fma_loop(std::int64_t iterations) {
  float acc[8] = {0, 1, 2, 3, 4, 5, 6, 7};
  for (std::int64_t it = 0; it < iterations; ++it)
    for (auto& x : acc) x = x * 0.999999f + 1e-7f;
  return acc[0] + acc[7];
}

float scalar_read_loop(const float* p, std::int64_t n) {
  float s = 0;
  for (std::int64_t i = 0; i < n; i += 16) s += p[i];  // one touch per cache line
  return s;
}

volatile float sink;

// The widest read loop this CPU runs (the probe must not be slower than the kernels' loads).
float read_any(simd::Isa isa, const float* p, std::int64_t n) {
  switch (isa) {
#if FATTN_SIMD_X86
    case simd::Isa::avx512: return read_loop(p, n);
    case simd::Isa::avx2: return read_loop_avx2(p, n);
#endif
    default: return scalar_read_loop(p, n);
  }
}

// Scales the iteration count until one run takes about `seconds`.
template <class F>
double rate(int threads, double seconds, double flops_per_iteration, F loop) {
  std::int64_t iterations = 1 << 16;
  for (;;) {
    const double t = run_threads(threads, [&](int) { sink = loop(iterations); });
    if (t > seconds || iterations > (std::int64_t(1) << 40))
      return flops_per_iteration * double(iterations) * threads / t / 1e9;
    iterations *= 2;
  }
}

// The FMA rate of the widest loop this CPU runs.
double fma_rate(simd::Isa isa, int threads, double seconds) {
  switch (isa) {
#if FATTN_SIMD_X86
    case simd::Isa::avx512: return rate(threads, seconds, 16 * 16 * 2, fma_loop);
    case simd::Isa::avx2: return rate(threads, seconds, 12 * 8 * 2, fma_loop_avx2);
#endif
    default: return rate(threads, seconds, 16, scalar_fma_loop);
  }
}

}  // namespace

Peaks measure_peaks(int threads, double seconds) {
  require(threads >= 1 && threads <= 1024, "threads: must be from 1 to 1024, got ", threads);
  Peaks peaks;
  const simd::Isa isa = simd::best_isa();
  peaks.f32_fma_gflops = fma_rate(isa, threads, seconds);
#if FATTN_SIMD_X86
  if (isa == simd::Isa::avx512 && simd::cpu_features().avx512_bf16)
    peaks.bf16_dot_gflops = rate(threads, seconds, 16 * 32 * 2, bf16_loop);
#endif
  // 256 MiB per thread: far beyond any last-level cache here.
  const std::int64_t per_thread = std::int64_t(64) << 20;
  std::vector<float> buffer(std::size_t(per_thread * threads), 1.0f);
  double best = 0;
  for (int rep = 0; rep < 3; ++rep) {
    const double t = run_threads(threads, [&](int i) {
      const float* p = buffer.data() + std::int64_t(i) * per_thread;
      sink = read_any(isa, p, per_thread);
    });
    best = std::max(best, double(per_thread) * 4 * threads / t / 1e9);
  }
  peaks.read_gbytes = best;
  return peaks;
}

double time_read(const void* data, std::int64_t bytes, int threads) {
  require(threads >= 1 && threads <= 1024, "threads: must be from 1 to 1024, got ", threads);
  require(data != nullptr && bytes >= 0, "data: need a buffer");
  const simd::Isa isa = simd::best_isa();
  const std::int64_t floats = bytes / 4, share = (floats / threads) / 64 * 64;
  const auto* base = static_cast<const float*>(data);
  return run_threads(threads, [&](int i) {
    const float* p = base + std::int64_t(i) * share;
    const std::int64_t n = i + 1 == threads ? floats - std::int64_t(i) * share : share;
    sink = read_any(isa, p, n);
  });
}

}  // namespace fattn
