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
#include "fattn/fattn.hpp"
#include "runtime/isa.hpp"
#include "views.hpp"

namespace py = pybind11;
using namespace fattn;
using namespace fattn::bindings;

namespace {

py::dict build_info_dict() {
  const BuildInfo info = build_info();
  py::dict d;
  d["version"] = info.version;
  d["compiler"] = info.compiler;
  d["build_type"] = info.build_type;
  d["cpu_features"] = info.cpu_features;
  d["isa"] = info.isa;
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
  m.def("set_isa", [](const std::string& name) { simd::set_active_isa(simd::isa_from_name(name)); }, py::arg("name"));
  m.def("available_isas", &simd::available_isas, py::arg("include_emulated") = false);
  m.def("convert", &convert, py::arg("src"), py::arg("dst"));
  m.def("dlpack_view", &dlpack_view, py::arg("capsule"), py::arg("name"));

  m.def(
      "sdpa",
      [](const py::array& q, const py::array& k, const py::array& v, py::array& out, bool causal,
         std::optional<float> scale, std::int64_t kv_seq_len) {
        SdpaParams p;
        p.causal = causal;
        p.scale = scale;
        p.kv_seq_len = kv_seq_len;
        const TensorView qv = view_of(q, "q", false), kv = view_of(k, "k", false), vv = view_of(v, "v", false),
                         ov = view_of(out, "out", true);
        py::gil_scoped_release nogil;
        sdpa(qv, kv, vv, ov, p);
      },
      py::arg("q"), py::arg("k"), py::arg("v"), py::arg("out"), py::arg("causal"),
      py::arg("scale"), py::arg("kv_seq_len"));

  m.def(
      "flash_attn_prefill",
      [](const py::array& q, const py::array& k, const py::array& v, py::array& out, const std::optional<py::array>& mask,
         const std::optional<py::array>& blk, const std::optional<py::array>& lse, bool causal,
         std::optional<float> scale, const std::string& kernel, int nsg, std::optional<std::int64_t> q_tile,
         std::optional<std::int64_t> k_tile, bool verify_blk) {
        PrefillParams p;
        p.verify_blk = verify_blk;
        p.causal = causal;
        p.scale = scale;
        p.kernel = kernel_of(kernel);
        p.nsg = nsg;
        p.q_tile = q_tile;
        p.k_tile = k_tile;
        const TensorView qv = view_of(q, "q", false), kv = view_of(k, "k", false), vv = view_of(v, "v", false),
                         ov = view_of(out, "out", true);
        MaskView mv;
        BlkView bv;
        TensorView lv;
        if (mask) mv = mask_of(*mask);
        if (blk) bv = blk_of(*blk);
        if (lse) lv = view_of(*lse, "lse", true);
        py::gil_scoped_release nogil;
        flash_attn_prefill(qv, kv, vv, ov, mask ? &mv : nullptr, blk ? &bv : nullptr, lse ? &lv : nullptr, p);
      },
      py::arg("q"), py::arg("k"), py::arg("v"), py::arg("out"), py::arg("mask"), py::arg("blk"), py::arg("lse"),
      py::arg("causal"), py::arg("scale"), py::arg("kernel"), py::arg("nsg"), py::arg("q_tile"), py::arg("k_tile"),
      py::arg("verify_blk") = true);

  m.def("prefill_geometry",
        [](const std::string& kernel, std::int64_t head_dim, std::optional<std::int64_t> q_tile,
           std::optional<std::int64_t> k_tile) {
          const PrefillGeometry g = prefill_geometry(kernel_of(kernel), head_dim, q_tile, k_tile);
          return py::make_tuple(g.q_tile, g.k_tile);
        },
        py::arg("kernel"), py::arg("head_dim"), py::arg("q_tile"), py::arg("k_tile"));

  m.def(
      "flash_attn_vec",
      [](const py::array& q, const py::array& k, const py::array& v, py::array& out, std::int64_t kv_seq_len,
         std::optional<float> scale, int mask, std::int64_t window, float softcap, int nwg) {
        const DecodeParams p = decode_params(kv_seq_len, scale, mask, window, softcap, nwg);
        const TensorView qv = view_of(q, "q", false), kv = view_of(k, "k_cache", false),
                         vv = view_of(v, "v_cache", false), ov = view_of(out, "out", true);
        py::gil_scoped_release nogil;
        flash_attn_vec(qv, kv, vv, ov, p);
      },
      py::arg("q"), py::arg("k"), py::arg("v"), py::arg("out"), py::arg("kv_seq_len"), py::arg("scale"),
      py::arg("mask"), py::arg("window"), py::arg("softcap"), py::arg("nwg"));

  m.def(
      "flash_attn_vec_partials",
      [](const py::array& q, const py::array& k, const py::array& v, py::array& o, py::array& s, py::array& mx,
         std::int64_t kv_seq_len, std::optional<float> scale, int mask, std::int64_t window, float softcap, int nwg) {
        const DecodeParams p = decode_params(kv_seq_len, scale, mask, window, softcap, nwg);
        const TensorView qv = view_of(q, "q", false), kv = view_of(k, "k_cache", false),
                         vv = view_of(v, "v_cache", false), ov = view_of(o, "o", true), sv = view_of(s, "s", true),
                         mv = view_of(mx, "m", true);
        py::gil_scoped_release nogil;
        flash_attn_vec_partials(qv, kv, vv, ov, sv, mv, p);
      },
      py::arg("q"), py::arg("k"), py::arg("v"), py::arg("o"), py::arg("s"), py::arg("m"), py::arg("kv_seq_len"),
      py::arg("scale"), py::arg("mask"), py::arg("window"), py::arg("softcap"), py::arg("nwg"));

  m.def(
      "flash_attn_vec_reduce",
      [](const py::array& o, const py::array& s, const py::array& mx, py::array& out) {
        const TensorView ov = view_of(o, "o", false), sv = view_of(s, "s", false), mv = view_of(mx, "m", false),
                         outv = view_of(out, "out", true);
        py::gil_scoped_release nogil;
        flash_attn_vec_reduce(ov, sv, mv, outv);
      },
      py::arg("o"), py::arg("s"), py::arg("m"), py::arg("out"));

  m.def(
      "merge_attention",
      [](const std::vector<py::array>& outputs, const std::vector<py::array>& lses, py::array& out,
         std::optional<py::array> out_lse) {
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
        py::gil_scoped_release nogil;
        merge_attention(o_ptrs, l_ptrs, rows, D, dst, dst_lse);
      },
      py::arg("outputs"), py::arg("lses"), py::arg("out"), py::arg("out_lse"));

  m.def(
      "flash_attn_prefill_blk",
      [](const py::array& mask, const std::string& kernel, std::int64_t q_tile, std::int64_t k_tile, py::array& out) {
        const MaskView mv = mask_of(mask);
        require(out.ndim() == 2 && out.dtype().kind() == 'u' && out.itemsize() == 1 && out.writeable() &&
                    out.strides(1) == 1 && out.strides(0) == out.shape(1),
                "blk: output must be a writable C-contiguous 2-D uint8 array");
        std::uint8_t* dst = static_cast<std::uint8_t*>(out.mutable_data());
        const std::int64_t rows = out.shape(0), cols = out.shape(1);
        py::gil_scoped_release nogil;
        flash_attn_prefill_blk(mv, kernel_of(kernel), PrefillGeometry{q_tile, k_tile}, dst, rows, cols);
      },
      py::arg("mask"), py::arg("kernel"), py::arg("q_tile"), py::arg("k_tile"), py::arg("out"));
}
