#pragma once
// Quantized KV caches (issue 20): rows of blocks along D, read in place by
// the vec decode (fattn/decode.hpp). Each row (b, h, position) is
// quant_row_bytes(format, D) contiguous bytes; the blocks of a row follow
// one another along D, 32 elements per block.
//
//   q8_0: ggml's block_q8_0, 34 bytes: the f16 scale d (little-endian), then
//         32 int8 q; element i = q[i] * d (exact in f32).
//   q4_0: ggml's block_q4_0, 18 bytes: the f16 scale d, then 16 bytes of
//         nibbles, element j in the low nibble of byte j and element j + 16
//         in the high nibble; element = (nibble - 8) * d (exact in f32).
//   tq4:  mlx-native's TurboQuant 4-bit rows (D a power of two, 32 to 512):
//         D/2 bytes of centroid indices (coordinate 2i in the low nibble of
//         byte i) of the Hadamard-rotated row, then its f32 L2 norm (D = 512:
//         the two halves' RMS), D/2 + 4 (D/2 + 8) bytes. Not exact: values
//         are centroids of the rotated row; the decode reads them rotated
//         (Q rotated, output rotated back), dequantize_kv unrotated.
//   affine4: mlx-native's rotated INT4 format (reserved; not implemented
//         yet: InvalidArgument names it).
//
// docs/numerics.md, "Quantized caches", has the quantizers' rounding rules.
#include <array>
#include <cstdint>

#include "fattn/tensor.hpp"

namespace fattn {

enum class QuantFormat : std::uint8_t { q8_0 = 0, q4_0 = 1, affine4 = 2, tq4 = 3 };

inline constexpr std::int64_t kQuantBlock = 32;  // elements per block along D

// "q8_0", "q4_0", "affine4", "tq4" ("unknown" for any other code).
const char* quant_format_name(QuantFormat format);
// Bytes per row of D elements: q8_0 34 * D / 32, q4_0 18 * D / 32, tq4
// D / 2 + 4 (D = 512: + 8).
// InvalidArgument for a format not implemented (naming "format") or D not a
// positive multiple of 32 (naming `head_dim_name`: "head_dim", or "x" when
// D is an array's last extent).
std::int64_t quant_row_bytes(QuantFormat format, std::int64_t head_dim, const char* head_dim_name = "head_dim");

// A quantized [B, H, L, D] array over caller-owned bytes. stride: bytes from
// one batch, head, position to the next (any value; a row's bytes are
// contiguous). Nothing is owned or copied.
struct QuantView {
  void* data = nullptr;
  QuantFormat format = QuantFormat::q8_0;
  std::array<std::int64_t, 4> shape{};   // [B, H, L, D], logical elements
  std::array<std::int64_t, 3> stride{};  // bytes
  bool writable = false;
  std::int64_t batch() const { return shape[0]; }
  std::int64_t heads() const { return shape[1]; }
  std::int64_t length() const { return shape[2]; }
  std::int64_t head_dim() const { return shape[3]; }
  const std::uint8_t* row(std::int64_t b, std::int64_t h, std::int64_t l) const {
    return static_cast<const std::uint8_t*>(data) + b * stride[0] + h * stride[1] + l * stride[2];
  }
  std::uint8_t* mutable_row(std::int64_t b, std::int64_t h, std::int64_t l) const {
    return static_cast<std::uint8_t*>(data) + b * stride[0] + h * stride[1] + l * stride[2];
  }
};

// A dense [B, H, L, D] QuantView over `data` (rows back to back).
QuantView contiguous_quant_view(void* data, QuantFormat format, std::array<std::int64_t, 4> shape, bool writable);
// Checks what the kernels rely on: non-null data, a known and implemented
// format, positive extents, D a multiple of 32, every row's byte range in
// 64 bits. `name` is the argument's name in messages.
void validate_quant_view(const QuantView& t, const char* name);
// The QuantView of an array of bytes [B, H, L, W] with byte strides (how
// Python and other callers hold a cache: one row's blocks along the last
// axis), for rows of `head_dim` elements: W must equal
// quant_row_bytes(format, head_dim) and the last axis be contiguous (stride
// 1), then validate_quant_view. `name` names the array in messages.
QuantView quant_view_over_bytes(void* data, QuantFormat format, std::int64_t head_dim,
                                const std::array<std::int64_t, 4>& byte_shape,
                                const std::array<std::int64_t, 4>& byte_stride, bool writable, const char* name);

// x [B, H, L, D] (f32, f16 or bf16; D a multiple of 32) into `out` (same
// shape, writable, rows that do not overlap), block by block with ggml's
// reference rules. Every value must be finite and small enough for the
// block's f16 scale (|x| <= 65504 * 127 for q8_0, 65504 * 8 for q4_0; 2^50 for tq4):
// checked before any byte is written.
void quantize_kv(const TensorView& x, const QuantView& out);
// The f32 values of a quantized array into `out` (f32, same shape,
// writable): exact for q8_0 and q4_0; for tq4 the rotated centroids turned
// back to x's coordinates (the inverse transform rounds).
void dequantize_kv(const QuantView& in, const TensorView& out);

}  // namespace fattn
