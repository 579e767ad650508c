// Quantized KV caches: the views, and the quantizer and dequantizer over
// whole [B, H, L, D] arrays (one block at a time: quant/blocks.hpp).
#include "fattn/quant.hpp"

#include <cmath>
#include <limits>
#include <vector>

#include "fattn/parallel.hpp"
#include "numerics/dtype_dispatch.hpp"
#include "quant/blocks.hpp"
#include "views/validate.hpp"

namespace fattn {

const char* quant_format_name(QuantFormat format) {
  switch (format) {
    case QuantFormat::q8_0: return "q8_0";
    case QuantFormat::q4_0: return "q4_0";
    case QuantFormat::affine4: return "affine4";
    case QuantFormat::tq4: return "tq4";
  }
  return "unknown";
}

std::int64_t quant_row_bytes(QuantFormat format, std::int64_t head_dim, const char* head_dim_name) {
  require(format == QuantFormat::q8_0 || format == QuantFormat::q4_0 || format == QuantFormat::tq4, "format: '",
          quant_format_name(format), "' is not implemented yet (q8_0, q4_0 and tq4 are)");
  require(head_dim > 0 && head_dim % kQuantBlock == 0, head_dim_name,
          ": head dim D must be a positive multiple of ", kQuantBlock, " (the block size), got ", head_dim);
  if (format == QuantFormat::tq4) {
    require(quant::tq4_dim_ok(head_dim), head_dim_name,
            ": tq4 needs a head dim D that is a power of two from 32 to 512 (its Hadamard rotation), got ",
            head_dim);
    return quant::tq4_row_bytes(head_dim);
  }
  const std::int64_t block_bytes = format == QuantFormat::q8_0 ? quant::kQ8Bytes : quant::kQ4Bytes;
  std::int64_t row = 0;
  require(!__builtin_mul_overflow(head_dim / kQuantBlock, block_bytes, &row), head_dim_name, ": head dim D = ",
          head_dim, " makes a row's bytes overflow 64 bits");
  return row;
}

QuantView contiguous_quant_view(void* data, QuantFormat format, std::array<std::int64_t, 4> shape, bool writable) {
  const std::int64_t row = quant_row_bytes(format, shape[3]);
  QuantView t{data, format, shape, {}, writable};
  std::int64_t s2 = row, s1 = 0, s0 = 0;
  require(!__builtin_mul_overflow(s2, shape[2], &s1) && !__builtin_mul_overflow(s1, shape[1], &s0),
          "cache: [", shape[0], ", ", shape[1], ", ", shape[2], ", ", shape[3], "] overflows 64-bit byte offsets");
  t.stride = {s0, s1, s2};
  return t;
}

void validate_quant_view(const QuantView& t, const char* name) {
  for (int a = 0; a < 4; ++a) require(t.shape[a] > 0, name, ": every extent must be > 0, got ", t.shape[a]);
  require(t.data != nullptr, name, ": data pointer is null");
  const std::int64_t row = quant_row_bytes(t.format, t.shape[3]);
  // The farthest row's last byte must be addressable without 64-bit overflow.
  const std::uint64_t limit = std::uint64_t(std::numeric_limits<std::int64_t>::max() / 4);
  std::uint64_t reach = std::uint64_t(row);
  for (int a = 0; a < 3; ++a) {
    std::uint64_t span = 0;
    const std::uint64_t step = t.stride[a] < 0 ? std::uint64_t(0) - std::uint64_t(t.stride[a]) : std::uint64_t(t.stride[a]);
    const bool ok = !__builtin_mul_overflow(step, std::uint64_t(t.shape[a] - 1), &span) &&
                    !__builtin_add_overflow(reach, span, &reach) && reach <= limit;
    require(ok, name, ": strides [", t.stride[0], ", ", t.stride[1], ", ", t.stride[2],
            "] overflow 64-bit byte offsets");
  }
}

QuantView quant_view_over_bytes(void* data, QuantFormat format, std::int64_t head_dim,
                                const std::array<std::int64_t, 4>& byte_shape,
                                const std::array<std::int64_t, 4>& byte_stride, bool writable, const char* name) {
  const std::int64_t row = quant_row_bytes(format, head_dim);
  for (int a = 0; a < 3; ++a)
    require(byte_shape[std::size_t(a)] > 0, name, ": every extent must be > 0, got ", byte_shape[std::size_t(a)]);
  require(byte_shape[3] == row, name, ": the last axis must be ", row, " bytes (a row of ", head_dim,
          " elements in ", quant_format_name(format), "), got ", byte_shape[3]);
  require(byte_stride[3] == 1, name, ": the last axis (a row's blocks) must be contiguous (stride 1 byte), got stride ",
          byte_stride[3]);
  QuantView t{data, format, {byte_shape[0], byte_shape[1], byte_shape[2], head_dim},
              {byte_stride[0], byte_stride[1], byte_stride[2]}, writable};
  validate_quant_view(t, name);
  return t;
}

void quantize_kv(const TensorView& x, const QuantView& out) {
  validate_view(x, "x");
  quant_row_bytes(out.format, x.head_dim(), "x");  // the format, then D, named as the caller knows them
  validate_quant_view(out, "out");
  require(out.shape == x.shape, "out: shape must equal x's [", x.shape[0], ", ", x.shape[1], ", ", x.shape[2], ", ",
          x.shape[3], "], got [", out.shape[0], ", ", out.shape[1], ", ", out.shape[2], ", ", out.shape[3], "]");
  require(out.writable, "out: must be writable");
  // Rows are written by several threads: each needs bytes of its own.
  const std::int64_t row_bytes = quant_row_bytes(out.format, out.head_dim());
  require(elements_distinct({out.shape[0], out.shape[1], out.shape[2], row_bytes},
                            {out.stride[0], out.stride[1], out.stride[2], 1}),
          "out: its rows overlap (byte strides [", out.stride[0], ", ", out.stride[1], ", ", out.stride[2],
          "] for rows of ", row_bytes, " bytes); every row needs bytes of its own");
  const std::int64_t D = x.head_dim(), rows = x.batch() * x.heads() * x.length();
  const std::int64_t block_bytes = out.format == QuantFormat::q8_0 ? quant::kQ8Bytes : quant::kQ4Bytes;
  // Every value must be finite, and each block's f16 scale within range
  // (max|x| / 127 for q8_0, max|x| / 8 for q4_0, at most 65504), or for tq4
  // a row's squared norm finite (|x| <= 2^50): checked over the whole input
  // before a byte is written.
  const bool tq4 = out.format == QuantFormat::tq4;
  const float largest = tq4 ? quant::kTq4Largest : out.format == QuantFormat::q8_0 ? 65504.0f * 127.0f : 65504.0f * 8.0f;
  const char* largest_text = tq4 ? "2^50" : out.format == QuantFormat::q8_0 ? "65504 * 127" : "65504 * 8";
  const char* why = tq4 ? " (so a row's squared norm stays finite)" : " (so the block's f16 scale stays finite)";
  detail::dispatch_dtype(x.dtype, [&](auto tag) {
    using T = decltype(tag);
    for (std::int64_t r = 0; r < rows; ++r) {
      const std::int64_t l = r % x.length(), h = (r / x.length()) % x.heads(), b = r / (x.length() * x.heads());
      const T* src = x.row<const T>(b, h, l);
      for (std::int64_t d = 0; d < D; ++d) {
        const float value = widen(src[d]);
        require(std::isfinite(value) && std::fabs(value) <= largest, "x: every value must be finite with |x| <= ",
                largest_text, " for ", quant_format_name(out.format), why, ", got ", value, " at [", b, ", ", h,
                ", ", l, ", ", d, "]");
      }
    }
    parallel_for(rows, 64, [&](std::int64_t begin, std::int64_t end) {
      std::vector<float> row(static_cast<std::size_t>(D));
      for (std::int64_t r = begin; r < end; ++r) {
        const std::int64_t l = r % x.length(), h = (r / x.length()) % x.heads(), b = r / (x.length() * x.heads());
        const T* src = x.row<const T>(b, h, l);
        for (std::int64_t d = 0; d < D; ++d) row[std::size_t(d)] = widen(src[d]);
        std::uint8_t* dst = out.mutable_row(b, h, l);
        if (tq4) {
          quant::quantize_tq4_row(row.data(), D, dst);
          continue;
        }
        for (std::int64_t k = 0; k < D / kQuantBlock; ++k) {
          if (out.format == QuantFormat::q8_0)
            quant::quantize_q8_0(row.data() + k * kQuantBlock, dst + k * block_bytes);
          else
            quant::quantize_q4_0(row.data() + k * kQuantBlock, dst + k * block_bytes);
        }
      }
    });
  });
}

void dequantize_kv(const QuantView& in, const TensorView& out) {
  validate_quant_view(in, "cache");
  validate_view(out, "out");
  require_dtype(out.dtype == DType::f32, "out: dtype must be float32, got ", out.dtype);
  require(out.shape == in.shape, "out: shape must equal the cache's [", in.shape[0], ", ", in.shape[1], ", ",
          in.shape[2], ", ", in.shape[3], "]");
  detail::require_writable(out, "out");
  const std::int64_t rows = in.batch() * in.heads() * in.length();
  parallel_for(rows, 64, [&](std::int64_t begin, std::int64_t end) {
    for (std::int64_t r = begin; r < end; ++r) {
      const std::int64_t l = r % in.length(), h = (r / in.length()) % in.heads(), b = r / (in.length() * in.heads());
      float* dst = out.row<float>(b, h, l);
      quant::dequantize_row(in.format, in.row(b, h, l), in.head_dim(), dst);
      // tq4's stored values are rotated: back to x's coordinates.
      if (in.format == QuantFormat::tq4) quant::tq4_unrotate(dst, in.head_dim());
    }
  });
}

}  // namespace fattn
