// The per-ISA entry point of the vec decode and its instantiations. The
// including file sets the target pragma, includes its vector traits, and
// defines FATTN_DECODE_GROUPS (the function name) and FATTN_VEC (the traits).
#include "decode/vector_kernel.inl"

namespace fattn::decode_detail {

template <class T>
void FATTN_DECODE_GROUPS(const TensorView& q, const TensorView& k, const TensorView& v, const TensorView& o_part,
                         const TensorView& s_part, const TensorView& m_part, const Decode& p, std::int64_t b,
                         std::int64_t kv_head, std::int64_t g_begin, std::int64_t g_end, std::vector<float>& work) {
  decode_groups<FATTN_VEC, T>(q, k, v, o_part, s_part, m_part, p, b, kv_head, g_begin, g_end, work);
}

#define FATTN_INSTANTIATE(T)                                                                                   \
  template void FATTN_DECODE_GROUPS<T>(const TensorView&, const TensorView&, const TensorView&, const TensorView&, \
                                       const TensorView&, const TensorView&, const Decode&, std::int64_t,          \
                                       std::int64_t, std::int64_t, std::int64_t, std::vector<float>&);
FATTN_INSTANTIATE(float)
FATTN_INSTANTIATE(float16)
FATTN_INSTANTIATE(bfloat16)
#undef FATTN_INSTANTIATE

}  // namespace fattn::decode_detail
