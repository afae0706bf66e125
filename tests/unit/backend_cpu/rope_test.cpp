// YaRN frequencies for Flash's numbers (model-spec §5.4): ramp lo = 15, hi = 25.
#include <gtest/gtest.h>

#include <cmath>

#include "backend/cpu/rope.h"

namespace ds4::backend::cpu {
namespace {

model::ModelConfig flash_rope() {
  model::ModelConfig c;
  c.rope_dim = 64;
  c.rope_base = 10000;
  c.compress_rope_base = 160000;
  c.yarn_factor = 16;
  c.yarn_orig_ctx = 65536;
  c.yarn_beta_fast = 32;
  c.yarn_beta_slow = 1;
  return c;
}

TEST(Rope, PlainFrequencies) {
  Rope r(flash_rope(), false);
  ASSERT_EQ(r.inv_freq().size(), 32u);
  for (int k = 0; k < 32; ++k) EXPECT_NEAR(r.inv_freq()[k], std::pow(10000.0, -2.0 * k / 64), 1e-6 * std::pow(10000.0, -2.0 * k / 64));
}

TEST(Rope, YarnRampBetween15And25) {
  Rope r(flash_rope(), true);
  for (int k = 0; k < 32; ++k) {
    const double f = std::pow(160000.0, -2.0 * k / 64);
    const double gamma = 1.0 - std::clamp((k - 15.0) / 10.0, 0.0, 1.0);
    const double want = f / 16 * (1 - gamma) + f * gamma;
    EXPECT_NEAR(r.inv_freq()[k], want, 1e-6 * want) << k;
  }
  EXPECT_NEAR(r.inv_freq()[10], std::pow(160000.0, -20.0 / 64), 1e-9);
  EXPECT_NEAR(r.inv_freq()[30], std::pow(160000.0, -60.0 / 64) / 16, 1e-12);
}

TEST(Rope, InterleavedPairsAndInverse) {
  model::ModelConfig c = flash_rope();
  c.rope_dim = 4;
  Rope r(c, false);
  float x[4] = {1, 0, 0, 1};
  r.apply(x, 1);
  // pair 0 rotates by 1 rad, pair 1 by 1e-2 rad (10000^(-2/4))
  EXPECT_NEAR(x[0], std::cos(1.0), 1e-6);
  EXPECT_NEAR(x[1], std::sin(1.0), 1e-6);
  EXPECT_NEAR(x[2], -std::sin(0.01), 1e-6);
  EXPECT_NEAR(x[3], std::cos(0.01), 1e-6);
  r.apply(x, 1, true);
  EXPECT_NEAR(x[0], 1.0, 1e-6);
  EXPECT_NEAR(x[1], 0.0, 1e-6);
  EXPECT_NEAR(x[2], 0.0, 1e-6);
  EXPECT_NEAR(x[3], 1.0, 1e-6);
}

}  // namespace
}  // namespace ds4::backend::cpu
