#include "backend/cuda/phase_profile.h"

#include <fmt/format.h>

#include "backend/cuda/cuda_check.h"

namespace ds4::backend::cuda {
namespace {

// Events in the pool; a pass with more marks is read in parts.
constexpr size_t kEvents = 16384;

constexpr const char* kPhaseNames[] = {"embed",  "hc_pre",  "attn_proj", "attn_kv", "compressor",
                                       "indexer", "topk",   "attend",    "attn_out", "router",
                                       "experts", "shared", "hc_post",   "head",    "logits_copy"};
static_assert(std::size(kPhaseNames) == static_cast<size_t>(Phase::count));
constexpr const char* kKindNames[] = {"outside", "sliding", "csa", "hca"};

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

void PhaseProfile::record(cudaStream_t s, Phase p, Kind k) {
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
    ms_[k][static_cast<size_t>(p)] += ms;
  }
}

void PhaseProfile::end(cudaStream_t s, int64_t rows, double host_seconds) {
  if (!on_ || used_ == 0) return;
  harvest(s);
  used_ = 0;
  rows_ += rows;
  ++passes_;
  host_s_ += host_seconds;
}

std::string PhaseProfile::take() {
  if (!on_) return {};
  std::string out;
  const double n = rows_ > 0 ? static_cast<double>(rows_) : 1.0;
  double total = 0;
  std::array<double, kinds> by_kind{};
  for (size_t k = 0; k < kinds; ++k)
    for (double v : ms_[k]) {
      total += v;
      by_kind[k] += v;
    }
  out += fmt::format("cuda profile: {} token rows in {} passes; GPU {:.3f} ms per row, host queueing {:.3f} ms per row\n",
                     rows_, passes_, total / n, host_s_ * 1e3 / n);
  out += fmt::format("{:<12} {:>10} {:>7}", "phase", "ms/row", "share");
  for (const char* kn : kKindNames) out += fmt::format(" {:>9}", kn);
  out += "\n";
  for (size_t p = 0; p < static_cast<size_t>(Phase::count); ++p) {
    double row = 0;
    for (size_t k = 0; k < kinds; ++k) row += ms_[k][p];
    if (row == 0) continue;
    out += fmt::format("{:<12} {:>10.4f} {:>6.1f}%", kPhaseNames[p], row / n, total > 0 ? 100.0 * row / total : 0.0);
    for (size_t k = 0; k < kinds; ++k) out += fmt::format(" {:>9.4f}", ms_[k][p] / n);
    out += "\n";
  }
  out += fmt::format("{:<12} {:>10.4f} {:>7}", "total", total / n, "");
  for (size_t k = 0; k < kinds; ++k) out += fmt::format(" {:>9.4f}", by_kind[k] / n);
  out += "\n";
  for (auto& a : ms_) a.fill(0);
  rows_ = passes_ = 0;
  host_s_ = 0;
  return out;
}

}  // namespace ds4::backend::cuda
