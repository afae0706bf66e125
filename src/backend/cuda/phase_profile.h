#pragma once
// Where a CUDA forward pass spends its GPU time (`ds4 bench --profile`): the
// backend records an event on its stream after each phase of work it queues
// (mark), and at the end of each pass waits for the stream and charges the
// time between consecutive events to the phase the second one names, whatever
// it was (kernels, or gaps while the GPU waited for the host). Profiling syncs
// once per pass, so it runs a little slower than a plain forward; off, every
// call is a no-op.
#include <cuda_runtime_api.h>

#include <string>
#include <utility>
#include <vector>

#include "backend/phase_table.h"

namespace ds4::backend::cuda {

class PhaseProfile {
 public:
  explicit PhaseProfile(bool on);
  ~PhaseProfile();
  PhaseProfile(const PhaseProfile&) = delete;
  PhaseProfile& operator=(const PhaseProfile&) = delete;

  bool on() const { return on_; }
  // Starts a pass on `s` (records the first event).
  void begin(cudaStream_t s);
  // The work queued on `s` since the last mark was phase `p` of a layer of kind `k`.
  void mark(cudaStream_t s, Phase p, LayerKind k) {
    if (on_) record(s, p, k);
  }
  // Ends a pass of `rows` token rows: waits for `s`, adds up the intervals.
  // `host_seconds`: the time the host spent queueing the pass.
  void end(cudaStream_t s, int64_t rows, double host_seconds);
  // The table of everything since the last take (per token row), and a reset.
  std::string take() { return on_ ? table_.take("GPU", true) : std::string(); }

 private:
  void record(cudaStream_t s, Phase p, LayerKind k);
  void harvest(cudaStream_t s);  // waits for `s`, adds the intervals of the events in use

  bool on_;
  std::vector<cudaEvent_t> ev_;  // a pool, created once
  std::vector<std::pair<Phase, LayerKind>> tag_;  // tag_[i]: what ended at ev_[i + 1]
  size_t used_ = 0;
  PhaseTable table_;
};

}  // namespace ds4::backend::cuda
