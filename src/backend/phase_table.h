#pragma once
// Where a backend's forward passes spend their time (`ds4 bench --profile`),
// by phase of the layer program and by kind of layer. Each backend measures
// its own way (CUDA: events on its stream; CPU: the clock of the thread that
// drives the pass) and adds the intervals here; take() prints the table per
// token row and starts over.
#include <fmt/format.h>

#include <array>
#include <iterator>
#include <cstdint>
#include <string>
#include <string_view>

namespace ds4::backend {

enum class Phase : uint8_t {
  embed,        // token rows into the HC streams
  hc_pre,       // HC pre-mix: norm, mixer matvec, Sinkhorn split, collapse
  attn_proj,    // attention norms and the projections of all rows (q, kv, compressors, indexer q/weights)
  attn_kv,      // the raw KV rows into the ring
  compressor,   // compressor and indexer-compressor windows
  indexer,      // indexer scores over the compressed rows
  topk,         // indexer top-k
  attend,       // attention over the ring and compressed rows (CPU: with the indexer and compressors)
  attn_out,     // grouped output projection
  router,       // FFN norm, router matvec, expert choice
  experts,      // routed experts
  shared,       // shared expert
  hc_post,      // steering and the HC post-mix
  head,         // output HC, norm, vocabulary matvec
  logits_copy,  // logits to the caller
  count
};

// The layer a phase ran in: outside the layers, sliding-window,
// compressed-sparse (ratio 4), heavily compressed (larger ratios).
enum class LayerKind : uint8_t { outside, sliding, csa, hca, count };
inline LayerKind layer_kind(uint32_t compress_ratio);

class PhaseTable {
 public:
  void add(Phase p, LayerKind k, double ms) { ms_[static_cast<size_t>(k)][static_cast<size_t>(p)] += ms; }
  // A pass of `rows` token rows ended; `host_s`: the time the host spent queueing
  // it (a backend that queues work asynchronously; 0 otherwise).
  void pass(int64_t rows, double host_s = 0) {
    rows_ += rows;
    ++passes_;
    host_s_ += host_s;
  }
  // The table since the last take, per token row; `what` names the time
  // measured ("GPU", "wall"); says so when no pass ran. Resets.
  std::string take(std::string_view what, bool host_column);

 private:
  static constexpr size_t kPhases = static_cast<size_t>(Phase::count), kKinds = static_cast<size_t>(LayerKind::count);
  std::array<std::array<double, kPhases>, kKinds> ms_{};
  int64_t rows_ = 0, passes_ = 0;
  double host_s_ = 0;
};

namespace phase_detail {

inline constexpr const char* kPhaseNames[] = {"embed",   "hc_pre", "attn_proj", "attn_kv",  "compressor",
                                       "indexer", "topk",   "attend",    "attn_out", "router",
                                       "experts", "shared", "hc_post",   "head",     "logits_copy"};
static_assert(std::size(kPhaseNames) == static_cast<size_t>(Phase::count));
inline constexpr const char* kKindNames[] = {"outside", "sliding", "csa", "hca"};
static_assert(std::size(kKindNames) == static_cast<size_t>(LayerKind::count));

}  // namespace phase_detail

inline LayerKind layer_kind(uint32_t r) { return r == 0 ? LayerKind::sliding : r == 4 ? LayerKind::csa : LayerKind::hca; }

inline std::string PhaseTable::take(std::string_view what, bool host_column) {
  if (rows_ == 0) return "no forward pass since the last table\n";
  const double n = static_cast<double>(rows_);
  double total = 0;
  std::array<double, kKinds> by_kind{};
  for (size_t k = 0; k < kKinds; ++k)
    for (double v : ms_[k]) {
      total += v;
      by_kind[k] += v;
    }
  std::string out = fmt::format("{} token rows in {} passes; {} {:.3f} ms per row", rows_, passes_, what, total / n);
  if (host_column) out += fmt::format(", host queueing {:.3f} ms per row", host_s_ * 1e3 / n);
  out += fmt::format("\n{:<12} {:>10} {:>7}", "phase", "ms/row", "share");
  for (const char* kn : phase_detail::kKindNames) out += fmt::format(" {:>9}", kn);
  out += "\n";
  for (size_t p = 0; p < kPhases; ++p) {
    double row = 0;
    for (size_t k = 0; k < kKinds; ++k) row += ms_[k][p];
    if (row == 0) continue;
    out += fmt::format("{:<12} {:>10.4f} {:>6.1f}%", phase_detail::kPhaseNames[p], row / n, total > 0 ? 100.0 * row / total : 0.0);
    for (size_t k = 0; k < kKinds; ++k) out += fmt::format(" {:>9.4f}", ms_[k][p] / n);
    out += "\n";
  }
  out += fmt::format("{:<12} {:>10.4f} {:>7}", "total", total / n, "");
  for (size_t k = 0; k < kKinds; ++k) out += fmt::format(" {:>9.4f}", by_kind[k] / n);
  out += "\n";
  for (auto& a : ms_) a.fill(0);
  rows_ = passes_ = 0;
  host_s_ = 0;
  return out;
}

}  // namespace ds4::backend
