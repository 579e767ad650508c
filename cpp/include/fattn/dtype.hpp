#pragma once
// Element types and their conversions to and from f32.
//
// bf16 and f16 are stored as 16-bit patterns. Narrowing rounds to nearest,
// ties to even, in integer arithmetic so that the result does not depend on
// the floating-point environment (FTZ/DAZ, rounding mode) of the process.
// NaN stays NaN (quiet, sign and leading payload bits kept); values beyond
// the largest finite value round to infinity as IEEE 754 says; subnormals
// are produced and read exactly.
#include <cstdint>
#include <iosfwd>
#include <cstring>
#include <string>

namespace fattn {

enum class DType : std::uint8_t { f32 = 0, f16 = 1, bf16 = 2 };

struct bfloat16 { std::uint16_t bits; };
struct float16 { std::uint16_t bits; };

std::string dtype_name(DType dt);   // "float32", "float16", "bfloat16" ("unknown(<code>)" otherwise)
// The same name, streamed: messages pass the DType itself, so the name is
// only formatted when a check fails (a std::string per check cost small calls).
std::ostream& operator<<(std::ostream& os, DType dt);
std::int64_t dtype_size(DType dt);  // bytes per element (InvalidDType for an unknown code)
bool is_valid_dtype(DType dt);      // one of the three enumerators

inline std::uint32_t f32_bits(float x) { std::uint32_t u; std::memcpy(&u, &x, 4); return u; }
inline float f32_from_bits(std::uint32_t u) { float x; std::memcpy(&x, &u, 4); return x; }

// --- bf16: the top half of an f32 ------------------------------------------
inline float bf16_to_f32(std::uint16_t h) { return f32_from_bits(std::uint32_t(h) << 16); }

inline std::uint16_t f32_to_bf16(float x) {
  std::uint32_t u = f32_bits(x);
  if ((u & 0x7fffffffu) > 0x7f800000u) return std::uint16_t((u >> 16) | 0x0040u);  // quiet NaN
  u += 0x7fffu + ((u >> 16) & 1u);  // ties to even; carries into the exponent (and to inf) as it must
  return std::uint16_t(u >> 16);
}

// --- f16: IEEE binary16 ----------------------------------------------------
inline float f16_to_f32(std::uint16_t h) {
  const std::uint32_t sign = std::uint32_t(h & 0x8000u) << 16;
  const std::uint32_t exp = (h >> 10) & 0x1fu;
  const std::uint32_t man = h & 0x3ffu;
  if (exp == 0x1f) return f32_from_bits(sign | 0x7f800000u | (man << 13));  // inf / NaN
  if (exp != 0) return f32_from_bits(sign | ((exp + 112u) << 23) | (man << 13));
  if (man == 0) return f32_from_bits(sign);
  // Subnormal: man * 2^-24. Normalise in integers (no FP op, so DAZ cannot flush it).
  int shift = 0;
  std::uint32_t m = man;
  while ((m & 0x400u) == 0) { m <<= 1; ++shift; }
  return f32_from_bits(sign | std::uint32_t(113 - shift) << 23 | ((m & 0x3ffu) << 13));
}

inline std::uint16_t f32_to_f16(float x) {
  const std::uint32_t u = f32_bits(x);
  const std::uint16_t sign = std::uint16_t((u >> 16) & 0x8000u);
  const std::uint32_t a = u & 0x7fffffffu;
  if (a > 0x7f800000u) return std::uint16_t(sign | 0x7e00u | ((a >> 13) & 0x3ffu));  // quiet NaN
  if (a >= 0x477ff000u) return std::uint16_t(sign | 0x7c00u);  // >= 65520 rounds to inf (ties to even)
  if (a >= 0x38800000u) {  // normal f16: rebias the exponent, round away 13 mantissa bits
    const std::uint32_t r = a - (std::uint32_t(127 - 15) << 23);
    return std::uint16_t(sign | ((r + 0xfffu + ((r >> 13) & 1u)) >> 13));
  }
  if (a <= 0x33000000u) return sign;  // <= 2^-25: rounds to (signed) zero
  // Subnormal f16: the value in units of 2^-24 is significand * 2^(e+1), e in [-25, -15].
  const int e = int(a >> 23) - 127;
  const std::uint32_t sig = (a & 0x7fffffu) | 0x800000u;
  const int s = -(e + 1);  // 14..24
  const std::uint32_t q = (sig + ((1u << (s - 1)) - 1u) + ((sig >> s) & 1u)) >> s;
  return std::uint16_t(sign | q);
}

// --- typed helpers the kernels use --------------------------------------------
inline float widen(float x) { return x; }
inline float widen(bfloat16 x) { return bf16_to_f32(x.bits); }
inline float widen(float16 x) { return f16_to_f32(x.bits); }

template <class T> T narrow(float x);
template <> inline float narrow<float>(float x) { return x; }
template <> inline bfloat16 narrow<bfloat16>(float x) { return bfloat16{f32_to_bf16(x)}; }
template <> inline float16 narrow<float16>(float x) { return float16{f32_to_f16(x)}; }

// rT(x): x rounded to T and read back, the rounding a kernel does when it
// stores an f32 value into a T register or buffer.
template <class T> inline float round_to(float x) { return widen(narrow<T>(x)); }

template <class T> struct dtype_of;
template <> struct dtype_of<float> { static constexpr DType value = DType::f32; };
template <> struct dtype_of<float16> { static constexpr DType value = DType::f16; };
template <> struct dtype_of<bfloat16> { static constexpr DType value = DType::bf16; };

// Bulk conversions (used by the bindings' tests and by callers who stage data).
// InvalidDType for an unknown type code, InvalidArgument for n < 0 or a null
// pointer with n > 0.
void to_f32(DType src_type, const void* src, float* dst, std::int64_t n);
void from_f32(DType dst_type, const float* src, void* dst, std::int64_t n);

}  // namespace fattn
