#pragma once
#include <pybind11/pybind11.h>

namespace fattn::bindings {

// quantize_kv, dequantize_kv, check_quant_blocks on fattn._core (quantized
// KV caches, fattn/quant.hpp).
void register_quant(pybind11::module_& m);

}  // namespace fattn::bindings
