// Random blocks written directly in a type's layout (ds4 synth): valid values
// of the requested scale with mean ~0, deterministic per seed, and a matvec
// through them keeps unit-variance activations at unit variance.
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "model/random_blocks.h"
#include "quant/quant.h"
#include "util/error.h"

namespace ds4::model {
namespace {

const GgmlType kTypes[] = {GgmlType::F32, GgmlType::F16, GgmlType::BF16, GgmlType::Q8_0,
                           GgmlType::Q2_K, GgmlType::Q4_K, GgmlType::IQ2_XXS};

class RandomBlocksT : public ::testing::TestWithParam<GgmlType> {};

std::vector<float> dequant(GgmlType t, const std::vector<uint8_t>& b, int64_t n) {
  std::vector<float> v(static_cast<size_t>(n));
  quant::dequantize_row(t, b.data(), v.data(), n);
  return v;
}

TEST_P(RandomBlocksT, ScaleMeanAndDeterminism) {
  const GgmlType t = GetParam();
  const float rms = 1.0f / std::sqrt(2048.0f);
  const RandomBlocks g(t, rms);
  const int64_t n_blocks = 65536 / g.block_size() * 4, n = n_blocks * g.block_size();
  std::vector<uint8_t> a(static_cast<size_t>(n_blocks) * g.block_bytes()), b(a.size()), c(a.size());
  g.fill(7, a.data(), n_blocks);
  g.fill(7, b.data(), n_blocks);
  g.fill(8, c.data(), n_blocks);
  EXPECT_EQ(a, b);
  EXPECT_NE(a, c);
  const auto v = dequant(t, a, n);
  double s = 0, s2 = 0;
  for (float x : v) {
    ASSERT_TRUE(std::isfinite(x));
    s += x;
    s2 += double{x} * x;
  }
  const double mean = s / static_cast<double>(n), got = std::sqrt(s2 / static_cast<double>(n));
  EXPECT_NEAR(got / rms, 1.0, 0.05) << ggml_type_name(t);
  EXPECT_LT(std::abs(mean), 0.02 * rms) << ggml_type_name(t);
  // A prefix of a stream is the same whatever the fill length.
  std::vector<uint8_t> p(a.size() / 2);
  g.fill(7, p.data(), n_blocks / 2);
  EXPECT_TRUE(std::equal(p.begin(), p.end(), a.begin()));
}

// y = W x with unit-rms x: the output rms is about 1 (scale from fan-in).
TEST_P(RandomBlocksT, MatvecKeepsUnitVariance) {
  const GgmlType t = GetParam();
  const int64_t cols = 2048, rows = 512;
  const RandomBlocks g(t, 1.0f / std::sqrt(static_cast<float>(cols)));
  std::vector<uint8_t> w(quant::row_bytes(t, cols) * rows);
  g.fill(3, w.data(), cols * rows / g.block_size());
  std::vector<float> x(cols), y(rows);
  SplitMix r(9);
  for (auto& v : x) v = static_cast<float>(r.uniform() * 2 - 1) * std::sqrt(3.0f);
  quant::matvec(t, w.data(), rows, cols, x.data(), y.data());
  double s2 = 0;
  for (float v : y) s2 += double{v} * v;
  EXPECT_NEAR(std::sqrt(s2 / rows), 1.0, 0.15) << ggml_type_name(t);
}

INSTANTIATE_TEST_SUITE_P(Types, RandomBlocksT, ::testing::ValuesIn(kTypes),
                         [](const ::testing::TestParamInfo<GgmlType>& p) { return std::string(ggml_type_name(p.param)); });

TEST(RandomBlocks, Q8_0NeverMinus128) {
  const RandomBlocks g(GgmlType::Q8_0, 0.01f);
  std::vector<uint8_t> b(34 * 4096);
  g.fill(1, b.data(), 4096);
  for (size_t k = 0; k < 4096; ++k)
    for (size_t j = 2; j < 34; ++j) ASSERT_NE(static_cast<int8_t>(b[k * 34 + j]), -128);
}

TEST(RandomBlocks, UnsupportedTypeIsAnError) {
  EXPECT_FALSE(RandomBlocks::supports(GgmlType::Q5_K));
  EXPECT_THROW(RandomBlocks(GgmlType::Q5_K, 1.0f), Error);
  EXPECT_THROW(RandomBlocks(GgmlType::Q8_0, 0.0f), Error);
}

}  // namespace
}  // namespace ds4::model
