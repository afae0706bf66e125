#include "backend/cuda/phase_profile.h"

#include "backend/cuda/cuda_check.h"

namespace ds4::backend::cuda {
namespace {

// Events in the pool; a pass with more marks is read in parts.
constexpr size_t kEvents = 16384;

}  // namespace

PhaseProfile::PhaseProfile(bool on) : on_(on) {
  if (!on_) return;
  ev_.resize(kEvents);
  for (cudaEvent_t& e : ev_) DS4_CUDA_CHECK(cudaEventCreate(&e));
  tag_.resize(kEvents);
}

PhaseProfile::~PhaseProfile() {
  for (cudaEvent_t e : ev_) (void)cudaEventDestroy(e);
}

void PhaseProfile::begin(cudaStream_t s) {
  if (!on_) return;
  used_ = 0;
  DS4_CUDA_CHECK(cudaEventRecord(ev_[used_++], s));
}

void PhaseProfile::record(cudaStream_t s, Phase p, LayerKind k) {
  if (used_ == 0) return;  // no pass begun
  if (used_ == ev_.size()) {
    // The pool is full: read what it holds, then go on from its last event.
    harvest(s);
    std::swap(ev_[0], ev_[used_ - 1]);
    used_ = 1;
  }
  tag_[used_ - 1] = {p, k};
  DS4_CUDA_CHECK(cudaEventRecord(ev_[used_++], s));
}

void PhaseProfile::harvest(cudaStream_t s) {
  DS4_CUDA_CHECK(cudaStreamSynchronize(s));
  for (size_t i = 1; i < used_; ++i) {
    float ms = 0;
    DS4_CUDA_CHECK(cudaEventElapsedTime(&ms, ev_[i - 1], ev_[i]));
    const auto [p, k] = tag_[i - 1];
    table_.add(p, k, ms);
  }
}

void PhaseProfile::end(cudaStream_t s, int64_t rows, double host_seconds) {
  if (!on_ || used_ == 0) return;
  harvest(s);
  used_ = 0;
  table_.pass(rows, host_seconds);
}

}  // namespace ds4::backend::cuda
