#pragma once
// Turns a runtime dtype into a template parameter, in one place.
#include "fattn/dtype.hpp"

namespace fattn::detail {

template <class F>
decltype(auto) dispatch_dtype(DType dt, F&& f) {
  switch (dt) {
    case DType::f16: return f(float16{});
    case DType::bf16: return f(bfloat16{});
    case DType::f32: break;
  }
  return f(float{});
}

}  // namespace fattn::detail
