// Sampler knobs tested on fixed logits: each changes the distribution exactly
// as specified, draws follow the distribution, and a seed reproduces tokens.
#include <gtest/gtest.h>

#include <cmath>
#include <map>

#include "engine/sampler.h"

namespace ds4::engine {
namespace {

// Probabilities 0.5, 0.25, 0.125, 0.0625, 0.0625 at ids 3, 0, 4, 1, 2.
const std::vector<float> kLogits = {std::log(0.25f), std::log(0.0625f), std::log(0.0625f), std::log(0.5f),
                                    std::log(0.125f)};

SamplingParams params(float t, float top_p, float min_p, int top_k, uint64_t seed = 1) {
  SamplingParams p;
  p.temperature = t;
  p.top_p = top_p;
  p.min_p = min_p;
  p.top_k = top_k;
  p.seed = seed;
  return p;
}

TEST(Sampler, GreedyPicksLowestIdAmongTies) {
  Sampler s(params(0, 1, 0, 0));
  EXPECT_EQ(s.sample(kLogits), 3);
  std::vector<float> tie = {1, 5, 5, 2};
  EXPECT_EQ(s.sample(tie), 1);
  EXPECT_TRUE(s.candidates(kLogits).empty());
}

TEST(Sampler, FullDistributionAtTemperatureOne) {
  Sampler s(params(1, 1, 0, 0));
  auto c = s.candidates(kLogits);
  ASSERT_EQ(c.size(), 5u);
  const int ids[] = {3, 0, 4, 1, 2};
  const float ps[] = {0.5f, 0.25f, 0.125f, 0.0625f, 0.0625f};
  for (int i = 0; i < 5; ++i) {
    EXPECT_EQ(c[i].id, ids[i]);
    EXPECT_NEAR(c[i].p, ps[i], 1e-6);
  }
}

TEST(Sampler, TopKKeepsKBestAndRenormalizes) {
  Sampler s(params(1, 1, 0, 2));
  auto c = s.candidates(kLogits);
  ASSERT_EQ(c.size(), 2u);
  EXPECT_EQ(c[0].id, 3);
  EXPECT_EQ(c[1].id, 0);
  EXPECT_NEAR(c[0].p, 2.0 / 3.0, 1e-6);
}

TEST(Sampler, MinPDropsTokensBelowFractionOfBest) {
  // 0.125 / 0.5 = 0.25 >= 0.2 stays; 0.0625 / 0.5 = 0.125 < 0.2 goes.
  Sampler s(params(1, 1, 0.2f, 0));
  auto c = s.candidates(kLogits);
  ASSERT_EQ(c.size(), 3u);
  EXPECT_NEAR(c[2].p, 0.125 / 0.875, 1e-6);
}

TEST(Sampler, TopPKeepsSmallestPrefixReachingMass) {
  Sampler s(params(1, 0.75f, 0, 0));
  auto c = s.candidates(kLogits);
  ASSERT_EQ(c.size(), 2u);  // 0.5 + 0.25 reaches 0.75
  Sampler s2(params(1, 0.76f, 0, 0));
  EXPECT_EQ(s2.candidates(kLogits).size(), 3u);
}

TEST(Sampler, TemperatureSharpensAndFlattens) {
  Sampler cold(params(0.5f, 1, 0, 0)), hot(params(2, 1, 0, 0));
  // p ∝ p0^(1/T): T=0.5 squares: 0.25/0.34375 for the best.
  EXPECT_NEAR(cold.candidates(kLogits)[0].p, 0.25 / (0.25 + 0.0625 + 0.015625 + 2 * 0.00390625), 1e-6);
  EXPECT_LT(hot.candidates(kLogits)[0].p, 0.5f);
}

TEST(Sampler, OutOfRangeKnobsAreNeutral) {
  Sampler s(params(1, 1.5f, -1, -3));
  EXPECT_EQ(s.candidates(kLogits).size(), 5u);
  Sampler z(params(1, 0.0f, 0, 0));
  EXPECT_EQ(z.candidates(kLogits).size(), 5u);
}

TEST(Sampler, DrawsFollowTheDistribution) {
  Sampler s(params(1, 1, 0, 0, 12345));
  std::map<int, int> n;
  const int draws = 200000;
  for (int i = 0; i < draws; ++i) ++n[s.sample(kLogits)];
  EXPECT_NEAR(n[3] / double(draws), 0.5, 0.01);
  EXPECT_NEAR(n[0] / double(draws), 0.25, 0.01);
  EXPECT_NEAR(n[4] / double(draws), 0.125, 0.01);
  EXPECT_NEAR(n[1] / double(draws), 0.0625, 0.01);
}

TEST(Sampler, SameSeedSameTokensDifferentSeedDifferentTokens) {
  Sampler a(params(1, 1, 0, 0, 42)), b(params(1, 1, 0, 0, 42)), c(params(1, 1, 0, 0, 43));
  std::vector<int> ta, tb, tc;
  for (int i = 0; i < 64; ++i) {
    ta.push_back(a.sample(kLogits));
    tb.push_back(b.sample(kLogits));
    tc.push_back(c.sample(kLogits));
  }
  EXPECT_EQ(ta, tb);
  EXPECT_NE(ta, tc);
}

TEST(Sampler, LargeVocabularyCapsCandidates) {
  std::vector<float> flat(129280, 0.0f);
  Sampler s(params(1, 1, 0, 0));
  EXPECT_EQ(s.candidates(flat).size(), static_cast<size_t>(SamplingParams::kMaxTopK));
  Sampler k(params(1, 1, 0, 5000));
  EXPECT_EQ(k.candidates(flat).size(), static_cast<size_t>(SamplingParams::kMaxTopK));
}

}  // namespace
}  // namespace ds4::engine
