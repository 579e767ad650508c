// The prefill engine (simd/prefill_simd.inl) compiled for AVX2 + FMA + F16C. Only the
// code after the target pragma is compiled for AVX2, so no inline function
// shared with the portable code is ever emitted with AVX2 instructions.
#include <immintrin.h>

#include "prefill_engine.hpp"

#pragma GCC push_options
#pragma GCC target("avx2,fma,f16c")
#include "simd/vec_avx2.hpp"
#include "simd/prefill_simd.inl"

namespace fattn::prefill_detail {

template <class T, class Arith>
void prefill_rows_avx2(const TensorView& q, const TensorView& k, const TensorView& v, const TensorView& out,
                         const Problem& p, std::int64_t b, std::int64_t h, std::int64_t row0,
                         std::vector<float>& workspace) {
  simd_impl::prefill_rows<simd::Vec256, T, Arith>(q, k, v, out, p, b, h, row0, workspace);
}

#define FATTN_INSTANTIATE(T, A)                                                                                     \
  template void prefill_rows_avx2<T, A>(const TensorView&, const TensorView&, const TensorView&, const TensorView&, \
                                          const Problem&, std::int64_t, std::int64_t, std::int64_t, std::vector<float>&);
FATTN_INSTANTIATE(float, CandleArithmetic)
FATTN_INSTANTIATE(float16, CandleArithmetic)
FATTN_INSTANTIATE(bfloat16, CandleArithmetic)
FATTN_INSTANTIATE(float, LlamaCppArithmetic)
FATTN_INSTANTIATE(float16, LlamaCppArithmetic)
FATTN_INSTANTIATE(bfloat16, LlamaCppArithmetic)
#undef FATTN_INSTANTIATE

}  // namespace fattn::prefill_detail

#pragma GCC pop_options
