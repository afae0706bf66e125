// faithful-mode helpers pinned to values worked out by hand from the format
// definitions (e4m3fn: 3 mantissa bits, bias 7, max 448, subnormal step 2^-9;
// e2m1: grid 0, .5, 1, 1.5, 2, 3, 4, 6).
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "backend/cpu/numerics.h"

namespace ds4::backend::cpu {
namespace {

TEST(E4m3Round, ExactValuesStay) {
  for (float v : {0.0f, 1.0f, 1.125f, 448.0f, -448.0f, 240.0f, 0.015625f /*2^-6*/, 0.001953125f /*2^-9*/})
    EXPECT_EQ(e4m3_round(v), v) << v;
}

TEST(E4m3Round, TiesGoToEvenCode) {
  EXPECT_EQ(e4m3_round(1.0625f), 1.0f);    // between 1.0 (m=0) and 1.125 (m=1)
  EXPECT_EQ(e4m3_round(1.1875f), 1.25f);   // between 1.125 (m=1) and 1.25 (m=2)
  EXPECT_EQ(e4m3_round(248.0f), 256.0f);   // between 240 (m=7) and 256 (next exponent, m=0)
  EXPECT_EQ(e4m3_round(-1.0625f), -1.0f);
}

TEST(E4m3Round, NearestOffTies) {
  EXPECT_EQ(e4m3_round(1.07f), 1.125f);
  EXPECT_EQ(e4m3_round(100.0f), 96.0f);  // step 8 in [64, 128): 96 and 104, 100 is a tie -> 96 (m=4)
  EXPECT_EQ(e4m3_round(101.0f), 104.0f);
}

TEST(E4m3Round, Subnormals) {
  EXPECT_EQ(e4m3_round(std::ldexp(1.0f, -10)), 0.0f);                  // half a step: tie to 0
  EXPECT_EQ(e4m3_round(3 * std::ldexp(1.0f, -10)), std::ldexp(1.0f, -8));  // 1.5 steps: tie to 2 steps
  EXPECT_EQ(e4m3_round(std::ldexp(1.2f, -9)), std::ldexp(1.0f, -9));
  EXPECT_EQ(e4m3_round(7 * std::ldexp(1.0f, -9)), 7 * std::ldexp(1.0f, -9));  // largest subnormal
}

TEST(E4m3Round, Saturates) {
  EXPECT_EQ(e4m3_round(464.0f), 448.0f);
  EXPECT_EQ(e4m3_round(1e6f), 448.0f);
  EXPECT_EQ(e4m3_round(-1e6f), -448.0f);
}

TEST(E2m1Round, Grid) {
  const float in[] = {0.25f, 0.75f, 1.25f, 1.75f, 2.5f, 3.5f, 5.0f, 5.5f, 7.0f, -2.5f, 0.3f, 2.9f, 100.0f};
  const float want[] = {0.0f, 1.0f, 1.0f, 2.0f, 2.0f, 4.0f, 4.0f, 6.0f, 6.0f, -2.0f, 0.5f, 3.0f, 6.0f};
  for (size_t k = 0; k < std::size(in); ++k) EXPECT_EQ(e2m1_round(in[k]), want[k]) << in[k];
}

TEST(Fp8Simulate64, PowerOfTwoScalePerBlock) {
  std::vector<float> x(128, 0.0f);
  x[0] = 1.0f;   // block 0 amax 1 -> scale 2^ceil(log2(1/448)) = 2^-8
  x[1] = 0.3f;   // 0.3 * 256 = 76.8 -> step 8 -> 80 -> 0.3125
  x[64] = 448.0f;  // block 1 scale 1
  x[65] = 100.0f;  // tie -> 96
  fp8_simulate_64(x);
  EXPECT_EQ(x[0], 1.0f);
  EXPECT_EQ(x[1], 0.3125f);
  EXPECT_EQ(x[2], 0.0f);
  EXPECT_EQ(x[64], 448.0f);
  EXPECT_EQ(x[65], 96.0f);
}

TEST(Fp8Simulate64, TinyBlockUsesFloorAmax) {
  std::vector<float> x(64, 0.0f);
  x[0] = 1e-6f;  // amax floored at 1e-4 -> scale 2^ceil(log2(1e-4/448)) = 2^-22
  fp8_simulate_64(x);
  // 1e-6 / 2^-22 = 4.194304 -> e4m3 step 0.5 in [4, 8) -> 4.0 -> 4 * 2^-22
  EXPECT_EQ(x[0], 4.0f * std::ldexp(1.0f, -22));
}

TEST(Fp4Simulate32, ScaleAndRound) {
  std::vector<float> x(64, 0.0f);
  x[0] = 1.0f;   // scale 2^ceil(log2(1/6)) = 2^-2
  x[1] = 0.3f;   // 1.2 -> 1.0 -> 0.25
  x[2] = -0.6f;  // -2.4 -> -2 -> -0.5
  x[32] = 6.0f;  // block 1 scale 1
  x[33] = 2.5f;  // tie -> 2
  fp4_simulate_32(x);
  EXPECT_EQ(x[0], 1.0f);
  EXPECT_EQ(x[1], 0.25f);
  EXPECT_EQ(x[2], -0.5f);
  EXPECT_EQ(x[32], 6.0f);
  EXPECT_EQ(x[33], 2.0f);
  EXPECT_EQ(x[40], 0.0f);
}

TEST(Hadamard, SmallCasesByHand) {
  std::vector<float> a = {1, 2, 3, 4};
  hadamard_inplace(a);  // rows ++++, +-+-, ++--, +--+ times 1/2
  EXPECT_FLOAT_EQ(a[0], 5.0f);
  EXPECT_FLOAT_EQ(a[1], -1.0f);
  EXPECT_FLOAT_EQ(a[2], -2.0f);
  EXPECT_FLOAT_EQ(a[3], 0.0f);
  std::vector<float> b = {1, 0};
  hadamard_inplace(b);
  EXPECT_FLOAT_EQ(b[0], 1.0f / std::sqrt(2.0f));
  EXPECT_FLOAT_EQ(b[1], 1.0f / std::sqrt(2.0f));
}

TEST(Hadamard, OrthonormalAndSelfInverse128) {
  std::vector<float> x(128), y;
  for (size_t k = 0; k < x.size(); ++k) x[k] = std::sin(0.37f * static_cast<float>(k)) + 0.1f;
  y = x;
  hadamard_inplace(y);
  double nx = 0, ny = 0;
  for (size_t k = 0; k < x.size(); ++k) {
    nx += x[k] * x[k];
    ny += y[k] * y[k];
  }
  EXPECT_NEAR(nx, ny, 1e-4 * nx);
  hadamard_inplace(y);
  for (size_t k = 0; k < x.size(); ++k) EXPECT_NEAR(y[k], x[k], 1e-5f);
  // a unit vector maps to a constant row of +-1/sqrt(128)
  std::vector<float> e(128, 0.0f);
  e[0] = 1.0f;
  hadamard_inplace(e);
  for (float v : e) EXPECT_FLOAT_EQ(v, 1.0f / std::sqrt(128.0f));
}

TEST(Hadamard, RejectsNonPowerOfTwo) {
  std::vector<float> x(48);
  EXPECT_THROW(hadamard_inplace(x), std::exception);
}

}  // namespace
}  // namespace ds4::backend::cpu
