#include "fattn/tensor.hpp"

#include <algorithm>
#include <limits>

namespace fattn {
namespace {

// a * b, or InvalidArgument naming `who` when it does not fit in 64 bits
// (the derived strides of a dense view would wrap).
std::int64_t checked_mul(std::int64_t a, std::int64_t b, const char* who, const std::array<std::int64_t, 4>& shape) {
  std::int64_t r = 0;
  require(!__builtin_mul_overflow(a, b, &r), who, ": shape [", shape[0], ", ", shape[1], ", ", shape[2], ", ",
          shape[3], "] has more elements than 64-bit strides can address");
  return r;
}

// |x| as an unsigned value (defined for INT64_MIN too).
std::uint64_t magnitude(std::int64_t x) { return x < 0 ? 0 - std::uint64_t(x) : std::uint64_t(x); }

// The largest |offset| of an element of [shape] with these strides must be
// addressable in bytes without 64-bit overflow (extents must be >= 1).
void require_addressable(const std::array<std::int64_t, 4>& shape, const std::array<std::int64_t, 4>& stride,
                         const char* name) {
  const std::uint64_t limit = std::uint64_t(std::numeric_limits<std::int64_t>::max() / 4);
  std::uint64_t reach = 0;
  for (int a = 0; a < 4; ++a) {
    std::uint64_t span = 0;
    const bool ok = !__builtin_mul_overflow(magnitude(stride[a]), std::uint64_t(shape[a] - 1), &span) &&
                    !__builtin_add_overflow(reach, span, &reach) && reach <= limit;
    require(ok, name, ": strides [", stride[0], ", ", stride[1], ", ", stride[2], ", ", stride[3],
            "] overflow 64-bit byte offsets");
  }
}

}  // namespace

bool elements_distinct(const std::array<std::int64_t, 4>& shape, const std::array<std::int64_t, 4>& stride) {
  // Sufficient (and what every dense, sliced, transposed or seq-major view
  // meets): taken by increasing |stride|, each axis steps past everything
  // the smaller axes reach. Axes of extent 1 never step. Sums stay below
  // 2^63 for views that passed require_addressable.
  std::array<int, 4> axes{0, 1, 2, 3};
  std::sort(axes.begin(), axes.end(), [&](int a, int b) { return magnitude(stride[a]) < magnitude(stride[b]); });
  std::uint64_t reach = 0;  // largest offset the smaller axes span
  for (int a : axes) {
    if (shape[a] <= 1) continue;
    if (magnitude(stride[a]) <= reach) return false;
    reach += magnitude(stride[a]) * std::uint64_t(shape[a] - 1);
  }
  return true;
}

TensorView contiguous_view(void* data, DType dtype, std::array<std::int64_t, 4> shape, bool writable) {
  TensorView t;
  t.data = data;
  t.dtype = dtype;
  t.shape = shape;
  const std::int64_t s2 = shape[3], s1 = checked_mul(shape[2], s2, "contiguous_view", shape);
  t.stride = {checked_mul(shape[1], s1, "contiguous_view", shape), s1, s2, 1};
  t.writable = writable;
  return t;
}

TensorView seq_major_view(void* data, DType dtype, std::array<std::int64_t, 4> s, bool writable) {
  TensorView t;
  t.data = data;
  t.dtype = dtype;
  t.shape = {s[0], s[2], s[1], s[3]};
  const std::int64_t hd = checked_mul(s[2], s[3], "seq_major_view", s);
  t.stride = {checked_mul(s[1], hd, "seq_major_view", s), s[3], hd, 1};
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
  require_dtype(is_valid_dtype(t.dtype), name, ": unknown dtype code ", int(t.dtype),
                " (expected float32, float16 or bfloat16)");
  require(t.stride[3] == 1 || t.shape[3] == 1, name,
          ": the head dimension D must be contiguous (stride 1), got stride ", t.stride[3]);
  // The farthest element must be addressable without 64-bit overflow.
  require_addressable(t.shape, t.stride, name);
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
  validate_mask_kind(m, name);
  for (int a = 0; a < 4; ++a) {
    const bool broadcast = m.stride[a] == 0;
    if (m.shape[a] >= 1 && (m.shape[a] == target[a] || broadcast)) continue;
    // The shape as the caller wrote it (rank 2 to 4, right-aligned), then the axis at fault.
    const int rank = m.rank >= 2 && m.rank <= 4 ? m.rank : 4;
    std::string shape = "(";
    for (int i = 4 - rank; i < 4; ++i) shape += std::to_string(m.shape[i]) + (i < 3 ? ", " : ")");
    throw InvalidArgument(detail::concat(name, ": shape ", shape, " does not broadcast to [B, H, Lq, Lk] = [",
                                         target[0], ", ", target[1], ", ", target[2], ", ", target[3],
                                         "]; ", name, ": extent ", axes[a], " must be ", target[a],
                                         " (or 1, or broadcast with stride 0), got ", m.shape[a]));
  }
  require_addressable(m.shape, m.stride, name);
}

MaskView broadcast_mask(MaskView m, const std::array<std::int64_t, 4>& target, const char* name) {
  for (int a = 0; a < 4; ++a)
    if (m.shape[a] == 1 && target[a] != 1) m.stride[a] = 0;  // NumPy's rule: an extent of 1 broadcasts
  validate_mask(m, target, name);
  for (int a = 0; a < 4; ++a)
    if (m.stride[a] == 0) m.shape[a] = target[a];
  return m;
}

void validate_mask_kind(const MaskView& m, const char* name) {
  require(m.kind == MaskKind::additive || m.kind == MaskKind::boolean, name, ": unknown mask kind code ",
          int(m.kind), " (expected additive or boolean)");
  if (m.kind == MaskKind::additive)
    require_dtype(is_valid_dtype(m.dtype), name, ": unknown dtype code ", int(m.dtype),
                  " for an additive mask (expected float32, float16 or bfloat16)");
}

}  // namespace fattn
