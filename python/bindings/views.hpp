#pragma once
// NumPy arrays -> the core's views, and the outputs a plan asks for -> NumPy
// arrays. What is checked here is what only the binding knows: an array's
// rank and element type as NumPy spells them, its layout, a caller's out=.
// Every rule about shapes and values is the core's (its plan), checked once.
// Errors are fattn::InvalidArgument (ValueError) or InvalidDType (TypeError)
// naming the argument.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <array>
#include <cstdint>
#include <initializer_list>
#include <optional>
#include <string>
#include <utility>
#include <optional>
#include <vector>

#include "fattn/fattn.hpp"

namespace fattn::bindings {

namespace py = pybind11;

// float32, float16 (numpy) or bfloat16 (ml_dtypes, a user-defined numpy type).
DType dtype_of(const py::array& a, const char* name);
// A NumPy dtype for a DType.
py::dtype numpy_dtype(DType dt);
// Python's spelling of a shape: "(1, 4, 3, 8)", "(3,)".
std::string py_shape(const py::array& a);
// A str argument that must be one of `choices`; ValueError naming `name` otherwise.
std::string choice(const py::handle& value, const char* name, std::initializer_list<const char*> choices);

// An input read as [B, H, L, D]. When the array cannot be read in place (its
// last axis not contiguous, a stride not a whole number of elements,
// misaligned data, or an element type the kernel does not take, e.g. a
// float16 q for the decode), the view carries the array's shape with dense
// strides for the plan to check, and stage() makes the copy the kernel reads
// only after the plan has accepted the call.
struct Input {
  py::array array;
  TensorView view;
  const char* name = "";
  bool blhd = false;
  DType want = DType::f32;  // the element type the kernel reads
  bool staged = false;
  // The kernel's copy (after planning); `view` then points at it.
  void stage();
};

// A 4-D array ([B, H, L, D], or [B, L, H, D] with blhd). `axes` spells the
// expected axes for the rank message.
Input input4(const py::array& a, const char* name, const char* axes, bool blhd);
// `a` (rank `rank`, 2 <= rank <= 4) as a [B, H, L, D] view by inserting
// extents of 1 at `insert` positions (e.g. a decode q [H, D] -> [1, H, 1, D]);
// `want` is the element type the kernel reads (others are converted when staged).
Input input_as4(const py::array& a, const char* name, std::vector<int> axes_of_4d, DType want);

// A mask, right-aligned to 4-D (leading extents 1); the plan broadcasts it.
// `target` is [B, H, Lq, Lk] for the rank message.
struct MaskInput {
  py::array array;
  MaskView view;
  bool staged = false;
  void stage();
};
MaskInput mask_input(const py::array& a, const std::array<std::int64_t, 4>& target);
// A 2-D uint8 tile map (any row stride; a column stride other than 1 is copied).
BlkView blk_input(const py::array& a, py::array& keep_alive);

// A quantized cache's format as Python spells it: "q8_0", "q4_0", "affine4"
// or "tq4" (the core says which are implemented); ValueError naming `name`
// for anything else.
QuantFormat quant_format_of(const py::handle& value, const char* name);
// A quantized cache's raw blocks, a uint8 array [capacity, W], [H, capacity,
// W] or [B, H, capacity, W] (W = bytes per row), as a [B, H, capacity,
// head_dim] QuantView over its memory with NumPy's byte strides (never
// copied; inserted axes have extent 1). Here: the dtype (TypeError) and rank;
// the core (quant_view_over_bytes) checks W, the last axis' stride, extents.
QuantView quant_input(const py::array& blocks, QuantFormat format, std::int64_t head_dim, const char* name,
                      bool writable);

// A kernel's learned sinks: None, or a 1-D float32 array (any stride), copied
// out. Its length and values are the plan's rule, except that an empty array,
// which the params cannot tell from None, is refused here (`heads` is for the
// message).
std::vector<float> sinks_input(const std::optional<py::array>& sinks, std::int64_t heads);

// An output: a fresh array of `shape` (the caller's axes) and `dtype`, or the
// caller's out= checked against them (TypeError for the dtype; ValueError for
// the shape, a read-only array, zero strides or an overlap with an input).
// `target` is what the kernel writes: `array` itself, or a temporary when
// the caller's array is misaligned or its last axis is not contiguous
// (finish() then copies it over).
struct Output {
  py::array array, target;
  void finish() const;
};
Output output(const py::object& out, const std::vector<py::ssize_t>& shape, const py::dtype& dtype,
              std::initializer_list<std::pair<const char*, const py::array*>> inputs);
// A [B, H, L, D] view of an output's target (blhd swaps the middle axes),
// with `axes_of_4d` as for input_as4 when its rank is below 4.
TensorView output_view(const py::array& target, DType dt, bool blhd);
TensorView output_view_as4(const py::array& target, DType dt, std::vector<int> axes_of_4d);

}  // namespace fattn::bindings
