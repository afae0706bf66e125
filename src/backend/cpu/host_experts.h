#pragma once
// The routed experts of a layer whose expert weights stay in host memory
// (issue 21: a model larger than the GPU). The GPU routes the rows, hands
// over their FFN inputs and choices, and adds what comes back; the host
// computes each choice ("slot") with the CPU backend's kernels.
#include <cstdint>

#include "model/config.h"
#include "model/weights.h"

namespace ds4 {
class ThreadPool;
}

namespace ds4::backend::cpu {

// For rows i < n and choices k < K = c.n_expert_used: slot j = i * K + k,
// expert e = sel[j], routing weight w[j];
//   ye[j * D ...] = down_e(swiglu(gate_e x_i, up_e x_i, clamp) * w[j])
// with x_i = x + i * D, D = c.n_embd, the layer's SwiGLU clamp, and the CPU
// backend's kernels and activation quantization (its experts compute the
// same per use). Each expert's slots run as one matmul per matrix, so an
// expert's weights are read once for all the rows that chose it. Throws
// ds4::Error for an expert id outside [0, n_expert).
void host_routed_experts(const model::LayerWeights& W, const model::ModelConfig& c, uint32_t layer, int64_t n,
                         const float* x, const int32_t* sel, const float* w, float* ye, ThreadPool* pool);

}  // namespace ds4::backend::cpu
