#pragma once
// What the naive SDPA paths share: the problem description and the
// declaration of each SIMD path.
#include <cstdint>
#include <vector>

#include "fattn/sdpa.hpp"
#include "fattn/tensor.hpp"

namespace fattn::sdpa_detail {

// The kernels read the plan itself (fattn/sdpa.hpp).
using SdpaShape = SdpaPlan;

// Query rows per item of the SIMD paths (one per vector lane).
inline constexpr std::int64_t kSdpaRows = 32;

// Keys query row i sees: all kv_len, or with causal (bottom-right) the keys
// up to its position kv_len - q_len + i.
inline std::int64_t visible_keys(const SdpaShape& s, std::int64_t i) {
  if (!s.causal) return s.kv_len;
  const std::int64_t n = i + s.causal_offset + 1;
  return n < 0 ? 0 : (n > s.kv_len ? s.kv_len : n);
}

// The SIMD paths: up to kSdpaRows query rows from row0 of (b, h), each the
// scalar model's sdpa_row (sdpa.cpp) lane by lane. One source
// (sdpa/vector_kernel.inl) compiled per instruction set in simd/sdpa_avx512.cpp,
// simd/sdpa_avx2.cpp and, for tests on machines without AVX-512,
// simd/sdpa_avx512_emulated.cpp; T in {float, float16, bfloat16}.
#define FATTN_DECLARE_SDPA_ROWS(name)                                                                          \
  template <class T>                                                                                           \
  void name(const TensorView& q, const TensorView& k, const TensorView& v, const TensorView& out,             \
            const SdpaShape& s, std::int64_t b, std::int64_t h, std::int64_t row0, std::vector<float>& work);
FATTN_DECLARE_SDPA_ROWS(sdpa_rows_avx512)
FATTN_DECLARE_SDPA_ROWS(sdpa_rows_avx512_emulated)
FATTN_DECLARE_SDPA_ROWS(sdpa_rows_avx2)
#undef FATTN_DECLARE_SDPA_ROWS

}  // namespace fattn::sdpa_detail
