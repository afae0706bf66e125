#include "backend/cpu/rope.h"

#include <algorithm>
#include <cmath>
#include <numbers>

namespace ds4::backend::cpu {

Rope::Rope(const model::ModelConfig& c, bool compressed) {
  const int dim = static_cast<int>(c.rope_dim), half = dim / 2;
  const double base = compressed ? c.compress_rope_base : c.rope_base;
  inv_freq_.resize(static_cast<size_t>(half));
  // Frequencies in f32 like the float reference (transformers builds its
  // inv_freq table in float32).
  for (int k = 0; k < half; ++k)
    inv_freq_[static_cast<size_t>(k)] =
        1.0f / std::pow(static_cast<float>(base), static_cast<float>(2 * k) / static_cast<float>(dim));
  if (!compressed || c.yarn_factor == 1.0f) return;
  auto corr = [&](double beta) {
    return dim * std::log(static_cast<double>(c.yarn_orig_ctx) / (beta * 2 * std::numbers::pi)) / (2 * std::log(base));
  };
  double lo = std::max(std::floor(corr(c.yarn_beta_fast)), 0.0);
  double hi = std::min(std::ceil(corr(c.yarn_beta_slow)), static_cast<double>(dim - 1));
  if (lo == hi) hi += 0.001;
  for (int k = 0; k < half; ++k) {
    const float ramp = static_cast<float>(std::clamp((k - lo) / (hi - lo), 0.0, 1.0));
    const float extrap_weight = 1.0f - ramp;  // gamma: keep the original frequency
    const float f = inv_freq_[static_cast<size_t>(k)];
    inv_freq_[static_cast<size_t>(k)] = (f / c.yarn_factor) * (1.0f - extrap_weight) + f * extrap_weight;
  }
}

void Rope::apply(float* x, int64_t pos, bool inverse) const {
  for (size_t k = 0; k < inv_freq_.size(); ++k) {
    const float theta = static_cast<float>(pos) * inv_freq_[k];
    const double cs = std::cos(static_cast<double>(theta));
    const double sn = inverse ? -std::sin(static_cast<double>(theta)) : std::sin(static_cast<double>(theta));
    const double x0 = x[2 * k], x1 = x[2 * k + 1];
    x[2 * k] = static_cast<float>(x0 * cs - x1 * sn);
    x[2 * k + 1] = static_cast<float>(x0 * sn + x1 * cs);
  }
}

}  // namespace ds4::backend::cpu
