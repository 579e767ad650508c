// The body of every target's file simd/<id>.cpp: the three kernel families
// (prefill/, decode/, sdpa/vector_kernel.inl) compiled for one target of
// simd/targets.hpp, and its row of the dispatch table (simd/dispatch.hpp).
// The including file defines
//   FATTN_TARGET           the target's id (avx2)
//   FATTN_TARGET_FEATURES  its features from the list (FATTN_ISA_AVX2)
//   FATTN_TARGET_TRAITS    the header of its traits ("simd/vec_avx2.hpp")
// Only the code inside the target region (simd/target.hpp) is compiled for
// the target, so no inline function shared with the portable code is ever
// emitted with its instructions.
#include "simd/targets.hpp"

#if FATTN_SIMD_X86
// Every header the kernels use, before the region: a header first seen inside
// it would have its functions compiled for the target too.
#include <immintrin.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <vector>

#include "decode/engine.hpp"
#include "numerics/exp.hpp"
#include "numerics/tanh.hpp"
#include "prefill/engine.hpp"
#include "quant/blocks.hpp"
#include "runtime/cpu_features.hpp"
#include "sdpa/engine.hpp"
#include "simd/dispatch.hpp"
#include "simd/ftz_scope.hpp"
#include "simd/target.hpp"

FATTN_TARGET_BEGIN(FATTN_TARGET_FEATURES)
#include FATTN_TARGET_TRAITS
#include "prefill/vector_kernel.inl"
#include "decode/vector_kernel.inl"
#include "sdpa/vector_kernel.inl"

namespace fattn::simd {
namespace {

using Target = FATTN_PASTE(FATTN_TARGET, _target);
static_assert(Target::features == FATTN_TARGET_FEATURES,
              "the region's features must be the list's: they are what the CPU is checked for");

template <class T, class... Arith>
constexpr void add_dtype(VectorKernels& row) {
  using V = Target::Vec;
  constexpr int d = VectorKernels::dtype_index<T>();
  ((row.prefill[d][VectorKernels::arith_index<Arith>()] = &prefill_detail::prefill_rows<V, T, Arith>), ...);
  row.decode[d][d] = &decode_detail::decode_groups<V, T, T>;
  if constexpr (!std::is_same_v<T, float>) {  // a quantized (read as f32) K or V with a dense T one
    row.decode[d][VectorKernels::dtype_index<float>()] = &decode_detail::decode_groups<V, T, float>;
    row.decode[VectorKernels::dtype_index<float>()][d] = &decode_detail::decode_groups<V, float, T>;
  }
  row.sdpa[d] = &sdpa_detail::sdpa_rows<V, T>;
}

// VectorKernels::exp_row: the kernels' exp over an array, for the tests.
template <class V>
void exp_row(const float* x, float* y, std::size_t n, bool natural) {
  for (std::size_t i = 0; i < n; i += std::size_t(V::W)) {
    const std::int64_t left = std::int64_t(n - i);
    const typename V::F v = V::load_n(x + i, left);
    V::store_n(y + i, natural ? exp_v<V>(v) : exp2_v<V>(v), left);
  }
}

// Every element type, and for prefill both arithmetic policies.
template <class... T>
constexpr VectorKernels make_row() {
  VectorKernels row{};
  (add_dtype<T, prefill_detail::CandleArithmetic, prefill_detail::LlamaCppArithmetic>(row), ...);
  row.merge_row = &decode_detail::merge_row<Target::Vec>;
  row.exp_row = &exp_row<Target::Vec>;
  return row;
}

}  // namespace

// A constant, so it is set before any code runs.
extern const VectorKernels FATTN_PASTE(FATTN_TARGET, _kernels) = make_row<float, float16, bfloat16>();

}  // namespace fattn::simd
FATTN_TARGET_END
#endif  // FATTN_SIMD_X86
