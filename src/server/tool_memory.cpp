#include "server/tool_memory.h"

#include <algorithm>
#include <set>

#include <nlohmann/json.hpp>

#include "chat/dsml_syntax.h"

namespace ds4::server {

void ToolMemory::remember(const std::vector<std::string>& ids, const std::string& block) {
  if (ids.empty() || block.empty() || max_ids_ == 0) return;
  std::lock_guard lk(mu_);
  // One string per block text, shared by every id that maps to it.
  std::shared_ptr<const std::string> shared;
  if (auto g = ids_by_block_.find(block); g != ids_by_block_.end()) shared = by_id_.at(g->second.front());
  if (!shared) shared = std::make_shared<const std::string>(block);
  for (const auto& id : ids) {
    if (by_id_.count(id)) continue;  // ids are unique; a repeat keeps the first block
    by_id_[id] = shared;
    ids_by_block_[*shared].push_back(id);
    order_.push_back(id);
    bytes_ += block.size() + id.size();
  }
  // Oldest first; a block shared by several ids is counted once per id, which
  // only makes the bound stricter.
  while (!order_.empty() && (order_.size() > max_ids_ || bytes_ > max_bytes_)) {
    auto it = by_id_.find(order_.front());
    if (it != by_id_.end()) {
      bytes_ -= it->second->size() + it->first.size();
      auto g = ids_by_block_.find(*it->second);
      std::erase(g->second, it->first);
      if (g->second.empty()) ids_by_block_.erase(g);  // before the string it views can go
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
  // Candidates: from each calls-start marker (or the "\n\n" before it, which
  // the parser includes when present) to the first calls-end marker after it.
  std::vector<std::string_view> candidates;
  for (const auto& syn : chat::detail::kSyntaxes) {
    for (size_t p = text.find(syn.calls_start); p != std::string_view::npos; p = text.find(syn.calls_start, p + 1)) {
      const size_t e = text.find(syn.calls_end, p);
      if (e == std::string_view::npos) break;
      const size_t end = e + syn.calls_end.size();
      candidates.push_back(text.substr(p, end - p));
      if (p >= 2 && text.substr(p - 2, 2) == "\n\n") candidates.push_back(text.substr(p - 2, end - p + 2));
    }
  }
  if (candidates.empty()) return {};
  nlohmann::json groups = nlohmann::json::array();
  {
    std::lock_guard lk(mu_);
    std::set<std::string_view> seen;
    for (std::string_view c : candidates) {
      auto g = ids_by_block_.find(c);
      if (g == ids_by_block_.end() || !seen.insert(g->first).second) continue;
      std::vector<std::string> ids = g->second;
      std::sort(ids.begin(), ids.end());
      groups.push_back({{"ids", ids}, {"dsml", std::string(g->first)}});
    }
  }
  if (groups.empty()) return {};
  return nlohmann::json{{"v", 1}, {"tool_replay", std::move(groups)}}.dump();
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
