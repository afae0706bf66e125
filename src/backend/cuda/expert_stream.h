#pragma once
// Wide passes over a layer whose routed experts stay in host memory (issue 21,
// docs/placement.md "Executing a plan"). The host computing a prefill chunk's
// thousands of slots takes about as long per row as one decode step does, so
// a wide pass instead brings the layer's expert weights over the bus a window
// of experts at a time, into one of two device buffers, while the GPU
// multiplies the window before it (matmul_q8_grouped with an ExpertWindow).
// A pass then costs one read of the layer's experts over PCIe whatever its
// row count; narrow passes (decode) leave the experts to the host.
//
// The host side is the file's read-only mapping. Pinned (cudaHostRegister,
// read-only) the copies are DMA and asynchronous; where pinning is refused or
// the experts are too large a share of the host's memory to lock, the copies
// go through pageable memory: correct, slower, and the host waits for them.
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <span>
#include <utility>
#include <vector>

#include "backend/cuda/cuda_buffer.h"

namespace ds4::backend::cuda {

class ExpertStream {
 public:
  // One tensor of a step: its experts back to back in host memory.
  struct Tensor {
    const uint8_t* host = nullptr;
    size_t mat_bytes = 0;  // one expert's matrix
  };
  // One step: experts [lo, hi) of each of up to kTensors tensors, copied
  // next to each other into one buffer.
  static constexpr int kTensors = 2;
  struct Step {
    Tensor t[kTensors];
    int nt = 0;
    int64_t lo = 0, hi = 0;
  };

  // buffer_bytes: each of the two device buffers. DS4_CUDA_STAGE_EXPERTS=N
  // caps a step at N experts (tests: a tiny model's experts all fit one
  // buffer, so this is how they meet several windows).
  explicit ExpertStream(size_t buffer_bytes);
  ~ExpertStream();
  ExpertStream(const ExpertStream&) = delete;
  ExpertStream& operator=(const ExpertStream&) = delete;

  // Locks host ranges (merged where their pages touch) so that copies from
  // them are DMA. Returns false, logging why, where that was refused: the
  // copies still work, from pageable memory.
  bool pin(std::vector<std::pair<const void*, size_t>> ranges);
  bool pinned() const { return !pinned_.empty(); }

  // Steps covering experts [0, n_expert) of the given tensors (all of them in
  // each step), as many experts a step as fit one buffer.
  std::vector<Step> plan(std::span<const Tensor> tensors, int64_t n_expert) const;

  // Starts a walk over `steps`: the first two steps' copies are queued on the
  // copy stream at once, so they overlap whatever s runs before wait(0).
  void start(std::vector<Step> steps);
  bool started() const { return !steps_.empty(); }
  // Makes s wait until step i's copies are in; device pointer of each of its
  // tensors' window (matrix of expert `lo` first).
  std::vector<const uint8_t*> wait(size_t i, cudaStream_t s);
  // s is done with step i's buffer once its queued work so far has run: the
  // step two ahead may copy into it. After the last step the walk ends.
  void release(size_t i, cudaStream_t s);

  // Step i of the walk under way.
  const Step& step(size_t i) const { return steps_.at(i); }
  size_t buffer_bytes() const { return bytes_; }

 private:
  void queue_copy(size_t i);
  size_t bytes_;
  int64_t cap_ = 0;  // most experts a step (0: as many as fit)
  ds4::cuda::DeviceBuffer buf_[2];
  cudaStream_t copy_ = nullptr;
  cudaEvent_t ready_[2] = {nullptr, nullptr}, free_[2] = {nullptr, nullptr};
  std::vector<Step> steps_;
  std::vector<void*> pinned_;
};

}  // namespace ds4::backend::cuda
