#pragma once
// The dispatch table: for each vector target (simd/targets.hpp), its kernels
// of every family by element type. Each target's file simd/<id>.cpp (through
// simd/target_kernels.inl) defines its row; a kernel call looks the active
// target's row up once and runs the entry for its types. No intrinsics here.
#include <cstddef>
#include <cstdint>
#include <type_traits>
#include <vector>

#include "fattn/decode.hpp"
#include "fattn/dtype.hpp"
#include "fattn/prefill.hpp"
#include "fattn/sdpa.hpp"
#include "fattn/tensor.hpp"
#include "runtime/isa.hpp"

namespace fattn {
namespace prefill_detail {
struct CandleArithmetic;
struct LlamaCppArithmetic;
}  // namespace prefill_detail

namespace simd {

struct VectorKernels {
  // Query rows [row0, row0 + rows) of (b, h), at most kMaxBlocksPerItem x
  // kSimdRows: prefill/vector_kernel.inl.
  using PrefillRows = void (*)(const TensorView& q, const TensorView& k, const TensorView& v, const TensorView& out,
                               const PrefillPlan& p, std::int64_t b, std::int64_t h, std::int64_t row0,
                               std::int64_t rows, std::vector<float>& workspace);
  // Groups [g_begin, g_end) of one (batch, KV head): decode/vector_kernel.inl.
  using DecodeGroups = void (*)(const TensorView& q, const CacheView& k, const CacheView& v,
                                const TensorView& o_part, const TensorView& s_part, const TensorView& m_part,
                                const DecodePlan& p, std::int64_t b, std::int64_t kv_begin, std::int64_t kv_end,
                                std::int64_t g_begin, std::int64_t g_end, std::vector<float>& work);
  // Up to kSdpaRows query rows from row0 of (b, h): sdpa/vector_kernel.inl.
  using SdpaRows = void (*)(const TensorView& q, const TensorView& k, const TensorView& v, const TensorView& out,
                            const SdpaPlan& s, std::int64_t b, std::int64_t h, std::int64_t row0,
                            std::vector<float>& work);

  // One merge_attention row: dst[d] = (fma chain over i of parts[i][offset + d]
  // times weights[i], from 0) * inv, for d < head_dim: decode/vector_kernel.inl.
  using MergeRow = void (*)(const float* const* parts, const float* weights, std::size_t n, std::int64_t offset,
                            std::int64_t head_dim, float inv, float* dst);

  static constexpr int kDTypes = 3;
  template <class T>
  static constexpr int dtype_index() { return int(dtype_of<T>::value); }
  template <class Arith>
  static constexpr int arith_index() { return std::is_same_v<Arith, prefill_detail::LlamaCppArithmetic> ? 1 : 0; }

  PrefillRows prefill[kDTypes][2];  // [dtype_index<T>][arith_index<Arith>]
  // [element type of K][of V] (a quantized cache's is f32: its chunks are
  // dequantized to f32); set where both are dense and alike, or one is f32.
  DecodeGroups decode[kDTypes][kDTypes];
  SdpaRows sdpa[kDTypes];           // [dtype_index<T>]
  MergeRow merge_row;
  // exp (natural) or exp2 of x[0..n), lane by lane as every kernel computes
  // it (simd/vexp.hpp): the tests hold it to numerics/exp.hpp bit for bit.
  using ExpRow = void (*)(const float* x, float* y, std::size_t n, bool natural);
  ExpRow exp_row;

  template <class T, class Arith>
  PrefillRows prefill_rows() const { return prefill[dtype_index<T>()][arith_index<Arith>()]; }
  DecodeGroups decode_groups(DType k, DType v) const { return decode[int(k)][int(v)]; }
  template <class T>
  SdpaRows sdpa_rows() const { return sdpa[dtype_index<T>()]; }
};

// Each target's row, defined in its file where this build compiles it.
#define FATTN_X(id, code, traits, features, kind) extern const VectorKernels id##_kernels;
FATTN_VECTOR_TARGETS(FATTN_X)
#undef FATTN_X

// The row of `isa`, a vector target the CPU runs and this build has (as
// active_isa() always is): the kernels look it up once per call.
const VectorKernels& vector_kernels(Isa isa);

}  // namespace simd
}  // namespace fattn
