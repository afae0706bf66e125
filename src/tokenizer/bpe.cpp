#include "tokenizer/bpe.h"

#include <queue>

namespace ds4::tokenizer {

namespace {
constexpr uint64_t kEmpty = ~0ull;
constexpr size_t kScanLimit = 48;  // words up to this many bytes use the scan
}  // namespace

void MergeTable::reserve(size_t n) {
  size_t cap = 16;
  unsigned bits = 4;
  while (cap < 2 * n) {
    cap <<= 1;
    ++bits;
  }
  if (cap <= keys_.size()) return;
  std::vector<uint64_t> old_keys = std::move(keys_);
  std::vector<Entry> old_vals = std::move(vals_);
  keys_.assign(cap, kEmpty);
  vals_.assign(cap, Entry{});
  shift_ = 64 - bits;
  size_ = 0;
  for (size_t i = 0; i < old_keys.size(); ++i)
    if (old_keys[i] != kEmpty)
      insert(static_cast<TokenId>(old_keys[i] >> 32), static_cast<TokenId>(old_keys[i] & 0xffffffffu), old_vals[i].rank,
             old_vals[i].merged);
}

void MergeTable::grow() { reserve(keys_.empty() ? 8 : keys_.size()); }

bool MergeTable::insert(TokenId left, TokenId right, int32_t rank, TokenId merged) {
  if (2 * (size_ + 1) > keys_.size()) grow();
  const uint64_t k = key(left, right);
  const size_t mask = keys_.size() - 1;
  for (size_t s = slot(k);; s = (s + 1) & mask) {
    if (keys_[s] == k) return false;
    if (keys_[s] == kEmpty) {
      keys_[s] = k;
      vals_[s] = {rank, merged};
      ++size_;
      return true;
    }
  }
}

MergeTable::Entry MergeTable::find(TokenId left, TokenId right) const {
  if (keys_.empty()) return {};
  const uint64_t k = key(left, right);
  const size_t mask = keys_.size() - 1;
  for (size_t s = slot(k);; s = (s + 1) & mask) {
    if (keys_[s] == k) return vals_[s];
    if (keys_[s] == kEmpty) return {};
  }
}

void bpe_merge_scan(const MergeTable& merges, std::vector<TokenId>& ids) {
  // ranks[i] caches the merge of (ids[i], ids[i+1]); only the two neighbours of
  // a merge change, so each round is one scan for the minimum plus O(1) lookups.
  std::vector<MergeTable::Entry> pair(ids.size() > 1 ? ids.size() - 1 : 0);
  for (size_t i = 0; i + 1 < ids.size(); ++i) pair[i] = merges.find(ids[i], ids[i + 1]);
  while (ids.size() > 1) {
    size_t best = 0;
    int32_t best_rank = -1;
    for (size_t i = 0; i < pair.size(); ++i)
      if (pair[i].rank >= 0 && (best_rank < 0 || pair[i].rank < best_rank)) {
        best_rank = pair[i].rank;
        best = i;
      }
    if (best_rank < 0) break;
    ids[best] = pair[best].merged;
    ids.erase(ids.begin() + static_cast<std::ptrdiff_t>(best) + 1);
    pair.erase(pair.begin() + static_cast<std::ptrdiff_t>(best));
    if (best > 0) pair[best - 1] = merges.find(ids[best - 1], ids[best]);
    if (best < pair.size()) pair[best] = merges.find(ids[best], ids[best + 1]);
  }
}

void bpe_merge_heap(const MergeTable& merges, std::vector<TokenId>& ids) {
  const size_t n = ids.size();
  if (n < 2) return;
  // Symbols live at their original byte index; a merge keeps the left one and
  // unlinks the right one. Heap entries are validated lazily when popped.
  std::vector<int32_t> prev(n), next(n);
  std::vector<TokenId> sym(ids);
  for (size_t i = 0; i < n; ++i) {
    prev[i] = static_cast<int32_t>(i) - 1;
    next[i] = i + 1 < n ? static_cast<int32_t>(i + 1) : -1;
  }
  struct Cand {
    int32_t rank;
    int32_t left;
    int32_t right;
    TokenId left_id;
    TokenId right_id;
    TokenId merged;
    bool operator>(const Cand& o) const { return rank != o.rank ? rank > o.rank : left > o.left; }
  };
  std::priority_queue<Cand, std::vector<Cand>, std::greater<Cand>> heap;
  auto push = [&](int32_t l) {
    if (l < 0) return;
    const int32_t r = next[l];
    if (r < 0) return;
    const auto e = merges.find(sym[l], sym[r]);
    if (e.rank >= 0) heap.push({e.rank, l, r, sym[l], sym[r], e.merged});
  };
  for (size_t i = 0; i + 1 < n; ++i) push(static_cast<int32_t>(i));
  while (!heap.empty()) {
    const Cand c = heap.top();
    heap.pop();
    if (sym[c.left] != c.left_id || next[c.left] != c.right || sym[c.right] != c.right_id) continue;  // stale
    sym[c.left] = c.merged;
    sym[c.right] = -1;
    const int32_t after = next[c.right];
    next[c.left] = after;
    if (after >= 0) prev[after] = c.left;
    push(prev[c.left]);
    push(c.left);
  }
  ids.clear();
  for (int32_t i = 0; i >= 0; i = next[i]) ids.push_back(sym[i]);
}

void bpe_merge(const MergeTable& merges, std::vector<TokenId>& ids) {
  if (ids.size() <= kScanLimit)
    bpe_merge_scan(merges, ids);
  else
    bpe_merge_heap(merges, ids);
}

}  // namespace ds4::tokenizer
