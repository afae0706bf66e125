#pragma once
// Prometheus text for GET /metrics: HTTP requests by endpoint and status (kept
// here) and the scheduler's counters (prompt / generated tokens, prefill and
// decode speed, time to first token, queue, active slots, prefix-reuse hits)
// and the prefix cache's (hits and tokens by tier, stores, evictions, bytes).
#include <cstdint>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <utility>

#include "engine/scheduler.h"

namespace ds4::server {

class Metrics {
 public:
  void count_request(const std::string& endpoint, int status);
  // `cache`: the prefix cache's counters, when the server has one.
  std::string render(const engine::SchedulerStats& s, const std::optional<engine::PrefixCacheStats>& cache = std::nullopt) const;

 private:
  mutable std::mutex mu_;
  std::map<std::pair<std::string, int>, int64_t> requests_;
};

// The label a path is counted under: known endpoints as themselves,
// /v1/models/<id> as one label, anything else as "other" (bounded labels).
std::string endpoint_label(const std::string& path);

}  // namespace ds4::server
