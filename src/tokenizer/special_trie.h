#pragma once
// Byte trie over added-token spellings, for leftmost-longest matching of
// special tokens in rendered prompts (one walk per text position, bounded by
// the longest spelling, instead of comparing every special at every '<').
#include <cstdint>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "tokenizer/bpe.h"

namespace ds4::tokenizer {

class SpecialTrie {
 public:
  void insert(std::string_view text, TokenId id);
  // Id of the longest spelling that starts at text[pos] (its length in `len`),
  // or -1 when none does.
  TokenId longest_at(std::string_view text, size_t pos, size_t& len) const;

 private:
  static uint64_t edge(uint32_t node, uint8_t byte) { return (static_cast<uint64_t>(node) << 8) | byte; }
  std::unordered_map<uint64_t, uint32_t> edges_;
  std::vector<TokenId> terminal_{-1};  // node 0 is the root
  bool first_byte_[256] = {};          // quick reject for most positions
};

}  // namespace ds4::tokenizer
