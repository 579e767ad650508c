#include "fattn/dtype.hpp"

#include "fattn/error.hpp"

#include <ostream>

namespace fattn {

bool is_valid_dtype(DType dt) { return dt == DType::f32 || dt == DType::f16 || dt == DType::bf16; }

std::string dtype_name(DType dt) {
  switch (dt) {
    case DType::f32: return "float32";
    case DType::f16: return "float16";
    case DType::bf16: return "bfloat16";
  }
  return "unknown(" + std::to_string(int(dt)) + ")";
}

std::ostream& operator<<(std::ostream& os, DType dt) { return os << dtype_name(dt); }

std::int64_t dtype_size(DType dt) {
  require_dtype(is_valid_dtype(dt), "dtype: unknown dtype code ", int(dt));
  return dt == DType::f32 ? 4 : 2;
}

void to_f32(DType src_type, const void* src, float* dst, std::int64_t n) {
  require(n >= 0, "to_f32: n must be >= 0, got ", n);
  require_dtype(is_valid_dtype(src_type), "to_f32: src_type: unknown dtype code ", int(src_type));
  require(n == 0 || (src != nullptr && dst != nullptr), "to_f32: src and dst must not be null");
  if (n == 0) return;  // memcpy from a null pointer is undefined even for 0 bytes
  const auto* h = static_cast<const std::uint16_t*>(src);
  switch (src_type) {
    case DType::f32: std::memcpy(dst, src, std::size_t(n) * 4); break;
    case DType::f16: for (std::int64_t i = 0; i < n; ++i) dst[i] = f16_to_f32(h[i]); break;
    case DType::bf16: for (std::int64_t i = 0; i < n; ++i) dst[i] = bf16_to_f32(h[i]); break;
  }
}

void from_f32(DType dst_type, const float* src, void* dst, std::int64_t n) {
  require(n >= 0, "from_f32: n must be >= 0, got ", n);
  require_dtype(is_valid_dtype(dst_type), "from_f32: dst_type: unknown dtype code ", int(dst_type));
  require(n == 0 || (src != nullptr && dst != nullptr), "from_f32: src and dst must not be null");
  if (n == 0) return;  // memcpy from a null pointer is undefined even for 0 bytes
  auto* h = static_cast<std::uint16_t*>(dst);
  switch (dst_type) {
    case DType::f32: std::memcpy(dst, src, std::size_t(n) * 4); break;
    case DType::f16: for (std::int64_t i = 0; i < n; ++i) h[i] = f32_to_f16(src[i]); break;
    case DType::bf16: for (std::int64_t i = 0; i < n; ++i) h[i] = f32_to_bf16(src[i]); break;
  }
}

}  // namespace fattn
