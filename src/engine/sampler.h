#pragma once
// Token sampling over one row of logits, with ds4's knobs and order
// (reference-behavior §3.6 "Sampling"): temperature <= 0 is greedy; otherwise
// logits / T, top_k candidates (0 = whole vocabulary, capped at 1024), softmax,
// min_p relative to the best candidate, top_p over the sorted cumulative mass,
// then a draw from an xorshift generator. Same seed, same tokens.
#include <cstdint>
#include <span>
#include <vector>

namespace ds4::engine {

struct SamplingParams {
  float temperature = 1.0f;
  float top_p = 1.0f;   // outside (0, 1] means 1
  float min_p = 0.05f;  // negative means 0
  int top_k = 0;        // 0 = no cap other than kMaxTopK
  uint64_t seed = 0;    // 0 = derived from the clock

  static constexpr int kMaxTopK = 1024;
};

// One candidate after filtering, with its renormalized probability.
struct Candidate {
  int32_t id;
  float logit;  // after temperature
  float p;
};

class Sampler {
 public:
  explicit Sampler(const SamplingParams& params);

  // Picks a token from `logits`. Ties in greedy mode go to the lowest id.
  int32_t sample(std::span<const float> logits);
  // The filtered, renormalized distribution sample() draws from (empty when
  // greedy). Exposed for tests and --dump-logprobs.
  std::vector<Candidate> candidates(std::span<const float> logits) const;

  const SamplingParams& params() const { return p_; }
  uint64_t seed() const { return seed_; }

  static int32_t argmax(std::span<const float> logits);

 private:
  double next_uniform();  // in [0, 1)
  SamplingParams p_;
  uint64_t seed_;
  uint64_t state_;
};

}  // namespace ds4::engine
