#include "engine/stop_matcher.h"

#include <algorithm>
#include <utility>

namespace ds4::engine {

StopMatcher::StopMatcher(std::vector<std::string> stops) {
  // Empty strings would match everywhere; callers' APIs ignore them too.
  for (auto& s : stops)
    if (!s.empty()) stops_.push_back(std::move(s));
}

std::string StopMatcher::push(std::string_view piece) {
  if (hit_) return {};
  pending_.append(piece);
  if (stops_.empty()) return std::exchange(pending_, {});
  // Earliest full match wins (the text before it is all that is ever shown).
  size_t first = std::string::npos;
  const std::string* which = nullptr;
  for (const auto& s : stops_)
    if (const size_t at = pending_.find(s); at < first) {
      first = at;
      which = &s;
    }
  if (which) {
    hit_ = true;
    matched_ = *which;
    std::string out = pending_.substr(0, first);
    pending_.clear();
    return out;
  }
  // Hold the longest suffix that is a proper prefix of some stop string.
  size_t keep = 0;
  for (const auto& s : stops_) {
    const size_t max_len = std::min(s.size() - 1, pending_.size());
    for (size_t len = max_len; len > keep; --len)
      if (std::string_view(pending_).substr(pending_.size() - len) == std::string_view(s).substr(0, len)) {
        keep = len;
        break;
      }
  }
  std::string out = pending_.substr(0, pending_.size() - keep);
  pending_.erase(0, pending_.size() - keep);
  return out;
}

std::string StopMatcher::flush() {
  if (hit_) return {};
  return std::exchange(pending_, {});
}

}  // namespace ds4::engine
