#pragma once
// Where a CUDA forward pass spends its GPU time (`ds4 bench --profile`): the
// backend records an event on its stream after each phase of work it queues
// (mark), and at the end of each pass waits for the stream and reads the
// times between consecutive events. The time between two events belongs to
// the phase the second one names, whatever it was (kernels, gaps between
// them while the GPU waited for the host). Profiling syncs once per pass, so
// it runs a little slower than a plain forward; off, every call is a no-op.
#include <cuda_runtime_api.h>

#include <array>
#include <cstdint>
#include <string>
#include <vector>

namespace ds4::backend::cuda {

enum class Phase : uint8_t {
  embed,         // token rows into the HC streams
  hc_pre,        // HC pre-mix: norm, mixer matvec, Sinkhorn split, collapse
  attn_proj,     // attention norms and the projections of all rows (q, kv, compressors, indexer q/weights)
  attn_kv,       // per row: RoPE of q and k, the raw KV ring row
  compressor,    // per row: compressor and indexer-compressor windows
  indexer,       // per row: indexer scores over the compressed rows
  topk,          // per row: indexer top-k
  attend,        // per row: attention over the ring and compressed rows
  attn_out,      // grouped output projection
  router,        // FFN norm, router matvec, expert choice
  experts,       // routed experts
  shared,        // shared expert
  hc_post,       // steering and the HC post-mix
  head,          // output HC, norm, vocabulary matvec
  logits_copy,   // logits back to the host
  count
};

class PhaseProfile {
 public:
  // Layer kinds a phase is charged to beside its own total: outside the
  // layers, sliding-window, compressed-sparse (ratio 4), heavily compressed.
  enum Kind : uint8_t { outside, sliding, csa, hca, kinds };

  explicit PhaseProfile(bool on);
  ~PhaseProfile();
  PhaseProfile(const PhaseProfile&) = delete;
  PhaseProfile& operator=(const PhaseProfile&) = delete;

  bool on() const { return on_; }
  // Starts a pass on `s` (records the first event).
  void begin(cudaStream_t s);
  // The work queued on `s` since the last mark was phase `p` of a layer of kind `k`.
  void mark(cudaStream_t s, Phase p, Kind k) {
    if (on_) record(s, p, k);
  }
  // Ends a pass of `rows` token rows: waits for `s`, adds up the intervals.
  // `host_seconds`: the time the host spent queueing the pass.
  void end(cudaStream_t s, int64_t rows, double host_seconds);
  // The table of everything since the last take (per token row), and a reset.
  std::string take();

 private:
  void record(cudaStream_t s, Phase p, Kind k);
  void harvest(cudaStream_t s);  // waits for `s`, adds the intervals of the events in use

  bool on_;
  std::vector<cudaEvent_t> ev_;  // a pool, created once
  std::vector<std::pair<Phase, Kind>> tag_;  // tag_[i]: what ended at ev_[i + 1]
  size_t used_ = 0;
  std::array<std::array<double, static_cast<size_t>(Phase::count)>, kinds> ms_{};
  int64_t rows_ = 0, passes_ = 0;
  double host_s_ = 0;
};

}  // namespace ds4::backend::cuda
