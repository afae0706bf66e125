// Routed experts computed on the host for the CUDA backend's host-resident
// layers (docs/placement.md, "Executing a plan").
#include "backend/cpu/host_experts.h"

#include <algorithm>
#include <vector>

#include "backend/cpu/linear.h"
#include "backend/cpu/ops.h"
#include "util/error.h"
#include "util/thread_pool.h"

namespace ds4::backend::cpu {

void host_routed_experts(const model::LayerWeights& W, const model::ModelConfig& c, uint32_t layer, int64_t n,
                         const float* x, const int32_t* sel, const float* w, float* ye, ThreadPool* pool) {
  const int64_t D = c.n_embd, K = c.n_expert_used, FF = c.expert_ff, E = c.n_expert;
  const float clamp = c.swiglu_clamp[layer];
  // Slots by expert: each expert's rows gathered once (a hash layer may pick
  // one expert twice for a row; each pick is its own slot).
  std::vector<std::vector<int64_t>> slots(static_cast<size_t>(E));
  for (int64_t j = 0; j < n * K; ++j) {
    const int32_t e = sel[j];
    if (e < 0 || e >= E)
      fail("host experts: layer {} row {} choice {} is expert {}, outside [0, {})", layer, j / K, j % K, e, E);
    slots[static_cast<size_t>(e)].push_back(j);
  }
  std::vector<float> xe, g, u, y;
  for (int64_t e = 0; e < E; ++e) {
    const auto& list = slots[static_cast<size_t>(e)];
    if (list.empty()) continue;
    const auto m = static_cast<int64_t>(list.size());
    xe.resize(static_cast<size_t>(m * D));
    for (int64_t i = 0; i < m; ++i) {
      const float* xi = x + (list[static_cast<size_t>(i)] / K) * D;
      std::copy(xi, xi + D, xe.begin() + i * D);
    }
    g.resize(static_cast<size_t>(m * FF));
    u.resize(static_cast<size_t>(m * FF));
    y.resize(static_cast<size_t>(m * D));
    matmul(W.gate_exps.slice(e), xe.data(), D, m, g.data(), FF, pool);
    matmul(W.up_exps.slice(e), xe.data(), D, m, u.data(), FF, pool);
    for (int64_t i = 0; i < m; ++i) {
      const float wt = w[list[static_cast<size_t>(i)]];
      float* gi = g.data() + i * FF;
      const float* ui = u.data() + i * FF;
      for (int64_t k = 0; k < FF; ++k) gi[k] = swiglu_act(gi[k], ui[k], clamp, wt);
    }
    matmul(W.down_exps.slice(e), g.data(), FF, m, y.data(), D, pool);
    for (int64_t i = 0; i < m; ++i)
      std::copy(y.begin() + i * D, y.begin() + (i + 1) * D, ye + list[static_cast<size_t>(i)] * D);
  }
}

}  // namespace ds4::backend::cpu
