#pragma once
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <string>

namespace fattn::bindings {

// A NumPy array over a DLPack capsule's memory (no copy); the capsule is
// consumed and the producer's deleter runs when the array's base goes.
// TypeError (InvalidDType) naming `name` for a non-CPU or unreadable tensor.
pybind11::array dlpack_view(const pybind11::capsule& capsule, const std::string& name);

}  // namespace fattn::bindings
