#pragma once
// A learned attention sink (issue 19), shared by every kernel family: a
// logit that joins a row's softmax denominator only, folded into the
// finished online-softmax state (m, l) as one more step with a single score
// and no value row, after the last key (as llama.cpp's kernels fold theirs):
//   m' = max(m, sink), f = exp(m - m'), l' = l*f + exp(sink - m'),
// and the caller scales its accumulator by f (skipping the multiply when
// f == 1 changes no bit). A row that saw no key (l = 0, O = 0) stays 0. A
// sink of -inf means none: nothing changes, f = 1 (exp(-inf - -inf) would be
// NaN in a row that saw no key). `exp` is the kernel's own (exp or exp2, in
// the units of its scores).
#include <algorithm>
#include <cmath>

namespace fattn::numerics {

template <class Exp>
inline float fold_sink(float sink, float& row_max, float& row_sum, Exp exp) {
  if (sink == -INFINITY) return 1.0f;
  const float new_max = std::max(row_max, sink);
  const float f = exp(row_max - new_max);
  row_sum = row_sum * f + exp(sink - new_max);
  row_max = new_max;
  return f;
}

}  // namespace fattn::numerics
