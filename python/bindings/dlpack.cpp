// The DLPack importer: a producer's capsule (a CPU torch tensor, a JAX array,
// ...) becomes a NumPy array over the same memory, bf16 as ml_dtypes.bfloat16
// (which NumPy's own importer cannot make).
#include "dlpack.hpp"

#include <cstdint>
#include <string>
#include <vector>

#include "fattn/error.hpp"

namespace py = pybind11;

namespace fattn::bindings {
namespace {

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
}  // namespace

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

}  // namespace fattn::bindings
