#pragma once
// Small per-token operations of the forward pass (model-spec §4, §5.2, §5.3, §5.7).
#include <algorithm>
#include <cmath>
#include <cstdint>

#include "model/config.h"

namespace ds4::backend::cpu {

// y = x * w / sqrt(mean(x^2) + eps); w may be null (unweighted). In place allowed.
void rms_norm(const float* x, const float* w, int64_t n, float eps, float* y);

inline float sigmoid(float z) { return 1.0f / (1.0f + std::exp(-z)); }
float softplus(float z);

// One hidden value of a clamped SwiGLU expert, scaled by its routing weight
// (1 for the shared expert). Every expert path calls this, so decode,
// prefill and host-computed experts round alike.
inline float swiglu_act(float g, float u, float clamp, float weight) {
  const float gv = std::min(g, clamp);
  const float uv = std::clamp(u, -clamp, clamp);
  return gv * sigmoid(gv) * uv * weight;
}

// HC pre-mix coefficients from the mixer output m (model-spec §5.2 steps 3-5):
// pre[hc], post[hc], comb[hc*hc] (row i, column j at i*hc + j).
void hc_split_sinkhorn(const float* m, const float* scale, const float* base, const model::ModelConfig& c, float* pre,
                       float* post, float* comb);
// y[D] = sum_i pre_i X_i.
void hc_collapse(const float* X, const float* pre, int64_t hc, int64_t D, float* y);
// X'_j = post_j * out + sum_i comb[i][j] X_i (writes X in place).
void hc_expand(float* X, const float* out, const float* post, const float* comb, int64_t hc, int64_t D);

}  // namespace ds4::backend::cpu
