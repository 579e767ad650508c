// NumPy arrays -> the core's views; outputs -> NumPy arrays. Nothing is
// copied unless the kernel cannot read an array in place (see Input).
#include "views.hpp"

#include <algorithm>
#include <cstring>

namespace fattn::bindings {
namespace {

bool aligned(const py::array& a) { return (reinterpret_cast<std::uintptr_t>(a.data()) % a.itemsize()) == 0; }

// Dense strides (elements) for `shape` in the order given; InvalidArgument
// when the element count does not fit in 64 bits.
std::array<std::int64_t, 4> dense_strides(const std::array<std::int64_t, 4>& shape, const char* name) {
  std::array<std::int64_t, 4> stride{};
  std::int64_t n = 1;
  for (int i = 3; i >= 0; --i) {
    stride[std::size_t(i)] = n;
    require(!__builtin_mul_overflow(n, std::max<std::int64_t>(shape[std::size_t(i)], 1), &n), name,
            ": element count overflows 64 bits");
  }
  return stride;
}

// Whether the kernel can read `a` in place along the mapped axes: aligned,
// every stride a whole number of elements, the last axis contiguous.
bool readable_in_place(const py::array& a) {
  if (!aligned(a)) return false;
  for (py::ssize_t i = 0; i < a.ndim(); ++i)
    if (a.strides(i) % a.itemsize() != 0) return false;
  const py::ssize_t last = a.ndim() - 1;
  return last < 0 || a.shape(last) <= 1 || a.strides(last) == a.itemsize();
}

// The [B, H, L, D] view of `a` (any rank) through `axes_of_4d`: for each of
// the four axes, the array axis it reads or -1 for an inserted extent 1.
TensorView map_view(const py::array& a, DType dt, const std::vector<int>& axes_of_4d, bool dense, const char* name,
                    bool writable) {
  TensorView t;
  t.data = const_cast<void*>(a.data());
  t.dtype = dt;
  t.writable = writable;
  for (int i = 0; i < 4; ++i) {
    const int src = axes_of_4d[std::size_t(i)];
    t.shape[std::size_t(i)] = src < 0 ? 1 : std::int64_t(a.shape(src));
    t.stride[std::size_t(i)] = src < 0 ? 0 : std::int64_t(a.strides(src)) / std::int64_t(a.itemsize());
  }
  if (dense) {  // strides of the C-contiguous copy stage() will make, mapped the same way
    std::array<std::int64_t, 4> src_shape{1, 1, 1, 1};
    const int rank = int(a.ndim());
    for (int i = 0; i < rank; ++i) src_shape[std::size_t(4 - rank + i)] = a.shape(i);
    const auto src_stride = dense_strides(src_shape, name);
    for (int i = 0; i < 4; ++i) {
      const int src = axes_of_4d[std::size_t(i)];
      t.stride[std::size_t(i)] = src < 0 ? 0 : src_stride[std::size_t(4 - rank + src)];
    }
  }
  return t;
}

std::vector<int> identity_or_blhd(bool blhd) { return blhd ? std::vector<int>{0, 2, 1, 3} : std::vector<int>{0, 1, 2, 3}; }

py::array contiguous_copy(const py::array& a, const py::dtype& dt) {
  return py::module_::import("numpy").attr("ascontiguousarray")(a, dt);
}

// The byte range [lo, hi) an array's elements span (NumPy's may_share_memory bounds).
std::pair<std::intptr_t, std::intptr_t> byte_bounds(const py::array& a) {
  std::intptr_t lo = reinterpret_cast<std::intptr_t>(a.data()), hi = lo;
  for (py::ssize_t i = 0; i < a.ndim(); ++i) {
    if (a.shape(i) == 0) return {0, 0};
    const std::intptr_t span = std::intptr_t(a.strides(i)) * std::intptr_t(a.shape(i) - 1);
    (span < 0 ? lo : hi) += span;
  }
  return {lo, hi + std::intptr_t(a.itemsize())};
}

}  // namespace

std::vector<float> sinks_input(const std::optional<py::array>& sinks, std::int64_t heads) {
  if (!sinks) return {};
  const py::array& a = *sinks;
  require_dtype(a.dtype().kind() == 'f' && a.itemsize() == 4, "sinks: dtype must be float32, got ",
                std::string(py::str(a.dtype().attr("name"))));
  require(a.ndim() == 1, "sinks: expected a 1-D array of length H = ", heads, " (one per query head), got shape ",
          py_shape(a));
  require(a.shape(0) > 0, "sinks: expected one per query head (length H = ", heads,
          "), got length 0 (None = no sinks)");
  std::vector<float> values(std::size_t(a.shape(0)));
  const auto* base = static_cast<const char*>(a.data());
  for (py::ssize_t i = 0; i < a.shape(0); ++i)
    std::memcpy(&values[std::size_t(i)], base + i * a.strides(0), sizeof(float));
  return values;
}

DType dtype_of(const py::array& a, const char* name) {
  const py::dtype dt = a.dtype();
  const char kind = dt.kind();
  if (kind == 'f' && dt.itemsize() == 4) return DType::f32;
  if (kind == 'f' && dt.itemsize() == 2) return DType::f16;
  const std::string type_name = py::str(dt.attr("name"));
  if (type_name == "bfloat16" && dt.itemsize() == 2) return DType::bf16;
  throw InvalidDType(detail::concat(name, ": dtype must be one of float32, float16, bfloat16, got ", type_name));
}

py::dtype numpy_dtype(DType dt) {
  switch (dt) {
    case DType::f16: return py::dtype("float16");
    case DType::bf16: {
      static const py::object bf16 = py::module_::import("ml_dtypes").attr("bfloat16");
      return py::dtype::from_args(bf16);
    }
    case DType::f32: break;
  }
  return py::dtype("float32");
}

std::string py_shape(const py::array& a) {
  std::string s = "(";
  for (py::ssize_t i = 0; i < a.ndim(); ++i) s += (i ? ", " : "") + std::to_string(a.shape(i));
  return s + (a.ndim() == 1 ? ",)" : ")");
}

std::string choice(const py::handle& value, const char* name, std::initializer_list<const char*> choices) {
  if (py::isinstance<py::str>(value)) {
    const std::string s = value.cast<std::string>();
    for (const char* c : choices)
      if (s == c) return s;
  }
  std::string listed = "(";
  std::size_t i = 0;
  for (const char* c : choices) listed += std::string(i++ ? ", " : "") + "'" + c + "'";
  throw InvalidArgument(detail::concat(name, ": must be one of ", listed, "), got ",
                                       std::string(py::repr(value))));
}

void Input::stage() {
  if (!staged) return;
  // The copy is C-contiguous in the caller's axes: the dense strides the plan checked.
  array = contiguous_copy(array, numpy_dtype(want));
  view.data = const_cast<void*>(array.data());
  view.dtype = want;
}

Input input4(const py::array& a, const char* name, const char* axes, bool blhd) {
  require(a.ndim() == 4, name, ": expected a 4-D array ", axes, ", got shape ", py_shape(a));
  const DType dt = dtype_of(a, name);
  Input in{a, {}, name, blhd, dt, !readable_in_place(a)};
  in.view = map_view(a, dt, identity_or_blhd(blhd), in.staged, name, false);
  return in;
}

Input input_as4(const py::array& a, const char* name, std::vector<int> axes_of_4d, DType want) {
  const DType dt = dtype_of(a, name);
  Input in{a, {}, name, false, want, dt != want || !readable_in_place(a)};
  // The plan checks the view in the element type the kernel reads.
  in.view = map_view(a, want, axes_of_4d, in.staged, name, false);
  return in;
}

void MaskInput::stage() {
  if (!staged) return;
  array = contiguous_copy(array, array.dtype());
  view.data = array.data();
}

MaskInput mask_input(const py::array& a, const std::array<std::int64_t, 4>& target) {
  MaskInput in{a, {}, false};
  MaskView& m = in.view;
  const py::dtype dt = a.dtype();
  if (dt.kind() == 'b' && dt.itemsize() == 1) {
    m.kind = MaskKind::boolean;
  } else {
    try {
      m.dtype = dtype_of(a, "mask");
    } catch (const InvalidDType&) {
      throw InvalidDType(detail::concat("mask: dtype must be bool (True = attend) or an additive float32, float16 or "
                                        "bfloat16, got ", std::string(py::str(dt.attr("name")))));
    }
  }
  require(a.ndim() >= 2 && a.ndim() <= 4, "mask: expected [Lq, Lk], [B, H, Lq, Lk] or a shape that broadcasts to [",
          target[0], ", ", target[1], ", ", target[2], ", ", target[3], "], got shape ", py_shape(a));
  const int rank = int(a.ndim());
  std::vector<int> axes_of_4d(4, -1);
  for (int i = 0; i < rank; ++i) axes_of_4d[std::size_t(4 - rank + i)] = i;
  in.staged = !aligned(a) || std::any_of(a.strides(), a.strides() + rank, [&](py::ssize_t s) { return s % a.itemsize(); });
  const TensorView t = map_view(a, DType::f32, axes_of_4d, in.staged, "mask", false);
  m.data = a.data();
  m.shape = t.shape;
  m.stride = t.stride;
  m.rank = rank;
  return in;
}

BlkView blk_input(const py::array& a, py::array& keep_alive) {
  require_dtype(a.dtype().kind() == 'u' && a.itemsize() == 1, "blk: dtype must be uint8, got ",
                std::string(py::str(a.dtype().attr("name"))));
  require(a.ndim() == 2, "blk: expected a 2-D array [ceil(Lq/BQ), ceil(Lk/BK)], got shape ", py_shape(a));
  keep_alive = a;
  // Read in place when each row's entries are adjacent (any row stride, 0 included).
  if (a.shape(1) > 1 && a.strides(1) != 1) keep_alive = contiguous_copy(a, a.dtype());
  const py::ssize_t row_stride = keep_alive.shape(0) > 1 ? keep_alive.strides(0) : keep_alive.shape(1);
  return BlkView{static_cast<const std::uint8_t*>(keep_alive.data()), std::int64_t(a.shape(0)),
                 std::int64_t(a.shape(1)), std::int64_t(row_stride)};
}

QuantFormat quant_format_of(const py::handle& value, const char* name) {
  const std::string f = choice(value, name, {"q8_0", "q4_0", "affine4", "tq4"});
  return f == "q8_0" ? QuantFormat::q8_0 : f == "q4_0" ? QuantFormat::q4_0 : f == "affine4" ? QuantFormat::affine4
                                                                                             : QuantFormat::tq4;
}

QuantView quant_input(const py::array& blocks, QuantFormat format, std::int64_t head_dim, const char* name,
                      bool writable) {
  require_dtype(blocks.dtype().kind() == 'u' && blocks.itemsize() == 1, name,
                ": dtype must be uint8 (the raw blocks), got ", std::string(py::str(blocks.dtype().attr("name"))));
  const int rank = int(blocks.ndim());
  require(rank >= 2 && rank <= 4, name,
          ": expected [capacity, bytes_per_row], [H, capacity, bytes_per_row] or [B, H, capacity, bytes_per_row], "
          "got shape ", py_shape(blocks));
  std::array<std::int64_t, 4> shape{1, 1, 1, 1}, stride{0, 0, 0, 0};
  for (int i = 0; i < rank; ++i) {
    shape[std::size_t(4 - rank + i)] = std::int64_t(blocks.shape(i));
    stride[std::size_t(4 - rank + i)] = std::int64_t(blocks.strides(i));
  }
  return quant_view_over_bytes(const_cast<void*>(blocks.data()), format, head_dim, shape, stride, writable, name);
}

void Output::finish() const {
  if (!target.is(array)) py::module_::import("numpy").attr("copyto")(array, target);
}

Output output(const py::object& out, const std::vector<py::ssize_t>& shape, const py::dtype& dtype,
              std::initializer_list<std::pair<const char*, const py::array*>> inputs) {
  if (out.is_none()) {
    py::array a(dtype, shape);
    return Output{a, a};
  }
  const py::array a = py::reinterpret_borrow<py::array>(out);
  require_dtype(a.dtype().is(dtype) || a.dtype().equal(dtype), "out: dtype must be ",
                std::string(py::str(dtype.attr("name"))), ", got ", std::string(py::str(a.dtype().attr("name"))));
  const bool same_shape = a.ndim() == py::ssize_t(shape.size()) && std::equal(shape.begin(), shape.end(), a.shape());
  if (!same_shape) {
    std::string want = "(";
    for (std::size_t i = 0; i < shape.size(); ++i) want += (i ? ", " : "") + std::to_string(shape[i]);
    want += shape.size() == 1 ? ",)" : ")";
    throw InvalidArgument("out: shape must be " + want + ", got " + py_shape(a));
  }
  require(a.writeable(), "out: must be writable, got a read-only array");
  for (py::ssize_t i = 0; i < a.ndim(); ++i)
    if (a.strides(i) == 0 && a.shape(i) > 1) {
      std::string strides = "(";
      for (py::ssize_t j = 0; j < a.ndim(); ++j) strides += (j ? ", " : "") + std::to_string(a.strides(j));
      throw InvalidArgument("out: must not overlap itself (a stride is 0), got strides " + strides +
                            (a.ndim() == 1 ? ",)" : ")"));
    }
  const auto [lo, hi] = byte_bounds(a);
  for (const auto& [name, input] : inputs) {
    const auto [ilo, ihi] = byte_bounds(*input);
    require(!(lo < ihi && ilo < hi), "out: must not overlap the input ", name);
  }
  if (readable_in_place(a)) return Output{a, a};
  return Output{a, py::array(dtype, shape)};
}

TensorView output_view(const py::array& target, DType dt, bool blhd) {
  return map_view(target, dt, identity_or_blhd(blhd), false, "out", true);
}

TensorView output_view_as4(const py::array& target, DType dt, std::vector<int> axes_of_4d) {
  return map_view(target, dt, axes_of_4d, false, "out", true);
}

}  // namespace fattn::bindings
