#pragma once
// Optional: a view's (batch, head) slices as Eigen matrices. Include it where
// Eigen is wanted; fattn/tensor.hpp itself does not pull Eigen in.
#include <Eigen/Core>
#include <cstdint>

#include "fattn/tensor.hpp"

namespace fattn {

template <class T>
using RowMajorMatrix = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
template <class T>
using ConstSliceMap = Eigen::Map<const RowMajorMatrix<T>, Eigen::Unaligned, Eigen::OuterStride<>>;
template <class T>
using SliceMap = Eigen::Map<RowMajorMatrix<T>, Eigen::Unaligned, Eigen::OuterStride<>>;

// One (batch, head) slice of `t` as an L x D matrix with an outer stride (no copy).
template <class T>
ConstSliceMap<T> slice(const TensorView& t, std::int64_t b, std::int64_t h) {
  return ConstSliceMap<T>(t.row<const T>(b, h, 0), t.shape[2], t.shape[3], Eigen::OuterStride<>(t.stride[2]));
}
template <class T>
SliceMap<T> mutable_slice(const TensorView& t, std::int64_t b, std::int64_t h) {
  return SliceMap<T>(t.row<T>(b, h, 0), t.shape[2], t.shape[3], Eigen::OuterStride<>(t.stride[2]));
}

}  // namespace fattn
