#include "engine/sampler.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <limits>

#include "util/error.h"

namespace ds4::engine {

Sampler::Sampler(const SamplingParams& params) : p_(params) {
  if (!(p_.top_p > 0.0f && p_.top_p <= 1.0f)) p_.top_p = 1.0f;
  if (!(p_.min_p > 0.0f)) p_.min_p = 0.0f;
  if (p_.top_k < 0) p_.top_k = 0;
  seed_ = p_.seed ? p_.seed
                  : static_cast<uint64_t>(std::chrono::steady_clock::now().time_since_epoch().count()) | 1u;
  // splitmix64 spreads small seeds (1, 2, 3...) over the whole state; xorshift
  // must never start from zero.
  uint64_t z = seed_ + 0x9e3779b97f4a7c15ull;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  state_ = (z ^ (z >> 31)) | 1u;
}

double Sampler::next_uniform() {
  // xorshift64*
  state_ ^= state_ >> 12;
  state_ ^= state_ << 25;
  state_ ^= state_ >> 27;
  const uint64_t r = state_ * 0x2545f4914f6cdd1dull;
  return static_cast<double>(r >> 11) * (1.0 / 9007199254740992.0);
}

int32_t Sampler::argmax(std::span<const float> logits) {
  if (logits.empty()) fail("sampler: empty logits");
  size_t best = 0;
  for (size_t i = 1; i < logits.size(); ++i)
    if (logits[i] > logits[best]) best = i;
  return static_cast<int32_t>(best);
}

std::vector<Candidate> Sampler::candidates(std::span<const float> logits) const {
  if (logits.empty()) fail("sampler: empty logits");
  if (p_.temperature <= 0.0f) return {};
  const float inv_t = 1.0f / p_.temperature;
  const size_t cap = static_cast<size_t>(p_.top_k > 0 ? std::min(p_.top_k, SamplingParams::kMaxTopK)
                                                       : SamplingParams::kMaxTopK);
  const size_t k = std::min(cap, logits.size());

  // min_p keeps p_i >= min_p * p_max, i.e. logit_i >= logit_max + T*ln(min_p):
  // applying it first on raw logits is exact and shrinks the sort to a handful
  // of tokens on a 129k vocabulary.
  float lmax = -std::numeric_limits<float>::infinity();
  for (float l : logits) lmax = std::max(lmax, l);
  if (!std::isfinite(lmax)) fail("sampler: logits contain no finite maximum");
  std::vector<Candidate> c;
  c.reserve(k);
  const float floor_logit = p_.min_p > 0.0f ? lmax + std::log(p_.min_p) * p_.temperature
                                            : -std::numeric_limits<float>::infinity();
  for (size_t i = 0; i < logits.size(); ++i)
    if (logits[i] >= floor_logit && !std::isnan(logits[i]))
      c.push_back({static_cast<int32_t>(i), logits[i] * inv_t, 0.0f});
  auto by_logit = [](const Candidate& a, const Candidate& b) {
    return a.logit > b.logit || (a.logit == b.logit && a.id < b.id);
  };
  if (c.size() > k) {
    std::partial_sort(c.begin(), c.begin() + static_cast<long>(k), c.end(), by_logit);
    c.resize(k);
  } else {
    std::sort(c.begin(), c.end(), by_logit);
  }

  double sum = 0;
  for (auto& x : c) sum += std::exp(static_cast<double>(x.logit - c[0].logit));
  for (auto& x : c) x.p = static_cast<float>(std::exp(static_cast<double>(x.logit - c[0].logit)) / sum);

  if (p_.top_p < 1.0f) {
    double cum = 0;
    size_t cut = c.size();
    for (size_t i = 0; i < c.size(); ++i) {
      cum += c[i].p;
      if (cum >= p_.top_p) {
        cut = i + 1;
        break;
      }
    }
    c.resize(cut);
    double s = 0;
    for (const auto& x : c) s += x.p;
    for (auto& x : c) x.p = static_cast<float>(x.p / s);
  }
  return c;
}

int32_t Sampler::sample(std::span<const float> logits) {
  if (p_.temperature <= 0.0f) return argmax(logits);
  const std::vector<Candidate> c = candidates(logits);
  const double r = next_uniform();
  double cum = 0;
  for (const auto& x : c) {
    cum += x.p;
    if (r < cum) return x.id;
  }
  return c.back().id;  // rounding left r just above the last cumulative sum
}

}  // namespace ds4::engine
