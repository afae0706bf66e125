#include "server/tool_memory.h"

#include <algorithm>
#include <map>

#include <nlohmann/json.hpp>

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

std::string ToolMemory::export_for(std::string_view text) const {
  std::map<const std::string*, std::vector<std::string>> groups;  // block -> its ids, in id order
  {
    std::lock_guard lk(mu_);
    for (const auto& [id, block] : by_id_)
      if (text.find(*block) != std::string_view::npos) groups[block.get()].push_back(id);
    if (groups.empty()) return {};
    nlohmann::json out = {{"v", 1}, {"tool_replay", nlohmann::json::array()}};
    for (auto& [block, ids] : groups) {
      std::sort(ids.begin(), ids.end());
      out["tool_replay"].push_back({{"ids", ids}, {"dsml", *block}});
    }
    return out.dump();
  }
}

bool ToolMemory::import(std::string_view bytes) {
  const auto j = nlohmann::json::parse(bytes, nullptr, false);
  if (j.is_discarded() || !j.is_object() || j.value("v", 0) != 1 || !j.contains("tool_replay") ||
      !j["tool_replay"].is_array())
    return false;
  std::vector<std::pair<std::vector<std::string>, std::string>> groups;
  for (const auto& g : j["tool_replay"]) {
    if (!g.is_object() || !g.contains("ids") || !g["ids"].is_array() || !g.contains("dsml") || !g["dsml"].is_string())
      return false;
    std::vector<std::string> ids;
    for (const auto& id : g["ids"]) {
      if (!id.is_string()) return false;
      ids.push_back(id.get<std::string>());
    }
    groups.emplace_back(std::move(ids), g["dsml"].get<std::string>());
  }
  for (const auto& [ids, block] : groups) remember(ids, block);
  return true;
}

}  // namespace ds4::server
