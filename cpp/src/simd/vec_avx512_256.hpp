#pragma once
// AVX-512 on 256-bit vectors (AVX-512VL): the AVX2 traits' 8 lanes and
// operations (simd/vec_avx2.hpp), with the loop choices of a machine that has
// 32 vector registers instead of 16. Zen 4 runs a 512-bit operation as two
// 256-bit halves, and the issue measured its AVX2 path 35-50% ahead of its
// AVX-512 one; this path keeps the 256-bit width and gives the compiler the
// other 16 registers (EVEX encodings), so the kernels hold twice the
// accumulators. The emulated twin (avx512_256_emulated) is these traits
// compiled for AVX2: the same code and bits, with spills, on any AVX2 CPU.
// Include only inside a target region enabling AVX2 (+ FMA, F16C).
#include "simd/vec_avx2.hpp"

namespace fattn::simd {
namespace {  // internal linkage: simd/target.hpp

struct Vec256Wide : Vec256 {
  static constexpr int kScoreKeys = 4;             // 4 keys x 4 row vectors: 16 accumulators
  static constexpr int kPvLaneAccumulators = 16;   // the lanes form's P·V: 4 elements x 4 row vectors
  static constexpr int pv_vectors(int rows) { return rows >= 4 ? 4 : 16 / rows; }  // 16 accumulators
  // As Vec256's, but any of the 32 registers ("v": ymm0-31 where EVEX exists).
  static F in_register(F x) {
    asm("" : "+v"(x));
    return x;
  }
};

}  // namespace
}  // namespace fattn::simd
