#include "tokenizer/special_trie.h"

namespace ds4::tokenizer {

void SpecialTrie::insert(std::string_view text, TokenId id) {
  if (text.empty()) return;
  first_byte_[static_cast<uint8_t>(text[0])] = true;
  uint32_t node = 0;
  for (char c : text) {
    const auto [it, added] = edges_.try_emplace(edge(node, static_cast<uint8_t>(c)), static_cast<uint32_t>(terminal_.size()));
    if (added) terminal_.push_back(-1);
    node = it->second;
  }
  if (terminal_[node] < 0) terminal_[node] = id;  // first id with this spelling wins
}

TokenId SpecialTrie::longest_at(std::string_view text, size_t pos, size_t& len) const {
  if (!first_byte_[static_cast<uint8_t>(text[pos])]) return -1;
  uint32_t node = 0;
  TokenId best = -1;
  for (size_t i = pos; i < text.size(); ++i) {
    auto it = edges_.find(edge(node, static_cast<uint8_t>(text[i])));
    if (it == edges_.end()) break;
    node = it->second;
    if (terminal_[node] >= 0) {
      best = terminal_[node];
      len = i + 1 - pos;
    }
  }
  return best;
}

}  // namespace ds4::tokenizer
