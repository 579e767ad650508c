// The per-ISA entry point of the naive SDPA and its instantiations. The
// including file sets the target pragma, includes its vector traits, and
// defines FATTN_SDPA_ROWS (the function name) and FATTN_VEC (the traits).
#include "sdpa/vector_kernel.inl"

namespace fattn::sdpa_detail {

template <class T>
void FATTN_SDPA_ROWS(const TensorView& q, const TensorView& k, const TensorView& v, const TensorView& out,
                     const SdpaShape& s, std::int64_t b, std::int64_t h, std::int64_t row0,
                     std::vector<float>& work) {
  sdpa_rows<FATTN_VEC, T>(q, k, v, out, s, b, h, row0, work);
}

template void FATTN_SDPA_ROWS<float>(const TensorView&, const TensorView&, const TensorView&, const TensorView&,
                                     const SdpaShape&, std::int64_t, std::int64_t, std::int64_t, std::vector<float>&);
template void FATTN_SDPA_ROWS<float16>(const TensorView&, const TensorView&, const TensorView&, const TensorView&,
                                       const SdpaShape&, std::int64_t, std::int64_t, std::int64_t,
                                       std::vector<float>&);
template void FATTN_SDPA_ROWS<bfloat16>(const TensorView&, const TensorView&, const TensorView&, const TensorView&,
                                        const SdpaShape&, std::int64_t, std::int64_t, std::int64_t,
                                        std::vector<float>&);

}  // namespace fattn::sdpa_detail
