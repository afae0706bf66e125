#include "server/tool_memory.h"

namespace ds4::server {

void ToolMemory::remember(const std::vector<std::string>& ids, const std::string& block) {
  if (ids.empty() || block.empty() || max_ids_ == 0) return;
  auto shared = std::make_shared<const std::string>(block);
  std::lock_guard lk(mu_);
  for (const auto& id : ids) {
    if (by_id_.count(id)) continue;  // ids are unique; a repeat keeps the first block
    by_id_[id] = shared;
    order_.push_back(id);
    bytes_ += block.size() + id.size();
  }
  // Oldest first; a block shared by several ids is counted once per id, which
  // only makes the bound stricter.
  while (!order_.empty() && (order_.size() > max_ids_ || bytes_ > max_bytes_)) {
    auto it = by_id_.find(order_.front());
    if (it != by_id_.end()) {
      bytes_ -= it->second->size() + it->first.size();
      by_id_.erase(it);
    }
    order_.pop_front();
  }
}

std::optional<std::string> ToolMemory::lookup(const std::vector<std::string>& ids) const {
  if (ids.empty()) return std::nullopt;
  std::lock_guard lk(mu_);
  std::shared_ptr<const std::string> block;
  for (const auto& id : ids) {
    auto it = by_id_.find(id);
    if (it == by_id_.end()) return std::nullopt;
    if (block && *block != *it->second) return std::nullopt;
    block = it->second;
  }
  return *block;
}

void ToolMemory::apply(std::vector<chat::Message>& messages) const {
  for (auto& m : messages) {
    if (m.role != chat::Role::Assistant || m.tool_calls.empty() || !m.raw_dsml.empty()) continue;
    std::vector<std::string> ids;
    for (const auto& c : m.tool_calls) ids.push_back(c.id);
    if (auto b = lookup(ids)) m.raw_dsml = *b;
  }
}

}  // namespace ds4::server
