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
#include "numerics/tree_sum.hpp"

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

// --- tq4: mlx-native's TurboQuant 4-bit rows (docs/numerics.md, "Quantized caches") ---------
// A row is rotated by a normalized Walsh-Hadamard transform (for D = 256 and
// 512 after a fixed sign flip per coordinate: the randomized Hadamard of
// mlx-native's hadamard_quantize_kv_fast), scaled to unit variance by its L2
// norm (D = 512: each half by its RMS) and each coordinate stored as the
// index of the nearest of 16 Lloyd-Max centroids for N(0, 1). Row layout:
// D/2 bytes of nibbles (coordinate 2i in the low nibble of byte i, 2i+1 in
// the high one), then the f32 norm (D = 512: the two half RMS values),
// little-endian. The decode works in the rotated domain: Q is rotated the
// same way, the values are centroid x norm scale, and the output is rotated
// back.

// The Lloyd-Max centroids of N(0, 1) at 4 bits and the midpoints between them.
inline constexpr float kTq4Codebook[16] = {-2.7325896f, -2.0690172f, -1.6180464f, -1.2562312f,
                                           -0.9423405f, -0.6567591f, -0.3880483f, -0.1283950f,
                                           0.1283950f,  0.3880483f,  0.6567591f,  0.9423405f,
                                           1.2562312f,  1.6180464f,  2.0690172f,  2.7325896f};
inline constexpr float kTq4Boundaries[15] = {-2.4008034f, -1.8435318f, -1.4371388f, -1.0992859f, -0.7995498f,
                                             -0.5224037f, -0.2582217f, 0.0f,        0.2582217f,  0.5224037f,
                                             0.7995498f,  1.0992859f,  1.4371388f,  1.8435318f,  2.4008034f};
// The sign of coordinate j for D = 256 / 512: bit j % 8 of byte j / 8 set
// means -1 (D = 256 uses the first 32 bytes).
inline constexpr std::uint8_t kTq4Signs[64] = {
    0xa7, 0x3b, 0x91, 0xf4, 0x6d, 0xc2, 0x58, 0x0e, 0xb3, 0x7f, 0x24, 0xd6, 0x89, 0x45, 0xea, 0x1c,
    0x63, 0xaf, 0xd8, 0x52, 0x97, 0x0b, 0xe1, 0x3d, 0x76, 0xc4, 0x19, 0xfe, 0x4a, 0x85, 0x2c, 0xdb,
    0xd3, 0x4e, 0xa8, 0x17, 0x9c, 0x5b, 0xe6, 0x31, 0x72, 0xb9, 0x0d, 0xf5, 0x43, 0x8a, 0x6e, 0xc7,
    0x58, 0x2f, 0x94, 0xe1, 0xb6, 0x3d, 0x0a, 0x7c, 0xc5, 0x61, 0xd8, 0x4f, 0xa3, 0x97, 0x1e, 0x85};
inline constexpr std::int64_t kTq4MaxDim = 512;
// The largest |x| tq4 takes: a row's squared norm then stays finite.
inline constexpr float kTq4Largest = 1125899906842624.0f;  // 2^50

inline bool tq4_dim_ok(std::int64_t D) { return D >= 32 && D <= kTq4MaxDim && (D & (D - 1)) == 0; }
inline bool tq4_signed(std::int64_t D) { return D >= 256; }  // the randomized form (D = 256, 512)
inline std::int64_t tq4_norms(std::int64_t D) { return D == 512 ? 2 : 1; }
inline std::int64_t tq4_row_bytes(std::int64_t D) { return D / 2 + 4 * tq4_norms(D); }
inline float tq4_inv_sqrt(std::int64_t D) { return float(1.0 / std::sqrt(double(D))); }  // correctly rounded

inline void tq4_flip_signs(float* x, std::int64_t D) {
  if (!tq4_signed(D)) return;
  for (std::int64_t j = 0; j < D; ++j)
    if ((kTq4Signs[j >> 3] >> (j & 7)) & 1) x[j] = -x[j];
}
// The normalized Walsh-Hadamard transform in place: butterflies (a + b, a - b)
// over pairs (j, j + h) for h = 1, 2, 4, ..., then every element times
// f32(1/sqrt(D)). Its own inverse up to rounding.
inline void tq4_fwht(float* x, std::int64_t D) {
  for (std::int64_t h = 1; h < D; h *= 2)
    for (std::int64_t i = 0; i < D; i += 2 * h)
      for (std::int64_t j = i; j < i + h; ++j) {
        const float a = x[j], b = x[j + h];
        x[j] = a + b;
        x[j + h] = a - b;
      }
  const float s = tq4_inv_sqrt(D);
  for (std::int64_t j = 0; j < D; ++j) x[j] = x[j] * s;
}
// Into the rotated domain (signs, then the transform) and back (the
// transform, then signs): how the decode turns Q and its output.
inline void tq4_rotate(float* x, std::int64_t D) {
  tq4_flip_signs(x, D);
  tq4_fwht(x, D);
}
inline void tq4_unrotate(float* x, std::int64_t D) {
  tq4_fwht(x, D);
  tq4_flip_signs(x, D);
}

// The sum of squares of n rotated values in the order of mlx-native's
// kernels. D = 256 / 512 (`per_lane` > 0): each of 32 lanes adds its run of
// D/32 consecutive squares, then the lanes meet in a tree (for a half of
// D = 512, the other half's lanes add +0, which changes nothing, so a tree
// over its 16 lanes). Smaller D (`per_lane` = 0): the shared-memory kernel's
// strided halving, s[i] += s[i + stride] for stride n/2, n/4, ..., 1.
inline float tq4_square_sum(const float* r, std::int64_t n, std::int64_t per_lane) {
  float s[kTq4MaxDim];
  if (per_lane > 0) {
    const std::int64_t lanes = n / per_lane;
    for (std::int64_t t = 0; t < lanes; ++t) {
      float acc = 0.0f;
      for (std::int64_t i = 0; i < per_lane; ++i) acc = acc + r[t * per_lane + i] * r[t * per_lane + i];
      s[t] = acc;
    }
    return tree_sum(s, lanes);
  }
  for (std::int64_t i = 0; i < n; ++i) s[i] = r[i] * r[i];
  for (std::int64_t stride = n / 2; stride > 0; stride /= 2)
    for (std::int64_t i = 0; i < stride; ++i) s[i] = s[i] + s[i + stride];
  return s[0];
}

inline std::uint8_t tq4_index(float u) {  // the count of boundaries below u (the nearest centroid)
  std::uint8_t i = 0;
  for (float b : kTq4Boundaries) i += u > b ? 1 : 0;
  return i;
}

// One row of D values (finite, |x| <= kTq4Largest) into tq4_row_bytes(D) bytes.
inline void quantize_tq4_row(const float* x, std::int64_t D, std::uint8_t* row) {
  float r[kTq4MaxDim];
  std::copy(x, x + D, r);
  tq4_rotate(r, D);
  float norms[2] = {0.0f, 0.0f};
  if (D == 512) {  // each half by its RMS: u = r * (1/rms)
    for (int half = 0; half < 2; ++half) {
      const float rms = std::sqrt(tq4_square_sum(r + 256 * half, 256, 16) / 256.0f);
      norms[half] = rms;
      const float scale = rms > 1.0e-10f ? 1.0f / rms : 0.0f;
      for (std::int64_t j = 256 * half; j < 256 * (half + 1); ++j) r[j] = r[j] * scale;
    }
  } else if (D == 256) {  // u = r * ((1/norm) * 16)
    const float norm = std::sqrt(tq4_square_sum(r, D, 8));
    norms[0] = norm;
    const float scale = (norm > 1.0e-10f ? 1.0f / norm : 0.0f) * 16.0f;
    for (std::int64_t j = 0; j < D; ++j) r[j] = r[j] * scale;
  } else {  // the shared-memory kernel: u = (r / norm) * sqrt(D)
    const float norm = std::sqrt(tq4_square_sum(r, D, 0));
    norms[0] = norm;
    const float root = float(std::sqrt(double(D)));
    for (std::int64_t j = 0; j < D; ++j) r[j] = norm > 1.0e-10f ? (r[j] / norm) * root : 0.0f;
  }
  for (std::int64_t j = 0; j < D; j += 2) row[j / 2] = std::uint8_t(tq4_index(r[j]) | tq4_index(r[j + 1]) << 4);
  std::memcpy(row + D / 2, norms, std::size_t(4 * tq4_norms(D)));
}

// The scale of a row's codes in the rotated domain: norm * f32(1/sqrt(D)),
// or for D = 512 each half's RMS as stored.
inline void tq4_code_scales(const std::uint8_t* row, std::int64_t D, float* scales) {
  float norms[2] = {0.0f, 0.0f};
  std::memcpy(norms, row + D / 2, std::size_t(4 * tq4_norms(D)));
  if (D == 512) {
    scales[0] = norms[0];
    scales[1] = norms[1];
  } else {
    scales[0] = scales[1] = norms[0] * tq4_inv_sqrt(D);
  }
}
// A row's values in the rotated domain, as the decode reads them:
// centroid[index] * scale.
inline void dequantize_tq4_rotated(const std::uint8_t* row, std::int64_t D, float* out) {
  float scales[2];
  tq4_code_scales(row, D, scales);
  for (std::int64_t j = 0; j < D; j += 2) {
    const float s = scales[j >= 256 ? 1 : 0];
    out[j] = kTq4Codebook[row[j / 2] & 0x0f] * s;
    out[j + 1] = kTq4Codebook[row[j / 2] >> 4] * s;
  }
}

// A whole row of D elements (D a multiple of 32) as the decode reads it
// (tq4: in the rotated domain).
inline void dequantize_row(QuantFormat format, const std::uint8_t* row, std::int64_t D, float* out) {
  if (format == QuantFormat::tq4) return dequantize_tq4_rotated(row, D, out);
  if (format == QuantFormat::q8_0)
    for (std::int64_t b = 0; b < D / kQuantBlock; ++b) dequantize_q8_0(row + b * kQ8Bytes, out + b * kQuantBlock);
  else
    for (std::int64_t b = 0; b < D / kQuantBlock; ++b) dequantize_q4_0(row + b * kQ4Bytes, out + b * kQuantBlock);
}

}  // namespace fattn::quant
