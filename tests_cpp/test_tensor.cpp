#include <gtest/gtest.h>

#include <limits>
#include <vector>

#include "fattn/eigen.hpp"
#include "fattn/tensor.hpp"

using namespace fattn;

TEST(TensorView, ContiguousStridesAndRows) {
  std::vector<float> buf(2 * 3 * 4 * 5);
  for (std::size_t i = 0; i < buf.size(); ++i) buf[i] = float(i);
  const TensorView t = contiguous_view(buf.data(), DType::f32, {2, 3, 4, 5}, false);
  EXPECT_EQ(t.stride[0], 60);
  EXPECT_EQ(t.stride[1], 20);
  EXPECT_EQ(t.stride[2], 5);
  EXPECT_EQ(t.row<const float>(1, 2, 3)[4], float(60 + 40 + 15 + 4));
  auto s = slice<float>(t, 1, 2);
  EXPECT_EQ(s.rows(), 4);
  EXPECT_EQ(s.cols(), 5);
  EXPECT_EQ(s(3, 4), float(60 + 40 + 15 + 4));
  EXPECT_NO_THROW(validate_view(t, "q"));
}

TEST(TensorView, SeqMajorIsTheSameMemoryWithSwappedAxes) {
  // [B=1, L=3, H=2, D=4] stored seq-major.
  std::vector<float> buf(1 * 3 * 2 * 4);
  for (std::size_t i = 0; i < buf.size(); ++i) buf[i] = float(i);
  const TensorView t = seq_major_view(buf.data(), DType::f32, {1, 3, 2, 4}, false);
  EXPECT_EQ(t.heads(), 2);
  EXPECT_EQ(t.length(), 3);
  // Element (b=0, l=2, h=1, d=3) is at 2*8 + 1*4 + 3 = 23.
  EXPECT_EQ(t.row<const float>(0, 1, 2)[3], 23.0f);
  auto s = slice<float>(t, 0, 1);  // head 1: rows are positions, outer stride H*D
  EXPECT_EQ(s(2, 3), 23.0f);
  EXPECT_EQ(s.outerStride(), 8);
}

TEST(TensorView, ValidationNamesTheArgument) {
  float x = 0;
  TensorView t = contiguous_view(&x, DType::f32, {1, 1, 1, 1}, false);
  t.shape[2] = 0;
  try {
    validate_view(t, "k");
    FAIL() << "expected InvalidArgument";
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("k: every extent must be > 0, got L = 0"), std::string::npos) << e.what();
  }
  t = contiguous_view(&x, DType::f32, {1, 1, 1, 4}, false);
  t.stride[3] = 2;
  EXPECT_THROW(validate_view(t, "q"), InvalidArgument);
  t = contiguous_view(nullptr, DType::f32, {1, 1, 1, 1}, false);
  EXPECT_THROW(validate_view(t, "v"), InvalidArgument);
  const std::int64_t big = std::int64_t(1) << 40;
  t = contiguous_view(&x, DType::f32, {big, big, 1, 1}, false);
  EXPECT_THROW(validate_view(t, "q"), InvalidArgument);  // 2^80 elements
}

TEST(MaskView, BroadcastAndKinds) {
  const float inf = std::numeric_limits<float>::infinity();
  std::vector<float> add = {0.0f, -inf, 1.5f, 0.0f};  // [2, 2]
  MaskView m;
  m.data = add.data();
  m.kind = MaskKind::additive;
  m.dtype = DType::f32;
  m.shape = {1, 1, 2, 2};
  m.stride = {0, 0, 2, 1};
  EXPECT_NO_THROW(validate_mask(m, {3, 4, 2, 2}, "mask"));
  EXPECT_EQ(m.additive_at(2, 3, 0, 1), -inf);
  EXPECT_EQ(m.additive_at(1, 0, 1, 0), 1.5f);
  EXPECT_FALSE(m.attends(0, 0, 0, 1));
  EXPECT_TRUE(m.attends(0, 0, 1, 0));
  EXPECT_THROW(validate_mask(m, {3, 4, 2, 3}, "mask"), InvalidArgument);

  std::vector<std::uint8_t> keep = {1, 0, 0, 1};
  MaskView b = m;
  b.data = keep.data();
  b.kind = MaskKind::boolean;
  EXPECT_EQ(b.additive_at(0, 0, 0, 1), -inf);
  EXPECT_EQ(b.additive_at(0, 0, 1, 1), 0.0f);
}
