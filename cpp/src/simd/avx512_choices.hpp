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
  static constexpr bool kPvRowsInLanes = false;  // rows as lanes would give only 2 FMAs per broadcast
  // The bf16 Q·Kᵀ as two FMAs per pair (VDPBF16PS in Vec512Bf16).
  static constexpr bool kBf16Dot = false;
  // Decode scores from K planes (decode/vector_kernel.inl), the form measured on
  // Zen 4; the position-lane form is AVX2's.
  static constexpr bool kDecodePositionLanes = false;
};

}  // namespace fattn::simd
