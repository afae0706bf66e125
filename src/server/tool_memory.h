#pragma once
// Exact DSML replay (reference-behavior §4.5): the server remembers, for every
// tool call id it handed out, the DSML block the model actually sampled. When
// a client sends those calls back, the block is rendered byte for byte instead
// of the canonical form built from the client's JSON (which may differ in key
// order, spacing or number formatting), so the prompt matches what the model
// wrote and the slot that holds it is reused.
#include <cstddef>
#include <deque>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "chat/chat.h"

namespace ds4::server {

class ToolMemory {
 public:
  explicit ToolMemory(size_t max_ids = 100000, size_t max_bytes = 64u << 20) : max_ids_(max_ids), max_bytes_(max_bytes) {}
  // Thread-safe.
  void remember(const std::vector<std::string>& ids, const std::string& block);
  // The block when every id is known and all map to the same block.
  std::optional<std::string> lookup(const std::vector<std::string>& ids) const;
  // Sets raw_dsml on assistant messages whose calls resolve to one block.
  void apply(std::vector<chat::Message>& messages) const;

  // The remembered (ids, block) groups whose block occurs in `text`, as JSON
  // bytes that travel with a prefix-cache checkpoint of that text
  // (docs/prefix-cache.md): after a restart, exact replay still renders the
  // conversation the checkpoint holds. "" when none. Runs on the scheduler
  // thread at every checkpoint, so its cost follows the text, not the number
  // of remembered ids: tool blocks are cut out of the text the way the parser
  // cuts them (chat/parse.cpp) and looked up by content.
  std::string export_for(std::string_view text) const;
  // Remembers the groups of an export_for() result. False (nothing taken) for
  // bytes that are not one.
  bool import(std::string_view bytes);

 private:
  mutable std::mutex mu_;
  size_t max_ids_, max_bytes_, bytes_ = 0;
  std::unordered_map<std::string, std::shared_ptr<const std::string>> by_id_;
  // Block text -> the ids that map to it. Ids of one text share one string
  // (by_id_'s), which the key views; a key goes with its last id.
  std::unordered_map<std::string_view, std::vector<std::string>> ids_by_block_;
  std::deque<std::string> order_;  // oldest first
};

}  // namespace ds4::server
