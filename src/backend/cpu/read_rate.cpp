#include "backend/cpu/read_rate.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>

#include "util/thread_pool.h"

namespace ds4::backend::cpu {

double host_read_gbps(std::span<const std::pair<const void*, size_t>> ranges, ThreadPool& pool, int reps) {
  double best = 0;
  for (int rep = 0; rep < reps; ++rep) {
    size_t bytes = 0;
    std::atomic<uint64_t> sink{0};  // each range's xor lands here, so no read can be dropped
    const auto t0 = std::chrono::steady_clock::now();
    for (const auto& [ptr, len] : ranges) {
      // Whole 8-byte words from an 8-byte boundary (GGUF tensor data is
      // 32-byte aligned; a stray head or tail would change nothing measurable).
      const auto a = reinterpret_cast<uintptr_t>(ptr);
      const uintptr_t b = (a + 7) / 8 * 8;
      if (!ptr || len < 8 + (b - a)) continue;
      const auto* p = reinterpret_cast<const uint64_t*>(b);
      const auto n = static_cast<int64_t>((len - (b - a)) / 8);
      pool.parallel_for(
          n,
          [&](int64_t lo, int64_t hi) {
            uint64_t acc = 0;
            for (int64_t i = lo; i < hi; ++i) acc ^= p[i];
            sink.fetch_xor(acc, std::memory_order_relaxed);
          },
          int64_t{1} << 16);
      bytes += static_cast<size_t>(n) * 8;
    }
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (s > 0 && bytes > 0) best = std::max(best, static_cast<double>(bytes) / (s * 1e9));
  }
  return best;
}

std::vector<std::pair<const void*, size_t>> routed_expert_ranges(const model::LayerWeights& L) {
  std::vector<std::pair<const void*, size_t>> v;
  for (const model::Weight* w : {&L.gate_exps, &L.up_exps, &L.down_exps})
    if (w->present())
      v.emplace_back(w->data, w->row_bytes() * static_cast<size_t>(w->rows()) *
                                  static_cast<size_t>(w->ne.size() > 2 ? w->ne[2] : 1));
  return v;
}

}  // namespace ds4::backend::cpu
