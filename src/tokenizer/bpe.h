#pragma once
// Byte-level BPE merges over token ids. A word (one pre-tokenizer piece) starts
// as one symbol per byte; the adjacent pair with the lowest merge rank is merged
// repeatedly, the leftmost pair first among equal ranks (Hugging Face's order).
#include <cstdint>
#include <string_view>
#include <vector>

namespace ds4::tokenizer {

using TokenId = int32_t;

// Open-addressing map from a (left, right) id pair to its merge rank and the id
// of the merged token. Built once; lookups are a multiply and a probe or two.
class MergeTable {
 public:
  struct Entry {
    int32_t rank = -1;  // -1: no merge
    TokenId merged = -1;
  };
  void reserve(size_t n);
  // Returns false when the pair is already present (the first rank is kept).
  bool insert(TokenId left, TokenId right, int32_t rank, TokenId merged);
  Entry find(TokenId left, TokenId right) const;
  size_t size() const { return size_; }

 private:
  static uint64_t key(TokenId l, TokenId r) {
    return (static_cast<uint64_t>(static_cast<uint32_t>(l)) << 32) | static_cast<uint32_t>(r);
  }
  size_t slot(uint64_t k) const { return static_cast<size_t>((k * 0x9E3779B97F4A7C15ull) >> shift_); }
  void grow();
  std::vector<uint64_t> keys_;
  std::vector<Entry> vals_;
  size_t size_ = 0;
  unsigned shift_ = 64;
};

// Merges `ids` (initially one per byte) in place. Two implementations with the
// same result: a quadratic scan for short words (fast in practice) and a heap
// over a linked list for long ones, so long runs stay O(n log n).
void bpe_merge(const MergeTable& merges, std::vector<TokenId>& ids);
void bpe_merge_scan(const MergeTable& merges, std::vector<TokenId>& ids);
void bpe_merge_heap(const MergeTable& merges, std::vector<TokenId>& ids);

}  // namespace ds4::tokenizer
