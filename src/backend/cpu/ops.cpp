#include "backend/cpu/ops.h"

#include <cmath>
#include <vector>

namespace ds4::backend::cpu {

void rms_norm(const float* x, const float* w, int64_t n, float eps, float* y) {
  double ss = 0;  // double: long rows (4*D for HC) lose nothing to accumulation order
  for (int64_t k = 0; k < n; ++k) ss += static_cast<double>(x[k]) * x[k];
  const float inv = static_cast<float>(1.0 / std::sqrt(ss / static_cast<double>(n) + eps));
  for (int64_t k = 0; k < n; ++k) y[k] = w ? x[k] * inv * w[k] : x[k] * inv;
}

float softplus(float z) {
  if (z > 20.0f) return z;  // torch's threshold
  return std::log1p(std::exp(z));
}

void hc_split_sinkhorn(const float* m, const float* scale, const float* base, const model::ModelConfig& c, float* pre,
                       float* post, float* comb) {
  const int64_t hc = c.hc_count;
  const float eps = c.hc_eps;
  for (int64_t i = 0; i < hc; ++i) {
    pre[i] = sigmoid(scale[0] * m[i] + base[i]) + eps;
    post[i] = 2.0f * sigmoid(scale[1] * m[hc + i] + base[hc + i]);
  }
  for (int64_t i = 0; i < hc; ++i) {
    float* row = comb + i * hc;
    float mx = -INFINITY;
    for (int64_t j = 0; j < hc; ++j) {
      row[j] = scale[2] * m[2 * hc + i * hc + j] + base[2 * hc + i * hc + j];
      mx = std::max(mx, row[j]);
    }
    float s = 0;
    for (int64_t j = 0; j < hc; ++j) s += (row[j] = std::exp(row[j] - mx));
    for (int64_t j = 0; j < hc; ++j) row[j] = row[j] / s + eps;
  }
  auto col_norm = [&] {
    for (int64_t j = 0; j < hc; ++j) {
      float s = 0;
      for (int64_t i = 0; i < hc; ++i) s += comb[i * hc + j];
      for (int64_t i = 0; i < hc; ++i) comb[i * hc + j] /= s + eps;
    }
  };
  col_norm();
  for (uint32_t it = 1; it < c.sinkhorn_iters; ++it) {
    for (int64_t i = 0; i < hc; ++i) {
      float s = 0;
      for (int64_t j = 0; j < hc; ++j) s += comb[i * hc + j];
      for (int64_t j = 0; j < hc; ++j) comb[i * hc + j] /= s + eps;
    }
    col_norm();
  }
}

void hc_collapse(const float* X, const float* pre, int64_t hc, int64_t D, float* y) {
  for (int64_t d = 0; d < D; ++d) {
    float s = 0;
    for (int64_t i = 0; i < hc; ++i) s += pre[i] * X[i * D + d];
    y[d] = s;
  }
}

void hc_expand(float* X, const float* out, const float* post, const float* comb, int64_t hc, int64_t D) {
  std::vector<float> old(X, X + hc * D);
  for (int64_t j = 0; j < hc; ++j)
    for (int64_t d = 0; d < D; ++d) {
      float s = post[j] * out[d];
      for (int64_t i = 0; i < hc; ++i) s += comb[i * hc + j] * old[static_cast<size_t>(i * D + d)];
      X[j * D + d] = s;
    }
}

}  // namespace ds4::backend::cpu
