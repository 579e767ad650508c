#pragma once
// Small probes of this machine's attainable peaks, so benchmarks can report
// every figure as a fraction of what the hardware can do. A bench tool, not
// part of the library: built by `make bench` into the module fattn_probe.
#include <cstdint>

namespace fattn_probe {

struct Peaks {
  double f32_fma_gflops = 0;   // fused multiply-adds on the widest vectors, 2 flops each
  double bf16_dot_gflops = 0;  // AVX512_BF16 dot products (0 where the CPU has none)
  double read_gbytes = 0;      // streaming read bandwidth from a buffer far larger than the caches
};

// Runs each probe on `threads` threads for about `seconds` each.
Peaks measure_peaks(int threads, double seconds = 0.3);

// Seconds to stream-read `bytes` bytes at `data` (each of `threads` threads
// reads one contiguous share): the read-bandwidth probe on a caller's own
// buffers, so a memory-bound kernel can be timed against a read of exactly
// the bytes it reads, right next to it.
double time_read(const void* data, std::int64_t bytes, int threads);

}  // namespace fattn_probe
