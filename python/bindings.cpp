// The pybind11 module fattn._core: arrays in, views out, GIL released around
// every kernel. Argument checks that need Python (types, ranks, layouts)
// live in python/fattn; the core checks everything else and its exceptions
// become ValueError (InvalidArgument) or TypeError (InvalidDType).
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include "fattn/fattn.hpp"
#include "simd/isa.hpp"

namespace py = pybind11;
using namespace fattn;

namespace {

// float32, float16 (numpy) or bfloat16 (ml_dtypes, a user-defined numpy type).
DType dtype_of(const py::array& a, const char* name) {
  const py::dtype dt = a.dtype();
  const char kind = dt.kind();
  if (kind == 'f' && dt.itemsize() == 4) return DType::f32;
  if (kind == 'f' && dt.itemsize() == 2) return DType::f16;
  const std::string type_name = py::str(dt.attr("name"));
  if (type_name == "bfloat16" && dt.itemsize() == 2) return DType::bf16;
  throw InvalidDType(detail::concat(name, ": dtype must be float32, float16 or bfloat16, got ", type_name));
}

// A 4-D array read as [B, H, L, D]; Python has already put the axes in that
// order (seq-major arrays arrive as transposed views) and made D contiguous.
TensorView view_of(const py::array& a, const char* name, bool writable) {
  require(a.ndim() == 4, name, ": expected a 4-D array, got ", a.ndim(), " dimensions");
  const DType dt = dtype_of(a, name);
  TensorView t;
  t.data = const_cast<void*>(a.data());
  t.dtype = dt;
  t.writable = writable && a.writeable();
  for (int i = 0; i < 4; ++i) {
    t.shape[std::size_t(i)] = std::int64_t(a.shape(i));
    const std::int64_t bytes = std::int64_t(a.strides(i));
    require(bytes % a.itemsize() == 0, name, ": byte stride ", bytes, " on axis ", i,
            " is not a multiple of the element size");
    t.stride[std::size_t(i)] = bytes / a.itemsize();
  }
  return t;
}

// A mask array already broadcast to 4-D by Python (stride 0 on broadcast axes).
MaskView mask_of(const py::array& a) {
  require(a.ndim() == 4, "mask: expected a 4-D (broadcast) array, got ", a.ndim(), " dimensions");
  MaskView m;
  m.data = a.data();
  if (a.dtype().kind() == 'b') {
    m.kind = MaskKind::boolean;
    require_dtype(a.itemsize() == 1, "mask: bool mask must be 1 byte per element");
  } else {
    m.kind = MaskKind::additive;
    m.dtype = dtype_of(a, "mask");
  }
  for (int i = 0; i < 4; ++i) {
    m.shape[std::size_t(i)] = std::int64_t(a.shape(i));
    require(m.shape[std::size_t(i)] > 0, "mask: every extent must be > 0, got shape extent ", a.shape(i));
    const std::int64_t bytes = std::int64_t(a.strides(i));
    require(bytes % a.itemsize() == 0, "mask: byte stride ", bytes, " is not a multiple of the element size");
    m.stride[std::size_t(i)] = bytes / a.itemsize();
  }
  return m;
}

BlkView blk_of(const py::array& a) {
  require(a.ndim() == 2, "blk: expected a 2-D uint8 array, got ", a.ndim(), " dimensions");
  require_dtype(a.dtype().kind() == 'u' && a.itemsize() == 1, "blk: dtype must be uint8");
  require(a.strides(1) == 1 && a.strides(0) == a.shape(1), "blk: must be C-contiguous");
  return BlkView{static_cast<const std::uint8_t*>(a.data()), std::int64_t(a.shape(0)), std::int64_t(a.shape(1))};
}

PrefillKernel kernel_of(const std::string& name) {
  if (name == "candle") return PrefillKernel::candle;
  if (name == "llamacpp") return PrefillKernel::llamacpp;
  throw InvalidArgument("kernel: must be 'auto', 'candle' or 'llamacpp', got '" + name + "'");
}

DecodeParams decode_params(std::int64_t kv_seq_len, std::optional<float> scale, int mask, std::int64_t window,
                           float softcap, int nwg) {
  require(mask >= 0 && mask <= 2, "mask: unknown mode ", mask);
  DecodeParams p;
  p.kv_seq_len = kv_seq_len;
  p.scale = scale;
  p.mask = static_cast<DecodeMask>(mask);
  p.window = window;
  p.softcap = softcap;
  p.nwg = nwg;
  return p;
}

// A contiguous f32 array's data, checked.
const float* f32_data(const py::array& a, const char* name, std::int64_t count) {
  require_dtype(a.dtype().kind() == 'f' && a.itemsize() == 4, name, ": must be float32");
  require((a.flags() & py::array::c_style) && a.size() == count, name, ": must be C-contiguous with ", count,
          " elements");
  return static_cast<const float*>(a.data());
}

// --- DLPack (https://dmlc.github.io/dlpack/latest/c_api.html) ----------------------------------
// The C ABI of the exchange structs, declared here from the specification so
// that no header is needed. A producer's capsule is consumed (renamed
// "used_dltensor[_versioned]") and its deleter runs when the NumPy view that
// wraps the memory is released; nothing is copied.
struct DLDevice {
  std::int32_t device_type;
  std::int32_t device_id;
};
struct DLDataType {
  std::uint8_t code;
  std::uint8_t bits;
  std::uint16_t lanes;
};
struct DLTensor {
  void* data;
  DLDevice device;
  std::int32_t ndim;
  DLDataType dtype;
  std::int64_t* shape;
  std::int64_t* strides;  // elements; null = compact row-major
  std::uint64_t byte_offset;
};
struct DLManagedTensor {
  DLTensor dl_tensor;
  void* manager_ctx;
  void (*deleter)(DLManagedTensor*);
};
struct DLPackVersion {
  std::uint32_t major;
  std::uint32_t minor;
};
struct DLManagedTensorVersioned {
  DLPackVersion version;
  void* manager_ctx;
  void (*deleter)(DLManagedTensorVersioned*);
  std::uint64_t flags;
  DLTensor dl_tensor;
};
constexpr std::int32_t kDLCPU = 1;
constexpr std::uint8_t kDLInt = 0, kDLUInt = 1, kDLFloat = 2, kDLBfloat = 4, kDLBool = 6;
constexpr std::uint64_t kDLFlagReadOnly = 1;

// The NumPy dtype of a DLPack element type (bfloat16 is ml_dtypes'); TypeError otherwise.
py::dtype numpy_dtype_of(const DLDataType& t, const std::string& name) {
  const std::string bits = std::to_string(int(t.bits));
  if (t.lanes == 1) {
    if (t.code == kDLFloat && (t.bits == 16 || t.bits == 32 || t.bits == 64)) return py::dtype("float" + bits);
    if (t.code == kDLBfloat && t.bits == 16) return py::dtype::from_args(py::module_::import("ml_dtypes").attr("bfloat16"));
    if ((t.code == kDLInt || t.code == kDLUInt) && (t.bits == 8 || t.bits == 16 || t.bits == 32 || t.bits == 64))
      return py::dtype((t.code == kDLInt ? "int" : "uint") + bits);
    if (t.code == kDLBool && t.bits == 8) return py::dtype("bool");
  }
  throw InvalidDType(detail::concat(name, ": DLPack element type (code ", int(t.code), ", bits ", int(t.bits),
                                    ", lanes ", t.lanes, ") has no NumPy dtype fattn reads"));
}

// A NumPy array over a DLPack capsule's memory (no copy). `name` is the
// argument's name for messages.
py::array dlpack_view(const py::capsule& capsule, const std::string& name) {
  PyObject* cap = capsule.ptr();
  const bool versioned = PyCapsule_IsValid(cap, "dltensor_versioned");
  if (!versioned && !PyCapsule_IsValid(cap, "dltensor"))
    throw InvalidDType(name + ": __dlpack__() did not return an unconsumed DLPack capsule");
  DLTensor* t = nullptr;
  bool read_only = false;
  if (versioned) {
    auto* mt = static_cast<DLManagedTensorVersioned*>(PyCapsule_GetPointer(cap, "dltensor_versioned"));
    require_dtype(mt->version.major <= 1, name, ": DLPack version ", mt->version.major, ".", mt->version.minor,
                  " is newer than this module reads (1.x)");
    t = &mt->dl_tensor;
    read_only = (mt->flags & kDLFlagReadOnly) != 0;
  } else {
    t = &static_cast<DLManagedTensor*>(PyCapsule_GetPointer(cap, "dltensor"))->dl_tensor;
  }
  require_dtype(t->device.device_type == kDLCPU, name, ": expected an array in CPU memory, got DLPack device type ",
                t->device.device_type);
  require(t->ndim >= 0 && t->ndim <= 32, name, ": DLPack rank ", t->ndim, " out of range");
  const py::dtype dt = numpy_dtype_of(t->dtype, name);
  const auto item = static_cast<py::ssize_t>(dt.itemsize());
  std::vector<py::ssize_t> shape(std::size_t(t->ndim)), strides(std::size_t(t->ndim));
  py::ssize_t compact = item;
  for (int i = t->ndim; i-- > 0;) {
    shape[std::size_t(i)] = py::ssize_t(t->shape[i]);
    strides[std::size_t(i)] = t->strides ? py::ssize_t(t->strides[i]) * item : compact;
    compact *= py::ssize_t(t->shape[i]);
  }
  char* data = static_cast<char*>(t->data) + t->byte_offset;
  // Take ownership: the producer's deleter now runs when the view's base goes.
  py::capsule owner;
  if (versioned) {
    auto* mt = static_cast<DLManagedTensorVersioned*>(PyCapsule_GetPointer(cap, "dltensor_versioned"));
    PyCapsule_SetName(cap, "used_dltensor_versioned");
    owner = py::capsule(mt, [](void* p) {
      auto* m = static_cast<DLManagedTensorVersioned*>(p);
      if (m->deleter) m->deleter(m);
    });
  } else {
    auto* mt = static_cast<DLManagedTensor*>(PyCapsule_GetPointer(cap, "dltensor"));
    PyCapsule_SetName(cap, "used_dltensor");
    owner = py::capsule(mt, [](void* p) {
      auto* m = static_cast<DLManagedTensor*>(p);
      if (m->deleter) m->deleter(m);
    });
  }
  // A zero-size tensor may carry a null pointer; NumPy then allocates (nothing to share).
  py::array view(dt, shape, strides, data, owner);
  if (read_only) view.attr("setflags")(py::arg("write") = false);
  return view;
}

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
  const DType s = dtype_of(src, "src"), d = dtype_of(dst, "dst");
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
        require(info.ndim == 0 || [&] {  // contiguous: the probe reads one flat range
          std::int64_t expect = info.itemsize;
          for (auto i = info.ndim; i-- > 0;) {
            if (info.shape[i] > 1 && info.strides[i] != expect) return false;
            expect *= info.shape[i];
          }
          return true;
        }(), "data: must be a C-contiguous buffer");
        const std::int64_t bytes = info.size * info.itemsize;
        py::gil_scoped_release nogil;
        return time_read(info.ptr, bytes, threads);
      },
      py::arg("data"), py::arg("threads"));
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
