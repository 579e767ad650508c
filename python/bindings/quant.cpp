// Quantized KV caches: x -> raw blocks (uint8, one row's blocks along the
// last axis) and back. Arrays [capacity, *], [H, capacity, *] or
// [B, H, capacity, *] are read as [B, H, capacity, *]; the core checks every
// rule about shapes and values (fattn/quant.hpp) before a byte is written.
#include "quant.hpp"

#include <vector>

#include "views.hpp"

namespace fattn::bindings {
namespace {

// The axes of [B, H, L, D] an array of rank 2 to 4 supplies (-1: inserted, extent 1).
std::vector<int> leading_axes(int rank) {
  if (rank == 2) return {-1, -1, 0, 1};
  if (rank == 3) return {-1, 0, 1, 2};
  return {0, 1, 2, 3};
}

py::array quantize_kv(const py::array& x, const py::object& format) {
  const int rank = int(x.ndim());
  require(rank >= 2 && rank <= 4, "x: expected [capacity, D], [H, capacity, D] or [B, H, capacity, D], got shape ",
          py_shape(x));
  Input xi = input_as4(x, "x", leading_axes(rank), dtype_of(x, "x"));
  const QuantFormat fmt = quant_format_of(format, "format");
  const std::int64_t row_bytes = quant_row_bytes(fmt, xi.view.head_dim(), "x");
  std::vector<py::ssize_t> shape(x.shape(), x.shape() + rank);
  shape.back() = py::ssize_t(row_bytes);
  py::array_t<std::uint8_t> blocks(shape);
  const QuantView out = contiguous_quant_view(blocks.mutable_data(), fmt, xi.view.shape, true);
  xi.stage();
  {
    py::gil_scoped_release nogil;
    fattn::quantize_kv(xi.view, out);
  }
  return std::move(blocks);
}

py::array dequantize_kv(const py::array& blocks, const py::object& format, std::int64_t head_dim) {
  const QuantView in = quant_input(blocks, quant_format_of(format, "format"), head_dim, "blocks", false);
  std::vector<py::ssize_t> shape(blocks.shape(), blocks.shape() + blocks.ndim());
  shape.back() = py::ssize_t(head_dim);
  py::array_t<float> out(shape);
  const TensorView ov = contiguous_view(out.mutable_data(), DType::f32, in.shape, true);
  {
    py::gil_scoped_release nogil;
    fattn::dequantize_kv(in, ov);
  }
  return std::move(out);
}

}  // namespace

void register_quant(py::module_& m) {
  m.def("quantize_kv", &quantize_kv, py::arg("x"), py::arg("format"));
  m.def("dequantize_kv", &dequantize_kv, py::arg("blocks"), py::arg("format"), py::arg("head_dim"));
  m.def(
      "check_quant_blocks",
      [](const py::array& blocks, const py::object& format, std::int64_t head_dim) {
        quant_input(blocks, quant_format_of(format, "format"), head_dim, "blocks", false);
      },
      py::arg("blocks"), py::arg("format"), py::arg("head_dim"));
}

}  // namespace fattn::bindings
