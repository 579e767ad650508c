#pragma once
// The block formats of fattn/quant.hpp, one block at a time: ggml's
// reference quantizers' rules (the published block_q8_0 / block_q4_0
// definitions and rounding) and their exact dequantization. Shared by the
// quantizer (quant.cpp) and the decode kernels, so both read one definition.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>

#include "fattn/dtype.hpp"
#include "fattn/quant.hpp"

namespace fattn::quant {

inline constexpr std::int64_t kQ8Bytes = 2 + kQuantBlock;      // f16 scale + 32 int8
inline constexpr std::int64_t kQ4Bytes = 2 + kQuantBlock / 2;  // f16 scale + 16 bytes of nibbles

inline float block_scale(const std::uint8_t* block) {
  std::uint16_t d;
  std::memcpy(&d, block, 2);  // little-endian, as x86 reads it
  return f16_to_f32(d);
}
inline void store_scale(std::uint8_t* block, float d) {
  const std::uint16_t h = f32_to_f16(d);
  std::memcpy(block, &h, 2);
}

// 1/d, or 0 when d is 0 or so small (|d| < 2^-128, a subnormal f32) that
// 1/d overflows. ggml's rule is only the first half: with an infinite 1/d its
// reference quantizer converts inf or NaN (0 * inf) to an integer, which C
// leaves undefined. fattn defines such a block as an all-zero one (q = 0;
// q4_0 nibbles 8); it dequantizes to the same zeros, since its f16 scale
// rounds to 0 either way.
inline float inverse_scale(float d) {
  if (d == 0.0f) return 0.0f;
  const float id = 1.0f / d;
  return std::fabs(id) <= std::numeric_limits<float>::max() ? id : 0.0f;
}

// q8_0: d = max|x| / 127 (f32), stored as f16; q = round(x * (1/d)) half
// away from zero (0 for an all-zero block, and for one whose 1/d overflows:
// inverse_scale). Note: q uses the f32 d, the
// element reads back with the f16 one, as in ggml.
inline void quantize_q8_0(const float* x, std::uint8_t* block) {
  float amax = 0.0f;
  for (std::int64_t j = 0; j < kQuantBlock; ++j) amax = std::max(amax, std::fabs(x[j]));
  const float d = amax / 127.0f;
  const float id = inverse_scale(d);
  store_scale(block, d);
  for (std::int64_t j = 0; j < kQuantBlock; ++j) {
    const auto q = static_cast<std::int8_t>(std::round(x[j] * id));
    std::memcpy(block + 2 + j, &q, 1);
  }
}
inline void dequantize_q8_0(const std::uint8_t* block, float* out) {
  const float d = block_scale(block);
  for (std::int64_t j = 0; j < kQuantBlock; ++j) out[j] = float(static_cast<std::int8_t>(block[2 + j])) * d;
}

// q4_0: m = the element of largest magnitude (the first of equals), d = m / -8,
// q = min(15, trunc(x * (1/d) + 8.5)) in f32 (a product, then a sum: two
// roundings; the core builds with -ffp-contract=off), 1/d as for q8_0;
// element j in the low nibble of byte j,
// element j + 16 in the high nibble.
inline void quantize_q4_0(const float* x, std::uint8_t* block) {
  float amax = 0.0f, m = 0.0f;
  for (std::int64_t j = 0; j < kQuantBlock; ++j)
    if (amax < std::fabs(x[j])) {
      amax = std::fabs(x[j]);
      m = x[j];
    }
  const float d = m / -8.0f;
  const float id = inverse_scale(d);
  store_scale(block, d);
  constexpr std::int64_t half = kQuantBlock / 2;
  for (std::int64_t j = 0; j < half; ++j) {
    const int lo = std::min(15, int(static_cast<std::int8_t>(x[j] * id + 8.5f)));
    const int hi = std::min(15, int(static_cast<std::int8_t>(x[j + half] * id + 8.5f)));
    block[2 + j] = std::uint8_t(lo | hi << 4);
  }
}
inline void dequantize_q4_0(const std::uint8_t* block, float* out) {
  const float d = block_scale(block);
  constexpr std::int64_t half = kQuantBlock / 2;
  for (std::int64_t j = 0; j < half; ++j) {
    out[j] = float(int(block[2 + j] & 0x0f) - 8) * d;
    out[j + half] = float(int(block[2 + j] >> 4) - 8) * d;
  }
}

// A whole row of D elements (D a multiple of 32).
inline void dequantize_row(QuantFormat format, const std::uint8_t* row, std::int64_t D, float* out) {
  if (format == QuantFormat::q8_0)
    for (std::int64_t b = 0; b < D / kQuantBlock; ++b) dequantize_q8_0(row + b * kQ8Bytes, out + b * kQuantBlock);
  else
    for (std::int64_t b = 0; b < D / kQuantBlock; ++b) dequantize_q4_0(row + b * kQ4Bytes, out + b * kQuantBlock);
}

}  // namespace fattn::quant
