#include "fattn/tensor.hpp"

#include <limits>

namespace fattn {

TensorView contiguous_view(void* data, DType dtype, std::array<std::int64_t, 4> shape, bool writable) {
  TensorView t;
  t.data = data;
  t.dtype = dtype;
  t.shape = shape;
  t.stride = {shape[1] * shape[2] * shape[3], shape[2] * shape[3], shape[3], 1};
  t.writable = writable;
  return t;
}

TensorView seq_major_view(void* data, DType dtype, std::array<std::int64_t, 4> s, bool writable) {
  TensorView t;
  t.data = data;
  t.dtype = dtype;
  t.shape = {s[0], s[2], s[1], s[3]};
  t.stride = {s[1] * s[2] * s[3], s[3], s[2] * s[3], 1};
  t.writable = writable;
  return t;
}

static const char* const kAxisNames[4] = {"B", "H", "L", "D"};

void validate_view(const TensorView& t, const char* name) {
  std::int64_t count = 1;
  for (int a = 0; a < 4; ++a) {
    require(t.shape[a] > 0, name, ": every extent must be > 0, got ", kAxisNames[a], " = ", t.shape[a]);
    require(!__builtin_mul_overflow(count, t.shape[a], &count), name,
            ": element count overflows 64 bits");
  }
  require(t.data != nullptr, name, ": data pointer is null");
  require(t.stride[3] == 1 || t.shape[3] == 1, name,
          ": the head dimension D must be contiguous (stride 1), got stride ", t.stride[3]);
  // The farthest element must be addressable without 64-bit overflow.
  std::int64_t reach = 0;
  for (int a = 0; a < 4; ++a) {
    std::int64_t span = 0;
    const std::int64_t s = t.stride[a] < 0 ? -t.stride[a] : t.stride[a];
    require(!__builtin_mul_overflow(s, t.shape[a] - 1, &span) && !__builtin_add_overflow(reach, span, &reach),
            name, ": strides overflow 64-bit offsets");
  }
  require(reach <= std::numeric_limits<std::int64_t>::max() / 4, name, ": strides overflow 64-bit byte offsets");
}

float MaskView::additive_at(std::int64_t b, std::int64_t h, std::int64_t i, std::int64_t j) const {
  const std::int64_t o = offset(b, h, i, j);
  if (kind == MaskKind::boolean)
    return static_cast<const std::uint8_t*>(data)[o] ? 0.0f : -std::numeric_limits<float>::infinity();
  switch (dtype) {
    case DType::f32: return static_cast<const float*>(data)[o];
    case DType::f16: return f16_to_f32(static_cast<const std::uint16_t*>(data)[o]);
    case DType::bf16: return bf16_to_f32(static_cast<const std::uint16_t*>(data)[o]);
  }
  return 0.0f;
}

bool MaskView::attends(std::int64_t b, std::int64_t h, std::int64_t i, std::int64_t j) const {
  if (kind == MaskKind::boolean) return static_cast<const std::uint8_t*>(data)[offset(b, h, i, j)] != 0;
  return additive_at(b, h, i, j) != -std::numeric_limits<float>::infinity();
}

void validate_mask(const MaskView& m, const std::array<std::int64_t, 4>& target, const char* name) {
  static const char* const axes[4] = {"B", "H", "Lq", "Lk"};
  require(m.data != nullptr, name, ": data pointer is null");
  for (int a = 0; a < 4; ++a) {
    const bool broadcast = m.stride[a] == 0;
    require(m.shape[a] == target[a] || (broadcast && m.shape[a] >= 1), name, ": extent ", axes[a], " must be ",
            target[a], " (or broadcast with stride 0), got ", m.shape[a]);
  }
}

}  // namespace fattn
