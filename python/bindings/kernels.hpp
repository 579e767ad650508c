#pragma once
#include <pybind11/pybind11.h>

namespace fattn::bindings {

// sdpa, flash_attn_prefill (+ _blk, prefill_geometry), flash_attn_vec (+
// _partials, _reduce) on fattn._core.
void register_kernels(pybind11::module_& m);

}  // namespace fattn::bindings
