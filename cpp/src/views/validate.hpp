#pragma once
// Argument checks shared by the public entry points. Each throws
// InvalidArgument / InvalidDType with the argument's name in the message.
#include <cmath>
#include <optional>

#include "fattn/tensor.hpp"

namespace fattn::detail {

inline void require_same_dtype(const TensorView& t, const char* name, const TensorView& ref, const char* ref_name) {
  require_dtype(t.dtype == ref.dtype, name, ": dtype must match ", ref_name, " (", ref.dtype, "), got ",
                t.dtype);
}

inline void require_extent(const TensorView& t, const char* name, Axis axis, std::int64_t expected,
                           const char* what) {
  const std::int64_t got = t.shape[int(axis)];
  require(got == expected, name, ": ", what, " must be ", expected, ", got ", got);
}

// q's heads must be a whole multiple of k's (grouped-query attention).
inline void require_gqa(std::int64_t h, std::int64_t h_kv, const char* k_name = "k") {
  require(h % h_kv == 0, "q/", k_name, ": the number of query heads H (", h, ") must be divisible by the number of K/V heads H_kv (",
          h_kv, ")");
}

inline void require_same_shape(const TensorView& t, const char* name, const TensorView& ref, const char* ref_name) {
  require(t.shape == ref.shape, name, ": shape must equal ", ref_name, "'s [", ref.shape[0], ", ", ref.shape[1], ", ",
          ref.shape[2], ", ", ref.shape[3], "], got [", t.shape[0], ", ", t.shape[1], ", ", t.shape[2], ", ",
          t.shape[3], "]");
}

// Written by several threads at once, an output whose elements alias each
// other (a stride of 0, or strides that interleave) would be a data race and
// a wrong answer: writable views must give every element its own address.
inline void require_writable(const TensorView& t, const char* name) {
  require(t.writable, name, ": must be writable");
  require(elements_distinct(t.shape, t.stride), name, ": its elements overlap (strides [", t.stride[0], ", ",
          t.stride[1], ", ", t.stride[2], ", ", t.stride[3], "] for shape [", t.shape[0], ", ", t.shape[1], ", ",
          t.shape[2], ", ", t.shape[3], "]); an output needs a distinct address per element");
}

// q [B, H, Lq, D]; k, v [B, H_kv, Lk, D] with H % H_kv == 0; one dtype for
// all three. `k_name`/`v_name` name K and V in messages, `of_q` words the
// reference to q's extents ("q.shape[0]"-style indices, or "q's").
inline void validate_attention_inputs(const TensorView& q, const TensorView& k, const TensorView& v,
                                      const char* k_name = "k", const char* v_name = "v", bool q_index = true) {
  validate_view(q, "q");
  validate_view(k, k_name);
  validate_view(v, v_name);
  require_same_dtype(k, k_name, q, "q");
  require_same_dtype(v, v_name, q, "q");
  require_extent(k, k_name, Axis::batch, q.batch(), q_index ? "batch size B (q.shape[0])" : "batch size B (q's)");
  require_extent(k, k_name, Axis::dim, q.head_dim(), q_index ? "head dim D (q.shape[3])" : "head dim D (q's)");
  require_gqa(q.heads(), k.heads(), k_name);
  require_same_shape(v, v_name, k, k_name);
}

// An output the plan asks for: `shape` and `dtype`, writable, one address
// per element. `of` says whose shape (and, with dtype_of_q, dtype) it must
// have: "q's" for an output shaped like q.
inline void validate_output(const TensorView& t, const char* name, const std::array<std::int64_t, 4>& shape,
                            DType dtype, bool dtype_of_q, const char* of = "q's") {
  validate_view(t, name);
  if (dtype_of_q)
    require_dtype(t.dtype == dtype, name, ": dtype must match q (", dtype, "), got ", t.dtype);
  else
    require_dtype(t.dtype == dtype, name, ": dtype must be ", dtype, ", got ", t.dtype);
  require(t.shape == shape, name, ": shape must equal ", of, " [", shape[0], ", ", shape[1], ", ", shape[2], ", ",
          shape[3], "], got [", t.shape[0], ", ", t.shape[1], ", ", t.shape[2], ", ", t.shape[3], "]");
  require_writable(t, name);
}

inline float resolve_scale(const std::optional<float>& scale, std::int64_t head_dim) {
  if (!scale) return 1.0f / std::sqrt(float(head_dim));
  require(std::isfinite(*scale), "scale: must be finite, got ", *scale);
  return *scale;
}

// A kernel's learned sinks (numerics/sink.hpp): none (empty), or one per
// query head, each finite or -inf (none for that head).
inline void require_sinks(const float* sinks, std::int64_t count, std::int64_t heads) {
  if (count == 0) return;
  require(count == heads, "sinks: expected one per query head (length H = ", heads, "), got length ", count);
  for (std::int64_t h = 0; h < count; ++h)
    require(!std::isnan(sinks[h]) && sinks[h] != INFINITY, "sinks: must be finite or -inf (no sink), got ", sinks[h],
            " for head ", h);
}

}  // namespace fattn::detail
