#pragma once
// The AVX-512 path's shape and loop choices, without intrinsics: shared by
// the real traits (simd/vec_avx512.hpp) and by their emulation on AVX2
// (simd/vec_avx512_emulated.hpp), so the emulation runs the same code.
#include <cstdint>

namespace fattn::simd {

struct Avx512Choices {
  static constexpr std::int64_t W = 16;
  static constexpr int kScoreKeys = 8;  // keys per pass of the score kernel (x R/W row vectors in registers)
  // D vectors per row held in registers by the P·V kernels (prefill row form, decode), any row count.
  static constexpr int pv_vectors(int) { return 4; }
  // Prefill P·V with the rows in the lanes, 8 elements of D x 2 row vectors
  // per pass (16 accumulators; per key 2 loads of P and 8 broadcasts of V, the
  // score loop's shape): +7% (D = 128) and +15% (D = 256) over the row form
  // (4 rows x 4 vectors) on this project's Intel Xeon, f32 L = 2048.
  static constexpr bool kPvRowsInLanes = true;
  static constexpr int kPvLaneAccumulators = 16;
  // The bf16 Q·Kᵀ as two FMAs per pair (VDPBF16PS in Vec512Bf16).
  static constexpr bool kBf16Dot = false;
  // Those FMAs' bf16 K rows widened to f32 once per tile rather than split
  // from each broadcast pair (a shift and an AND per pair and key, on the FMA
  // ports): prefill/vector_kernel.inl.
  static constexpr bool kWidenBf16Keys = true;
  // Decode scores from K planes (decode/vector_kernel.inl), the form measured on
  // Zen 4 for 16-lane vectors; the row form is the 8-lane targets'.
  static constexpr bool kDecodeRowScores = false;
  // exp's scaling by 2^n in one instruction (simd/vexp.hpp): Vec512 sets it;
  // the emulated twin scales with two multiplies, the same bits.
  static constexpr bool kScalef = false;
};

}  // namespace fattn::simd
