// NumPy arrays -> the core's views. Nothing is copied; the views borrow the
// arrays' memory for the duration of one call.
#include "views.hpp"

#include <string>

namespace py = pybind11;

namespace fattn::bindings {

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
}  // namespace fattn::bindings
