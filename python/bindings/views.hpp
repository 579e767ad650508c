#pragma once
// NumPy arrays -> the core's views (no copy). Each throws InvalidArgument or
// InvalidDType naming the argument.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstdint>
#include <optional>
#include <string>

#include "fattn/fattn.hpp"

namespace fattn::bindings {

// float32, float16 (numpy) or bfloat16 (ml_dtypes, a user-defined numpy type).
DType dtype_of(const pybind11::array& a, const char* name);
// A 4-D array read as [B, H, L, D]; Python has already put the axes in that
// order (seq-major arrays arrive as transposed views) and made D contiguous.
TensorView view_of(const pybind11::array& a, const char* name, bool writable);
// A mask array already broadcast to 4-D by Python (stride 0 on broadcast axes).
MaskView mask_of(const pybind11::array& a);
BlkView blk_of(const pybind11::array& a);
PrefillKernel kernel_of(const std::string& name);
DecodeParams decode_params(std::int64_t kv_seq_len, std::optional<float> scale, int mask, std::int64_t window,
                           float softcap, int nwg);
// A contiguous f32 array's data, checked.
const float* f32_data(const pybind11::array& a, const char* name, std::int64_t count);

}  // namespace fattn::bindings
