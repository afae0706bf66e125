#pragma once
// The CUDA backend's side of a layer whose routed experts stay in host memory
// (issue 21, docs/placement.md "Executing a plan"): the GPU routes the rows,
// the FFN inputs and choices come over to pinned host buffers, the host
// computes every slot with the CPU backend's kernels
// (backend/cpu/host_experts.h), and the slot outputs go back for the GPU's
// moe_sum. Chunks of kChunk rows bound the pinned memory.
#include <cuda_runtime.h>

#include <cstdint>
#include <functional>
#include <memory>

#include "model/config.h"
#include "model/weights.h"

namespace ds4 {
class ThreadPool;
}

namespace ds4::backend::cuda {

class HostExperts {
 public:
  static constexpr int64_t kChunk = 256;
  // threads: the host pool's size (0: hardware concurrency).
  HostExperts(const model::ModelConfig& c, int threads);
  ~HostExperts();
  HostExperts(const HostExperts&) = delete;
  HostExperts& operator=(const HostExperts&) = delete;

  // Rows [0, n) of a pass, device pointers: x [n][D] the FFN input, sel and
  // w [n][K] the routing; ye [n][K][D] receives slot j = i * K + k's output.
  // Queued on stream s; `meanwhile` is called once the first chunk's copies
  // are queued and before the host waits for them, to queue GPU work that
  // does not need ye (the shared expert). Returns with the last copy back
  // queued on s.
  void run(const model::LayerWeights& W, uint32_t layer, int64_t n, const float* x, const int32_t* sel, const float* w,
           float* ye, cudaStream_t s, const std::function<void()>& meanwhile);

  // GB/s at which the host pool reads a layer's routed experts (best of
  // three passes over them), for the decode bound `ds4 bench` prints.
  double read_gbps(const model::LayerWeights& W) const;

 private:
  const model::ModelConfig& c_;
  std::unique_ptr<ThreadPool> pool_;
  float* x_ = nullptr;   // pinned [kChunk][D]
  int32_t* sel_ = nullptr;  // pinned [kChunk][K]
  float* w_ = nullptr;   // pinned [kChunk][K]
  float* ye_ = nullptr;  // pinned [kChunk][K][D]
  cudaEvent_t copied_ = nullptr, back_ = nullptr;
};

}  // namespace ds4::backend::cuda
