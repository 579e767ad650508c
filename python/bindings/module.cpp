// The pybind11 module fattn._core: arrays in, views out, GIL released around
// every kernel. Argument checks that need Python (types, ranks, layouts)
// live in python/fattn; the core checks everything else and its exceptions
// become ValueError (InvalidArgument) or TypeError (InvalidDType).
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstring>
#include <vector>

#include "dlpack.hpp"
#include "kernels.hpp"
#include "quant.hpp"
#include "fattn/fattn.hpp"
#include "runtime/isa.hpp"
#include "views.hpp"

namespace py = pybind11;
using namespace fattn;
using namespace fattn::bindings;

namespace {

// A contiguous f32 array's data, checked (merge_attention's parts, which
// Python has already converted to contiguous float32).
const float* f32_data(const py::array& a, const char* name, std::int64_t count) {
  require_dtype(a.dtype().kind() == 'f' && a.itemsize() == 4, name, ": must be float32");
  require((a.flags() & py::array::c_style) && a.size() == count, name, ": must be C-contiguous with ", count,
          " elements");
  return static_cast<const float*>(a.data());
}

py::dict build_info_dict() {
  const BuildInfo info = build_info();
  py::dict d;
  d["version"] = info.version;
  d["compiler"] = info.compiler;
  d["build_type"] = info.build_type;
  d["cpu_features"] = info.cpu_features;
  d["isa"] = info.isa;
  py::dict paths;
  for (const auto& [family, path] : info.isa_paths) paths[py::str(family)] = path;
  d["isa_paths"] = paths;
  d["isa_reason"] = info.isa_reason;
  d["cpu"] = info.cpu;
  d["cpu_family"] = info.cpu_family;
  d["cpu_model"] = info.cpu_model;
  d["l1d_bytes"] = info.l1d_bytes;
  d["num_threads"] = info.num_threads;
  return d;
}

// Bulk element conversion between two contiguous 1-D arrays of equal length
// (used to test the dtype core from Python, and by fattn.round_to).
void convert(const py::array& src, py::array& dst) {
  require(src.ndim() == 1 && dst.ndim() == 1 && src.shape(0) == dst.shape(0), "convert: 1-D arrays of equal length");
  require(src.strides(0) == src.itemsize() && dst.strides(0) == dst.itemsize(), "convert: contiguous arrays");
  require(dst.writeable(), "convert: dst must be writable");
  const DType s = bindings::dtype_of(src, "src"), d = bindings::dtype_of(dst, "dst");
  const std::int64_t n = src.shape(0);
  py::gil_scoped_release nogil;
  if (s == d) {
    std::memcpy(dst.mutable_data(), src.data(), std::size_t(n * dtype_size(s)));
  } else if (s == DType::f32) {
    from_f32(d, static_cast<const float*>(src.data()), dst.mutable_data(), n);
  } else if (d == DType::f32) {
    to_f32(s, src.data(), static_cast<float*>(dst.mutable_data()), n);
  } else {
    std::vector<float> tmp(static_cast<std::size_t>(n));
    to_f32(s, src.data(), tmp.data(), n);
    from_f32(d, tmp.data(), dst.mutable_data(), n);
  }
}

}  // namespace

PYBIND11_MODULE(_core, m) {
  m.doc() = "fattn's compiled core (private: use the fattn package)";

  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const InvalidDType& e) {
      PyErr_SetString(PyExc_TypeError, e.what());
    } catch (const InvalidArgument& e) {
      PyErr_SetString(PyExc_ValueError, e.what());
    }
  });

  m.def("set_num_threads", &set_num_threads, py::arg("n"), py::call_guard<py::gil_scoped_release>());
  m.def("get_num_threads", &get_num_threads);
  m.def("build_info", &build_info_dict);
  m.def(
      "set_isa",
      [](const std::string& name) {
        if (name == "auto")
          simd::set_isa_auto();
        else
          simd::set_active_isa(simd::isa_from_name(name));
      },
      py::arg("name"));
  m.def("get_isa", &simd::isa_setting);
  m.def("isa_origin", &simd::isa_origin);
  m.attr("__version__") = FATTN_VERSION;
  m.def("available_isas", &simd::available_isas, py::arg("include_emulated") = false);
  m.def("convert", &convert, py::arg("src"), py::arg("dst"));
  m.def("dlpack_view", &dlpack_view, py::arg("capsule"), py::arg("name"));

  register_kernels(m);
  register_quant(m);

  m.def(
      "merge_attention",
      [](const std::vector<py::array>& outputs, const std::vector<py::array>& lses, py::array& out,
         std::optional<py::array> out_lse, const std::optional<py::array>& sinks, std::int64_t heads,
         std::int64_t rows_per_head) {
        require(!outputs.empty() && outputs.size() == lses.size(), "outputs/lses: need equally many, at least one");
        require(out.ndim() == 2, "out: expected [rows, D]");
        const std::int64_t rows = out.shape(0), D = out.shape(1);
        std::vector<const float*> o_ptrs, l_ptrs;
        for (std::size_t i = 0; i < outputs.size(); ++i) {
          o_ptrs.push_back(f32_data(outputs[i], "outputs[i]", rows * D));
          l_ptrs.push_back(f32_data(lses[i], "lses[i]", rows));
        }
        f32_data(out, "out", rows * D);
        require(out.writeable(), "out: must be writable");
        float* dst = static_cast<float*>(out.mutable_data());
        float* dst_lse = nullptr;
        if (out_lse) {
          f32_data(*out_lse, "out_lse", rows);
          dst_lse = static_cast<float*>(out_lse->mutable_data());
        }
        // Python has matched the sinks' length to the head axis it chose; the
        // core checks that heads x rows_per_head tile the rows, and the values.
        const std::vector<float> sink_values = sinks_input(sinks, heads);
        require(sink_values.empty() || std::int64_t(sink_values.size()) == heads, "sinks: expected length H = ",
                heads, " (one per query head), got ", sink_values.size());
        const MergeSinks merge_sinks{sink_values.empty() ? nullptr : sink_values.data(), heads, rows_per_head};
        py::gil_scoped_release nogil;
        merge_attention(o_ptrs, l_ptrs, rows, D, dst, dst_lse, merge_sinks);
      },
      py::arg("outputs"), py::arg("lses"), py::arg("out"), py::arg("out_lse"), py::arg("sinks"), py::arg("heads"),
      py::arg("rows_per_head"));

}
