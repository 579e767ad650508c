// The per-ISA entry point of the prefill engine and its instantiations.
// The including file sets the target pragma, includes its vector traits,
// and defines FATTN_PREFILL_ROWS (the function name) and FATTN_VEC (the
// traits type).
#include "prefill/vector_kernel.inl"

namespace fattn::prefill_detail {

template <class T, class Arith>
void FATTN_PREFILL_ROWS(const TensorView& q, const TensorView& k, const TensorView& v, const TensorView& out,
                        const Problem& p, std::int64_t b, std::int64_t h, std::int64_t row0,
                        std::vector<float>& workspace) {
  prefill_rows<FATTN_VEC, T, Arith>(q, k, v, out, p, b, h, row0, workspace);
}

#define FATTN_INSTANTIATE(T, A)                                                                             \
  template void FATTN_PREFILL_ROWS<T, A>(const TensorView&, const TensorView&, const TensorView&,          \
                                         const TensorView&, const Problem&, std::int64_t, std::int64_t,    \
                                         std::int64_t, std::vector<float>&);
FATTN_INSTANTIATE(float, CandleArithmetic)
FATTN_INSTANTIATE(float16, CandleArithmetic)
FATTN_INSTANTIATE(bfloat16, CandleArithmetic)
FATTN_INSTANTIATE(float, LlamaCppArithmetic)
FATTN_INSTANTIATE(float16, LlamaCppArithmetic)
FATTN_INSTANTIATE(bfloat16, LlamaCppArithmetic)
#undef FATTN_INSTANTIATE

}  // namespace fattn::prefill_detail
