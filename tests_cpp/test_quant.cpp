// Quantized caches (fattn/quant.hpp): the bytes of ggml's block_q8_0 and
// block_q4_0 written out by hand from the published definitions (a
// little-endian f16 scale, then the quants) for blocks whose arithmetic is
// exact or known to the bit: ties at the rounding boundaries, outliers, the
// first-of-equal-magnitude rule, zero and tiny blocks; exact dequantization;
// strided views; every bad argument named, with nothing written.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "fattn/fattn.hpp"

using namespace fattn;

namespace {

constexpr std::int64_t kQ8 = 34, kQ4 = 18;

// One block's expected bytes: the f16 scale's bits (little-endian), then the body.
std::vector<std::uint8_t> block_bytes(std::uint16_t scale_bits, const std::vector<std::uint8_t>& body) {
  std::vector<std::uint8_t> b(body.size() + 2);
  b[0] = std::uint8_t(scale_bits & 0xff);
  b[1] = std::uint8_t(scale_bits >> 8);
  for (std::size_t i = 0; i < body.size(); ++i) b[i + 2] = body[i];
  return b;
}
std::vector<std::uint8_t> q8_body(const std::vector<int>& q) {
  std::vector<std::uint8_t> b;
  for (int v : q) b.push_back(std::uint8_t(std::int8_t(v)));
  return b;
}
// q4_0: byte j holds element j (low nibble) and element j + 16 (high nibble).
std::vector<std::uint8_t> q4_body(const std::vector<int>& q) {
  std::vector<std::uint8_t> b(16);
  for (int j = 0; j < 16; ++j) b[std::size_t(j)] = std::uint8_t(q[std::size_t(j)] | q[std::size_t(j + 16)] << 4);
  return b;
}

// Quantizes one row of D f32 values into fresh bytes (filled with 0xAB first).
std::vector<std::uint8_t> quantize_row(const std::vector<float>& x, QuantFormat f) {
  const std::int64_t D = std::int64_t(x.size());
  std::vector<std::uint8_t> out(std::size_t(quant_row_bytes(f, D)), 0xAB);
  quantize_kv(contiguous_view(const_cast<float*>(x.data()), DType::f32, {1, 1, 1, D}, false),
              contiguous_quant_view(out.data(), f, {1, 1, 1, D}, true));
  return out;
}
std::vector<float> dequantize_row(const std::vector<std::uint8_t>& bytes, QuantFormat f, std::int64_t D) {
  std::vector<float> out(std::size_t(D), -1.0f);
  dequantize_kv(contiguous_quant_view(const_cast<std::uint8_t*>(bytes.data()), f, {1, 1, 1, D}, false),
                contiguous_view(out.data(), DType::f32, {1, 1, 1, D}, true));
  return out;
}

template <class F>
std::string message_of(F&& call) {
  try {
    call();
  } catch (const InvalidArgument& e) {
    return e.what();
  }
  return "(no exception)";
}

TEST(QuantFormat, RowBytesAndNames) {
  EXPECT_EQ(quant_row_bytes(QuantFormat::q8_0, 32), 34);
  EXPECT_EQ(quant_row_bytes(QuantFormat::q8_0, 128), 4 * 34);
  EXPECT_EQ(quant_row_bytes(QuantFormat::q4_0, 32), 18);
  EXPECT_EQ(quant_row_bytes(QuantFormat::q4_0, 256), 8 * 18);
  EXPECT_STREQ(quant_format_name(QuantFormat::q4_0), "q4_0");
  EXPECT_STREQ(quant_format_name(QuantFormat(9)), "unknown");
  for (QuantFormat f : {QuantFormat::affine4, QuantFormat(9)})
    EXPECT_NE(message_of([&] { quant_row_bytes(f, 64); }).find("format: '"), std::string::npos);
  EXPECT_NE(message_of([&] { quant_row_bytes(QuantFormat::affine4, 64); }).find("'affine4' is not implemented yet"),
            std::string::npos);
  EXPECT_EQ(quant_row_bytes(QuantFormat::tq4, 32), 16 + 4);
  EXPECT_EQ(quant_row_bytes(QuantFormat::tq4, 256), 128 + 4);
  EXPECT_EQ(quant_row_bytes(QuantFormat::tq4, 512), 256 + 8);  // two half norms
  for (std::int64_t d : {96, 1024, 160})
    EXPECT_NE(message_of([&] { quant_row_bytes(QuantFormat::tq4, d); }).find("head_dim: tq4 needs a head dim D that is a power of two"),
              std::string::npos);
  // regression (review): D / 32 * 34 overflowed int64 (UB) for D near 2^63.
  const std::int64_t huge = std::numeric_limits<std::int64_t>::max() / 32 * 32;
  EXPECT_NE(message_of([&] { quant_row_bytes(QuantFormat::q8_0, huge); }).find("head_dim: head dim D = "),
            std::string::npos);
  EXPECT_EQ(quant_row_bytes(QuantFormat::q4_0, std::int64_t(1) << 62), (std::int64_t(1) << 57) * 18);
  for (std::int64_t D : {0, -32, 16, 48, 33}) {
    EXPECT_NE(message_of([&] { quant_row_bytes(QuantFormat::q8_0, D); })
                  .find("head_dim: head dim D must be a positive multiple of 32"),
              std::string::npos);
    EXPECT_NE(message_of([&] { quant_row_bytes(QuantFormat::q4_0, D, "x"); }).find("x: head dim D"),
              std::string::npos);
  }
}

// d = 127 / 127 = 1 (f16 0x3c00), 1/d = 1: q = x rounded half away from zero.
TEST(QuantQ8, TiesRoundAwayFromZero) {
  std::vector<float> x(32, 0.0f);
  const float values[] = {127.0f, 0.5f, -0.5f, 1.5f, -1.5f, 2.5f, -2.5f, 126.5f, -126.5f, 0.49999997f,
                          -0.49999997f, 3.25f, -3.75f, 100.0f, -127.0f, 64.5f};
  const int expected[] = {127, 1, -1, 2, -2, 3, -3, 127, -127, 0, 0, 3, -4, 100, -127, 65};
  std::vector<int> q(32, 0);
  for (int j = 0; j < 16; ++j) {
    x[std::size_t(j * 2)] = values[j];  // spread out, so positions matter too
    q[std::size_t(j * 2)] = expected[j];
  }
  EXPECT_EQ(quantize_row(x, QuantFormat::q8_0), block_bytes(0x3c00, q8_body(q)));
}

// d = 254 / 127 = 2 (f16 0x4000), 1/d = 0.5 exactly: x = 5 gives 2.5 -> 3.
TEST(QuantQ8, TiesAtAnotherScale) {
  std::vector<float> x(32, 1.0f);  // 0.5 -> 1
  x[7] = -254.0f;                  // the outlier is negative: d stays positive
  x[8] = 5.0f;
  x[9] = -5.0f;
  x[10] = 3.0f;  // 1.5 -> 2
  std::vector<int> q(32, 1);
  q[7] = -127, q[8] = 3, q[9] = -3, q[10] = 2;
  EXPECT_EQ(quantize_row(x, QuantFormat::q8_0), block_bytes(0x4000, q8_body(q)));
}

// One large outlier: d = 1270 / 127 = 10 (f16 0x4900); 1/d = 0.1f, so
// 5 * 0.1f rounds to 0.5 in f32 and then away from zero to 1; 4 -> 0.4 -> 0.
TEST(QuantQ8, OneOutlierPositiveAndNegative) {
  for (float sign : {1.0f, -1.0f}) {
    std::vector<float> x(32, 4.0f);
    x[31] = sign * 1270.0f;
    x[0] = 5.0f;
    x[1] = -5.0f;
    x[2] = 15.0f;   // 1.5 -> 2
    x[3] = 635.0f;  // 63.5 -> 64
    std::vector<int> q(32, 0);
    q[31] = int(sign) * 127, q[0] = 1, q[1] = -1, q[2] = 2, q[3] = 64;
    EXPECT_EQ(quantize_row(x, QuantFormat::q8_0), block_bytes(0x4900, q8_body(q))) << "sign " << sign;
  }
}

// m = -8 first (d = -8 / -8 = 1, f16 0x3c00; 1/d = 1): x + 8.5 truncated.
// x = q - 8 lands on q + 0.5; x = +-0.5 lands exactly on 9 and 8;
// 0.49999997 + 8.5 rounds (f32) up to 9.0 before the truncation.
TEST(QuantQ4, TruncationAtIntegersAndNibbleOrder) {
  std::vector<float> x(32);
  std::vector<int> q(32);
  for (int j = 0; j < 32; ++j) {
    q[std::size_t(j)] = (j * 7 + 3) % 16;  // every nibble value, in no simple order
    x[std::size_t(j)] = float(q[std::size_t(j)] - 8);
  }
  x[0] = -8.0f, q[0] = 0;  // the first of largest magnitude (others -8 come later)
  x[5] = 0.5f, q[5] = 9;
  x[6] = -0.5f, q[6] = 8;
  x[20] = 0.49999997f, q[20] = 9;
  x[21] = -0.49999997f, q[21] = 8;
  x[22] = 7.5f, q[22] = 15;  // 16 clipped
  x[23] = 7.0f, q[23] = 15;  // 15.5
  x[24] = -7.5f, q[24] = 1;
  x[25] = 1.5f, q[25] = 10;
  EXPECT_EQ(quantize_row(x, QuantFormat::q4_0), block_bytes(0x3c00, q4_body(q)));
}

// x * (1/d) + 8.5 is a rounded product, then a rounded sum (as ggml's C
// reference compiles without contraction): m = -24 gives d = 3 (0x4200),
// 1/d = 0.33333334f; -22.5 * 1/d = -7.50000022 rounds to -7.5, + 8.5 = 1.0
// -> 1. One fused multiply-add would give 0.99999976 -> 0.
TEST(QuantQ4, ProductThenSumTwoRoundings) {
  std::vector<float> x(32, 0.0f);
  std::vector<int> q(32, 8);
  x[0] = -24.0f, q[0] = 0;
  x[1] = -22.5f, q[1] = 1;
  x[17] = 22.5f, q[17] = 16 - 1;  // 7.5 + 8.5 = 16 -> 15
  EXPECT_EQ(quantize_row(x, QuantFormat::q4_0), block_bytes(0x4200, q4_body(q)));
}

// +m and -m both present: the first one sets d's sign. +8 first: d = -1
// (0xbc00), 1/d = -1, so +8 -> 0.5 -> 0 and -8 -> 16.5 -> 15 (clipped);
// -8 first: d = 1 (0x3c00), -8 -> 0, +8 -> 15.
TEST(QuantQ4, FirstOfEqualMagnitudes) {
  std::vector<float> x(32, 0.0f);
  std::vector<int> q(32, 8);
  x[3] = 8.0f, x[19] = -8.0f;
  q[3] = 0, q[19] = 15;
  EXPECT_EQ(quantize_row(x, QuantFormat::q4_0), block_bytes(0xbc00, q4_body(q)));
  x[3] = -8.0f, x[19] = 8.0f;
  EXPECT_EQ(quantize_row(x, QuantFormat::q4_0), block_bytes(0x3c00, q4_body(q)));
  // A one-outlier block: m = -1600 -> d = 200 (0x5a40); 1/d = 0.005f; 100 * 0.005f + 8.5 = 9 -> 9.
  std::vector<float> y(32, 100.0f);
  y[9] = -1600.0f;
  std::vector<int> qy(32, 9);
  qy[9] = 0;
  EXPECT_EQ(quantize_row(y, QuantFormat::q4_0), block_bytes(0x5a40, q4_body(qy)));
}

// All zeros: q8_0 d = +0 and q = 0; q4_0 m keeps its initial +0, so d =
// 0 / -8 = -0 (f16 0x8000) and every nibble is 8, whatever zeros' signs.
TEST(QuantBlocks, ZeroBlocks) {
  for (float z : {0.0f, -0.0f}) {
    const std::vector<float> x(64, z);
    const auto b8 = block_bytes(0x0000, q8_body(std::vector<int>(32, 0)));
    const auto b4 = block_bytes(0x8000, q4_body(std::vector<int>(32, 8)));
    std::vector<std::uint8_t> e8 = b8, e4 = b4;
    e8.insert(e8.end(), b8.begin(), b8.end());
    e4.insert(e4.end(), b4.begin(), b4.end());
    EXPECT_EQ(quantize_row(x, QuantFormat::q8_0), e8);
    EXPECT_EQ(quantize_row(x, QuantFormat::q4_0), e4);
  }
}

// Blocks so small that 1/d overflows f32 (ggml converts inf/NaN to an
// integer there, undefined in C): fattn writes an all-zero block, whose f16
// scale is 0 anyway. Just above, 1/d is finite and q is ggml's.
TEST(QuantBlocks, TinyBlocks) {
  std::vector<float> x(32, 0.0f);
  x[4] = 1e-39f;  // subnormal; d = 1e-39 / 127, 1/d = inf
  x[5] = -3e-40f;
  EXPECT_EQ(quantize_row(x, QuantFormat::q8_0), block_bytes(0x0000, q8_body(std::vector<int>(32, 0))));
  // q4_0: m = 1e-39 -> d = -1.25e-40 -> f16 -0; nibbles 8.
  EXPECT_EQ(quantize_row(x, QuantFormat::q4_0), block_bytes(0x8000, q4_body(std::vector<int>(32, 8))));
  // amax = 127 * 2^-127: d = 2^-127 (subnormal, exact), 1/d = 2^127 finite: q = 127, scale rounds to 0.
  std::vector<float> y(32, 0.0f);
  y[0] = std::ldexp(127.0f, -127);
  std::vector<int> q(32, 0);
  q[0] = 127;
  EXPECT_EQ(quantize_row(y, QuantFormat::q8_0), block_bytes(0x0000, q8_body(q)));
  // Dequantized, all of them are zeros.
  for (const auto& v : dequantize_row(quantize_row(y, QuantFormat::q8_0), QuantFormat::q8_0, 32)) EXPECT_EQ(v, 0.0f);
}

// The largest values the f16 scale holds are accepted (d = 65504, 0x7bff);
// the next float above is rejected, naming x and the position.
TEST(QuantBlocks, ScaleRangeEdges) {
  std::vector<float> x(32, 0.0f);
  x[2] = 65504.0f * 127.0f;
  auto b = quantize_row(x, QuantFormat::q8_0);
  EXPECT_EQ(b[0], 0xff);
  EXPECT_EQ(b[1], 0x7b);
  EXPECT_EQ(dequantize_row(b, QuantFormat::q8_0, 32)[2], 65504.0f * 127.0f);
  x[2] = std::nextafter(65504.0f * 127.0f, INFINITY);
  std::vector<std::uint8_t> out(34, 0xAB);
  const std::string msg = message_of([&] {
    quantize_kv(contiguous_view(x.data(), DType::f32, {1, 1, 1, 32}, false),
                contiguous_quant_view(out.data(), QuantFormat::q8_0, {1, 1, 1, 32}, true));
  });
  EXPECT_NE(msg.find("x: every value must be finite with |x| <= 65504 * 127 for q8_0"), std::string::npos) << msg;
  EXPECT_NE(msg.find("at [0, 0, 0, 2]"), std::string::npos) << msg;
  EXPECT_EQ(out, std::vector<std::uint8_t>(34, 0xAB));
  x[2] = -65504.0f * 8.0f;  // q4_0: m = -524032, d = 65504
  b = quantize_row(x, QuantFormat::q4_0);
  EXPECT_EQ(b[0], 0xff);
  EXPECT_EQ(b[1], 0x7b);
  x[2] = 65504.0f * 8.0f;  // d = -65504
  b = quantize_row(x, QuantFormat::q4_0);
  EXPECT_EQ(b[1], 0xfb);
  x[2] = std::nextafter(65504.0f * 8.0f, INFINITY);
  EXPECT_NE(message_of([&] { quantize_row(x, QuantFormat::q4_0); }).find("65504 * 8 for q4_0"), std::string::npos);
}

// Dequantized values are q * d with d the f16 scale, exactly (checked in
// double), for random blocks and for every int8 / nibble value.
TEST(QuantBlocks, DequantizeIsExact) {
  std::uint32_t s = 12345;
  auto next = [&] { return s = s * 1664525u + 1013904223u; };
  for (QuantFormat f : {QuantFormat::q8_0, QuantFormat::q4_0}) {
    const std::int64_t D = 128, bytes = quant_row_bytes(f, D), per = f == QuantFormat::q8_0 ? kQ8 : kQ4;
    std::vector<std::uint8_t> raw(static_cast<std::size_t>(bytes));
    for (int trial = 0; trial < 200; ++trial) {
      for (auto& b : raw) b = std::uint8_t(next() >> 24);
      for (std::int64_t k = 0; k < D / 32; ++k) raw[std::size_t(k * per + 1)] &= 0x7b;  // finite scales
      const auto got = dequantize_row(raw, f, D);
      for (std::int64_t j = 0; j < D; ++j) {
        const std::uint8_t* block = raw.data() + j / 32 * per;
        const double d = double(f16_to_f32(std::uint16_t(block[0] | block[1] << 8)));
        const int i = int(j % 32);
        const int q = f == QuantFormat::q8_0 ? int(std::int8_t(block[2 + i]))
                                             : (i < 16 ? block[2 + i] & 15 : block[2 + i - 16] >> 4) - 8;
        ASSERT_EQ(double(got[std::size_t(j)]), double(q) * d) << "element " << j;
      }
    }
  }
  // An inf or NaN scale in raw bytes reads back as inf or NaN (no check on bytes).
  std::vector<std::uint8_t> inf_block = block_bytes(0x7c00, q8_body(std::vector<int>(32, 1)));
  EXPECT_TRUE(std::isinf(dequantize_row(inf_block, QuantFormat::q8_0, 32)[0]));
}

// f16 and bf16 inputs give the bytes of their exact f32 widening; strided
// and negative-stride byte views give the dense view's bytes; the thread
// count changes nothing.
TEST(QuantKv, DtypesStridesThreads) {
  const std::array<std::int64_t, 4> shape{2, 3, 5, 64};
  const std::int64_t n = 2 * 3 * 5 * 64;
  std::vector<float> x(static_cast<std::size_t>(n));
  std::uint32_t s = 7;
  for (auto& v : x) {
    s = s * 1664525u + 1013904223u;
    v = float(std::int32_t(s) >> 8) / float(1 << 20);
  }
  for (QuantFormat f : {QuantFormat::q8_0, QuantFormat::q4_0}) {
    const std::int64_t row = quant_row_bytes(f, 64), rows = 2 * 3 * 5;
    std::vector<std::uint8_t> dense(static_cast<std::size_t>(rows * row));
    quantize_kv(contiguous_view(x.data(), DType::f32, shape, false),
                contiguous_quant_view(dense.data(), f, shape, true));
    for (DType dt : {DType::f16, DType::bf16}) {
      std::vector<std::uint16_t> narrow(static_cast<std::size_t>(n));
      from_f32(dt, x.data(), narrow.data(), n);
      std::vector<float> wide(static_cast<std::size_t>(n));
      to_f32(dt, narrow.data(), wide.data(), n);
      std::vector<std::uint8_t> a(dense.size()), b(dense.size());
      quantize_kv(contiguous_view(narrow.data(), dt, shape, false), contiguous_quant_view(a.data(), f, shape, true));
      quantize_kv(contiguous_view(wide.data(), DType::f32, shape, false), contiguous_quant_view(b.data(), f, shape, true));
      EXPECT_EQ(a, b) << dtype_name(dt);
    }
    // Rows padded to 3 * row bytes, positions in reverse order (a negative stride).
    std::vector<std::uint8_t> padded(std::size_t(rows * row * 3), 0xCD);
    QuantView v{padded.data() + (5 - 1) * 3 * row, f, shape, {3 * 5 * 3 * row, 5 * 3 * row, -3 * row}, true};
    quantize_kv(contiguous_view(x.data(), DType::f32, shape, false), v);
    for (std::int64_t b = 0; b < 2; ++b)
      for (std::int64_t h = 0; h < 3; ++h)
        for (std::int64_t l = 0; l < 5; ++l) {
          const std::uint8_t* want = dense.data() + ((b * 3 + h) * 5 + l) * row;
          ASSERT_EQ(std::memcmp(v.row(b, h, l), want, std::size_t(row)), 0);
          EXPECT_EQ(v.row(b, h, l)[row], 0xCD);  // the padding is left alone
        }
    std::vector<float> back(static_cast<std::size_t>(n)), back_strided(static_cast<std::size_t>(n));
    dequantize_kv(contiguous_quant_view(dense.data(), f, shape, false),
                  contiguous_view(back.data(), DType::f32, shape, true));
    dequantize_kv(v, contiguous_view(back_strided.data(), DType::f32, shape, true));
    EXPECT_EQ(back, back_strided);
    const int threads = get_num_threads();
    set_num_threads(1);
    std::vector<std::uint8_t> one(dense.size());
    quantize_kv(contiguous_view(x.data(), DType::f32, shape, false), contiguous_quant_view(one.data(), f, shape, true));
    set_num_threads(threads);
    EXPECT_EQ(one, dense);
  }
}

TEST(QuantKv, ViewsOverBytes) {
  std::vector<std::uint8_t> bytes(4 * 68);
  const QuantView v = quant_view_over_bytes(bytes.data(), QuantFormat::q8_0, 64, {1, 2, 2, 68}, {0, 136, 68, 1}, true,
                                            "blocks");
  EXPECT_EQ(v.shape, (std::array<std::int64_t, 4>{1, 2, 2, 64}));
  EXPECT_EQ(v.row(0, 1, 1), bytes.data() + 3 * 68);
  auto msg = [&](std::int64_t D, std::array<std::int64_t, 4> shape, std::array<std::int64_t, 4> stride,
                 QuantFormat f = QuantFormat::q8_0, void* data = nullptr) {
    return message_of([&] {
      quant_view_over_bytes(data ? data : bytes.data(), f, D, shape, stride, false, "blocks");
    });
  };
  EXPECT_NE(msg(64, {1, 2, 2, 67}, {0, 134, 67, 1}).find("blocks: the last axis must be 68 bytes (a row of 64 "
                                                          "elements in q8_0), got 67"),
            std::string::npos);
  EXPECT_NE(msg(32, {1, 2, 2, 68}, {0, 136, 68, 1}).find("blocks: the last axis must be 34 bytes"), std::string::npos);
  EXPECT_NE(msg(64, {1, 1, 1, 68}, {0, 0, 0, 2}).find("blocks: the last axis (a row's blocks) must be contiguous"),
            std::string::npos);
  EXPECT_NE(msg(64, {1, 2, 0, 68}, {0, 136, 68, 1}).find("blocks: every extent must be > 0"), std::string::npos);
  EXPECT_NE(msg(48, {1, 1, 1, 51}, {0, 0, 0, 1}).find("head_dim: head dim D must be a positive multiple of 32"),
            std::string::npos);
  EXPECT_NE(msg(64, {1, 1, 1, 68}, {0, 0, 0, 1}, QuantFormat::affine4).find("format: 'affine4' is not implemented"),
            std::string::npos);
  EXPECT_NE(msg(64, {1, 1, 3, 68}, {0, 0, std::int64_t(1) << 62, 1}).find("overflow 64-bit byte offsets"),
            std::string::npos);
}

// Each bad call names its argument and writes nothing.
TEST(QuantKv, BadCallsWriteNothing) {
  std::vector<float> x(2 * 64, 1.0f);
  std::vector<std::uint8_t> out(2 * 68, 0xAB);
  const auto untouched = out;
  const TensorView xv = contiguous_view(x.data(), DType::f32, {1, 1, 2, 64}, false);
  const QuantView ov = contiguous_quant_view(out.data(), QuantFormat::q8_0, {1, 1, 2, 64}, true);
  auto check = [&](const TensorView& xs, const QuantView& os, const char* fragment) {
    const std::string m = message_of([&] { quantize_kv(xs, os); });
    EXPECT_NE(m.find(fragment), std::string::npos) << m;
    EXPECT_EQ(out, untouched) << fragment;
  };
  for (float bad : {NAN, INFINITY, -INFINITY}) {
    x[70] = bad;
    check(xv, ov, "x: every value must be finite");
    check(xv, ov, "at [0, 0, 1, 6]");
  }
  x[70] = 1.0f;
  TensorView x48 = contiguous_view(x.data(), DType::f32, {1, 1, 2, 48}, false);
  check(x48, ov, "x: head dim D must be a positive multiple of 32 (the block size), got 48");
  QuantView wrong = ov;
  wrong.shape[2] = 1;
  check(xv, wrong, "out: shape must equal x's [1, 1, 2, 64], got [1, 1, 1, 64]");
  QuantView ro = ov;
  ro.writable = false;
  check(xv, ro, "out: must be writable");
  QuantView overlap = ov;
  overlap.stride[2] = 34;  // rows of 68 bytes, 34 apart
  check(xv, overlap, "out: its rows overlap");
  overlap.stride[2] = 0;
  check(xv, overlap, "out: its rows overlap");
  QuantView fmt = ov;
  fmt.format = QuantFormat::affine4;
  check(xv, fmt, "format: 'affine4' is not implemented yet");
  QuantView null = ov;
  null.data = nullptr;
  check(xv, null, "out: data pointer is null");
  TensorView xz = xv;
  xz.shape[2] = 0;
  check(xz, ov, "x: every extent must be > 0");
  // dequantize: out f32 of the cache's shape, writable, elements distinct.
  std::vector<float> back(2 * 64, -1.0f);
  const QuantView in = contiguous_quant_view(out.data(), QuantFormat::q8_0, {1, 1, 2, 64}, false);
  TensorView bv = contiguous_view(back.data(), DType::f32, {1, 1, 2, 64}, true);
  TensorView b16 = bv;
  b16.dtype = DType::f16;
  EXPECT_THROW(dequantize_kv(in, b16), InvalidDType);
  TensorView bshape = bv;
  bshape.shape[3] = 32;
  EXPECT_NE(message_of([&] { dequantize_kv(in, bshape); }).find("out: shape must equal the cache's"), std::string::npos);
  TensorView bro = bv;
  bro.writable = false;
  EXPECT_NE(message_of([&] { dequantize_kv(in, bro); }).find("out: must be writable"), std::string::npos);
  EXPECT_EQ(back, std::vector<float>(2 * 64, -1.0f));
}

// --- tq4 (mlx-native's TurboQuant rows): answers worked out from the format's definition ------

float stored_norm(const std::vector<std::uint8_t>& row, std::int64_t D, int which = 0) {
  float n;
  std::memcpy(&n, row.data() + D / 2 + 4 * which, 4);
  return n;
}

TEST(QuantTq4, KnownRows) {
  // D = 64 (no sign flips): e_0 rotates to 1/8 everywhere; norm 1; u = 1 -> index 11.
  std::vector<float> e(64, 0.0f);
  e[0] = 1.0f;
  std::vector<std::uint8_t> row = quantize_row(e, QuantFormat::tq4);
  ASSERT_EQ(row.size(), 36u);
  for (int i = 0; i < 32; ++i) EXPECT_EQ(row[std::size_t(i)], 0xBB) << i;
  EXPECT_EQ(stored_norm(row, 64), 1.0f);
  // Read back: centroid 11 (0.9423405) at coordinate 0, ~0 elsewhere.
  const std::vector<float> back = dequantize_row(row, QuantFormat::tq4, 64);
  EXPECT_NEAR(back[0], 0.9423405f, 1e-6f);
  for (int i = 1; i < 64; ++i) EXPECT_NEAR(back[std::size_t(i)], 0.0f, 1e-6f) << i;
  // e_0 + e_1: odd coordinates rotate to exactly 0, the boundary between centroids 7 and 8:
  // the tie goes low (u > b), index 7; even ones to sqrt(2): index 12.
  e[1] = 1.0f;
  row = quantize_row(e, QuantFormat::tq4);
  for (int i = 0; i < 32; ++i) EXPECT_EQ(row[std::size_t(i)], 12 | 7 << 4) << i;
  EXPECT_EQ(stored_norm(row, 64), std::sqrt(2.0f));
  // D = 256: coordinate 0's sign bit is set, so e_0 rotates to -1/16 everywhere: index 4.
  std::vector<float> e256(256, 0.0f);
  e256[0] = 1.0f;
  row = quantize_row(e256, QuantFormat::tq4);
  ASSERT_EQ(row.size(), 132u);
  for (int i = 0; i < 128; ++i) EXPECT_EQ(row[std::size_t(i)], 0x44) << i;
  EXPECT_EQ(stored_norm(row, 256), 1.0f);
  // D = 512: two half RMS norms, each |f32(1/sqrt(512))|-sized; index 4 everywhere.
  std::vector<float> e512(512, 0.0f);
  e512[0] = 1.0f;
  row = quantize_row(e512, QuantFormat::tq4);
  ASSERT_EQ(row.size(), 264u);
  for (int i = 0; i < 256; ++i) EXPECT_EQ(row[std::size_t(i)], 0x44) << i;
  for (int h = 0; h < 2; ++h) EXPECT_NEAR(stored_norm(row, 512, h), 0.04419417f, 1e-7f);
  // A zero row: norm 0, every coordinate exactly on the middle boundary: index 7.
  row = quantize_row(std::vector<float>(128, 0.0f), QuantFormat::tq4);
  for (int i = 0; i < 64; ++i) EXPECT_EQ(row[std::size_t(i)], 0x77) << i;
  EXPECT_EQ(stored_norm(row, 128), 0.0f);
}

TEST(QuantTq4, RangeIsCheckedBeforeWriting) {
  std::vector<float> x(64, 1.0f);
  x[7] = 2.0e15f;  // above 2^50
  std::vector<std::uint8_t> out(36, 0xAB);
  const std::string m = message_of([&] {
    quantize_kv(contiguous_view(x.data(), DType::f32, {1, 1, 1, 64}, false),
                contiguous_quant_view(out.data(), QuantFormat::tq4, {1, 1, 1, 64}, true));
  });
  EXPECT_NE(m.find("x: every value must be finite with |x| <= 2^50 for tq4"), std::string::npos) << m;
  for (std::uint8_t b : out) EXPECT_EQ(b, 0xAB);
}

// The decode on tq4 K and V equals the dense decode of the rotated values
// with Q rotated, each live group's output rotated back (here nwg = 1: one
// group), through the public API.
TEST(QuantTq4, DecodeIsTheRotatedDenseDecode) {
  const std::int64_t D = 128, L = 45;
  std::vector<float> x(static_cast<std::size_t>(2 * L * D)), q(static_cast<std::size_t>(D));
  std::uint32_t seed = 7;
  auto next = [&] { seed = seed * 1664525u + 1013904223u; return float(seed >> 8) / float(1 << 24) - 0.5f; };
  for (float& f : x) f = next();
  for (float& f : q) f = next();
  const std::int64_t W = quant_row_bytes(QuantFormat::tq4, D);
  std::vector<std::uint8_t> blocks(std::size_t(2 * L * W));
  quantize_kv(contiguous_view(x.data(), DType::f32, {2, 1, L, D}, false),
              contiguous_quant_view(blocks.data(), QuantFormat::tq4, {2, 1, L, D}, true));
  const QuantView kq = contiguous_quant_view(blocks.data(), QuantFormat::tq4, {1, 1, L, D}, false);
  const QuantView vq = contiguous_quant_view(blocks.data() + L * W, QuantFormat::tq4, {1, 1, L, D}, false);
  DecodeParams params;
  params.kv_seq_len = L;
  params.nwg = 1;
  std::vector<float> out(static_cast<std::size_t>(D));
  flash_attn_vec(contiguous_view(q.data(), DType::f32, {1, 1, 1, D}, false), CacheView(kq), CacheView(vq),
                 contiguous_view(out.data(), DType::f32, {1, 1, 1, D}, true), params);
  // The model: the rotated values (dequantize, then rotate again: the
  // transform is not exactly its own inverse in f32, so build them from
  // the codes instead): centroid * norm * f32(1/sqrt(D)).
  static const float kCodebook[16] = {-2.7325896f, -2.0690172f, -1.6180464f, -1.2562312f, -0.9423405f, -0.6567591f,
                                      -0.3880483f, -0.1283950f, 0.1283950f,  0.3880483f,  0.6567591f,  0.9423405f,
                                      1.2562312f,  1.6180464f,  2.0690172f,  2.7325896f};
  const float inv_sqrt = float(1.0 / std::sqrt(double(D)));
  std::vector<float> rotated(std::size_t(2 * L * D));
  for (std::int64_t r = 0; r < 2 * L; ++r) {
    const std::uint8_t* row = blocks.data() + r * W;
    float norm;
    std::memcpy(&norm, row + D / 2, 4);
    const float s = norm * inv_sqrt;
    for (std::int64_t j = 0; j < D; ++j)
      rotated[std::size_t(r * D + j)] = kCodebook[(j % 2 ? row[j / 2] >> 4 : row[j / 2] & 0x0f)] * s;
  }
  // Q rotated: the normalized Walsh-Hadamard transform (D = 128: no sign flips).
  auto fwht = [&](std::vector<float>& v) {
    for (std::int64_t h = 1; h < D; h *= 2)
      for (std::int64_t i = 0; i < D; i += 2 * h)
        for (std::int64_t j = i; j < i + h; ++j) {
          const float a = v[std::size_t(j)], b = v[std::size_t(j + h)];
          v[std::size_t(j)] = a + b;
          v[std::size_t(j + h)] = a - b;
        }
    for (float& f : v) f = f * inv_sqrt;
  };
  std::vector<float> qr = q;
  fwht(qr);
  std::vector<float> o(static_cast<std::size_t>(D)), s(1), m(1), want(static_cast<std::size_t>(D));
  flash_attn_vec_partials(contiguous_view(qr.data(), DType::f32, {1, 1, 1, D}, false),
                          contiguous_view(rotated.data(), DType::f32, {1, 1, L, D}, false),
                          contiguous_view(rotated.data() + L * D, DType::f32, {1, 1, L, D}, false),
                          contiguous_view(o.data(), DType::f32, {1, 1, 1, D}, true),
                          contiguous_view(s.data(), DType::f32, {1, 1, 1, 1}, true),
                          contiguous_view(m.data(), DType::f32, {1, 1, 1, 1}, true), params);
  fwht(o);
  flash_attn_vec_reduce(contiguous_view(o.data(), DType::f32, {1, 1, 1, D}, false),
                        contiguous_view(s.data(), DType::f32, {1, 1, 1, 1}, false),
                        contiguous_view(m.data(), DType::f32, {1, 1, 1, 1}, false),
                        contiguous_view(want.data(), DType::f32, {1, 1, 1, D}, true));
  for (std::int64_t d = 0; d < D; ++d) EXPECT_EQ(out[std::size_t(d)], want[std::size_t(d)]) << d;
}

}  // namespace
