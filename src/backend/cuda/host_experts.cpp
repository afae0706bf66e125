#include "backend/cuda/host_experts.h"

#include <algorithm>

#include "backend/cpu/host_experts.h"
#include "backend/cpu/read_rate.h"
#include "backend/cuda/cuda_check.h"
#include "util/thread_pool.h"

namespace ds4::backend::cuda {

namespace {

template <class T>
T* pinned(int64_t count) {
  void* p = nullptr;
  DS4_CUDA_CHECK(cudaHostAlloc(&p, static_cast<size_t>(count) * sizeof(T), cudaHostAllocDefault));
  return static_cast<T*>(p);
}

}  // namespace

HostExperts::HostExperts(const model::ModelConfig& c, int threads)
    : c_(c), pool_(std::make_unique<ThreadPool>(threads)) {
  const int64_t D = c.n_embd, K = c.n_expert_used;
  x_ = pinned<float>(kChunk * D);
  sel_ = pinned<int32_t>(kChunk * K);
  w_ = pinned<float>(kChunk * K);
  ye_ = pinned<float>(kChunk * K * D);
  DS4_CUDA_CHECK(cudaEventCreateWithFlags(&copied_, cudaEventDisableTiming));
  DS4_CUDA_CHECK(cudaEventCreateWithFlags(&back_, cudaEventDisableTiming));
}

HostExperts::~HostExperts() {
  // A destructor cannot throw: errors here are dropped.
  for (void* p : {static_cast<void*>(x_), static_cast<void*>(sel_), static_cast<void*>(w_), static_cast<void*>(ye_)})
    if (p) (void)cudaFreeHost(p);
  if (copied_) (void)cudaEventDestroy(copied_);
  if (back_) (void)cudaEventDestroy(back_);
}

void HostExperts::run(const model::LayerWeights& W, uint32_t layer, int64_t n, const float* x, const int32_t* sel,
                      const float* w, float* ye, cudaStream_t s, const std::function<void()>& meanwhile) {
  const int64_t D = c_.n_embd, K = c_.n_expert_used;
  for (int64_t s0 = 0; s0 < n; s0 += kChunk) {
    const int64_t m = std::min(kChunk, n - s0);
    if (s0 > 0) DS4_CUDA_CHECK(cudaEventSynchronize(back_));  // the last chunk's ye_ has left
    DS4_CUDA_CHECK(cudaMemcpyAsync(x_, x + s0 * D, static_cast<size_t>(m * D) * sizeof(float), cudaMemcpyDeviceToHost, s));
    DS4_CUDA_CHECK(cudaMemcpyAsync(sel_, sel + s0 * K, static_cast<size_t>(m * K) * sizeof(int32_t),
                                   cudaMemcpyDeviceToHost, s));
    DS4_CUDA_CHECK(cudaMemcpyAsync(w_, w + s0 * K, static_cast<size_t>(m * K) * sizeof(float), cudaMemcpyDeviceToHost, s));
    DS4_CUDA_CHECK(cudaEventRecord(copied_, s));
    if (s0 == 0 && meanwhile) meanwhile();
    DS4_CUDA_CHECK(cudaEventSynchronize(copied_));
    cpu::host_routed_experts(W, c_, layer, m, x_, sel_, w_, ye_, pool_.get());
    DS4_CUDA_CHECK(cudaMemcpyAsync(ye + s0 * K * D, ye_, static_cast<size_t>(m * K * D) * sizeof(float),
                                   cudaMemcpyHostToDevice, s));
    DS4_CUDA_CHECK(cudaEventRecord(back_, s));
  }
}

double HostExperts::read_gbps(const model::LayerWeights& W) const {
  return cpu::host_read_gbps(cpu::routed_expert_ranges(W), *pool_);
}

}  // namespace ds4::backend::cuda
