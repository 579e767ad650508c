#pragma once
// Views over caller-owned memory. Nothing here owns or copies data (and no
// Eigen: fattn/eigen.hpp maps a view's slices as Eigen matrices).
//
// A TensorView is always read as [B, H, L, D] (batch, head, position, head
// dim); a seq-major array [B, L, H, D] is the same view with the two middle
// strides swapped, so kernels never see layouts. Strides are in elements and
// may be any value (0 and negative included) except along D, which must be
// contiguous (stride 1). All index arithmetic is 64-bit.
#include <array>
#include <cstdint>
#include <string>

#include "fattn/dtype.hpp"
#include "fattn/error.hpp"

namespace fattn {

enum class Axis : int { batch = 0, head = 1, seq = 2, dim = 3 };

struct TensorView {
  void* data = nullptr;
  DType dtype = DType::f32;
  std::array<std::int64_t, 4> shape{};   // [B, H, L, D]
  std::array<std::int64_t, 4> stride{};  // elements
  bool writable = false;

  std::int64_t batch() const { return shape[0]; }
  std::int64_t heads() const { return shape[1]; }
  std::int64_t length() const { return shape[2]; }
  std::int64_t head_dim() const { return shape[3]; }

  std::int64_t offset(std::int64_t b, std::int64_t h, std::int64_t l) const {
    return b * stride[0] + h * stride[1] + l * stride[2];
  }
  // Pointer to the D contiguous elements of row (b, h, l).
  template <class T>
  T* row(std::int64_t b, std::int64_t h, std::int64_t l) const {
    return static_cast<T*>(data) + offset(b, h, l);
  }
};

// A dense, contiguous [B, H, L, D] view over `data` (strides derived;
// InvalidArgument if they would overflow 64 bits).
TensorView contiguous_view(void* data, DType dtype, std::array<std::int64_t, 4> shape, bool writable);
// The same memory read as [B, L, H, D] (seq-major): swaps the middle axes.
TensorView seq_major_view(void* data, DType dtype, std::array<std::int64_t, 4> blhd_shape, bool writable);

// Checks every view property a kernel relies on: non-null data, a known
// dtype, positive extents, D contiguous, element count and every element's
// byte offset representable in 64 bits. `name` is the argument's name in
// messages.
void validate_view(const TensorView& t, const char* name);
// Whether every element of a view with these extents (>= 1) and strides has
// its own address (checked for every output: aliasing outputs are rejected).
bool elements_distinct(const std::array<std::int64_t, 4>& shape, const std::array<std::int64_t, 4>& stride);

// How a mask blocks or biases a score.
enum class MaskKind : std::uint8_t { additive = 0, boolean = 1 };

// A mask over [B, H, Lq, Lk]: additive (0 = attend, -inf = blocked, any
// finite value a bias) in f32/f16/bf16, or boolean (nonzero byte = attend).
// Stride 0 on an axis broadcasts it (a rank-2 [Lq, Lk] mask has strides
// {0, 0, Lk, 1}).
struct MaskView {
  const void* data = nullptr;
  MaskKind kind = MaskKind::additive;
  DType dtype = DType::f32;  // element type of an additive mask
  std::array<std::int64_t, 4> shape{};
  std::array<std::int64_t, 4> stride{};
  // The caller's rank (2 to 4; shape is right-aligned, leading extents 1):
  // only for messages, which print the shape as the caller wrote it.
  int rank = 4;

  std::int64_t offset(std::int64_t b, std::int64_t h, std::int64_t i, std::int64_t j) const {
    return b * stride[0] + h * stride[1] + i * stride[2] + j * stride[3];
  }
  // The additive value at (b, h, i, j), widened to f32 (a bool mask gives
  // 0 for attend and -inf for blocked).
  float additive_at(std::int64_t b, std::int64_t h, std::int64_t i, std::int64_t j) const;
  bool attends(std::int64_t b, std::int64_t h, std::int64_t i, std::int64_t j) const;
};

// Checks a mask against the [B, H, Lq, Lk] it must cover: a known kind (and
// dtype, if additive), each extent equal to the target's or broadcast
// (stride 0, extent >= 1), strides whose offsets fit in 64 bits.
void validate_mask(const MaskView& m, const std::array<std::int64_t, 4>& target, const char* name);
// validate_mask after NumPy's broadcasting rule (an extent of 1 broadcasts,
// whatever its stride); returns the mask with every broadcast axis at the
// target's extent and stride 0.
MaskView broadcast_mask(MaskView m, const std::array<std::int64_t, 4>& target, const char* name);
// Only the kind and (additive) dtype of a mask.
void validate_mask_kind(const MaskView& m, const char* name);

}  // namespace fattn
