// The pybind11 module fattn_probe: this machine's peaks for bench/run.py
// (not part of the fattn package; `make bench` builds it into build/probe).
#include <pybind11/pybind11.h>

#include <cstdint>

#include "probe.hpp"

namespace py = pybind11;
using namespace fattn_probe;

PYBIND11_MODULE(fattn_probe, m) {
  m.doc() = "Peak probes for fattn's benchmarks: f32 FMA rate, AVX512_BF16 dot rate, streaming read";

  m.def(
      "measure_peaks",
      [](int threads, double seconds) {
        Peaks p;
        {
          py::gil_scoped_release nogil;
          p = measure_peaks(threads, seconds);
        }
        py::dict d;
        d["f32_fma_gflops"] = p.f32_fma_gflops;
        d["bf16_dot_gflops"] = p.bf16_dot_gflops;
        d["read_gbytes"] = p.read_gbytes;
        return d;
      },
      py::arg("threads"), py::arg("seconds") = 0.3);
  m.def(
      "time_read",
      [](const py::buffer& data, int threads) {
        const py::buffer_info info = data.request();
        const bool contiguous = info.ndim == 0 || [&] {  // the probe reads one flat range
          std::int64_t expect = info.itemsize;
          for (auto i = info.ndim; i-- > 0;) {
            if (info.shape[i] > 1 && info.strides[i] != expect) return false;
            expect *= info.shape[i];
          }
          return true;
        }();
        if (!contiguous) throw py::value_error("data: must be a C-contiguous buffer");
        const std::int64_t bytes = info.size * info.itemsize;
        py::gil_scoped_release nogil;
        return time_read(info.ptr, bytes, threads);
      },
      py::arg("data"), py::arg("threads"));
}
