#include "server/response_store.h"

namespace ds4::server {

ResponseStore::ResponseStore(size_t max_entries, size_t max_bytes) : max_entries_(max_entries), max_bytes_(max_bytes) {}

void ResponseStore::put(const std::string& id, Json items, Json response) {
  // The serialized size stands for what the entry holds.
  const size_t bytes = items.dump().size() + (response.is_null() ? 0 : response.dump().size()) + id.size();
  if (bytes > max_bytes_ || max_entries_ == 0) return;
  std::lock_guard lk(mu_);
  if (auto it = by_id_.find(id); it != by_id_.end()) {
    bytes_ -= it->second->bytes;
    lru_.erase(it->second);
    by_id_.erase(it);
  }
  lru_.push_front({id, std::move(items), std::move(response), bytes});
  by_id_[id] = lru_.begin();
  bytes_ += bytes;
  while (lru_.size() > max_entries_ || bytes_ > max_bytes_) {
    bytes_ -= lru_.back().bytes;
    by_id_.erase(lru_.back().id);
    lru_.pop_back();
  }
}

std::optional<Json> ResponseStore::get(const std::string& id) {
  std::lock_guard lk(mu_);
  auto it = by_id_.find(id);
  if (it == by_id_.end()) return std::nullopt;
  lru_.splice(lru_.begin(), lru_, it->second);
  return it->second->items;
}

std::optional<Json> ResponseStore::response(const std::string& id) {
  std::lock_guard lk(mu_);
  auto it = by_id_.find(id);
  if (it == by_id_.end() || it->second->response.is_null()) return std::nullopt;
  return it->second->response;
}

bool ResponseStore::erase(const std::string& id) {
  std::lock_guard lk(mu_);
  auto it = by_id_.find(id);
  if (it == by_id_.end()) return false;
  bytes_ -= it->second->bytes;
  lru_.erase(it->second);
  by_id_.erase(it);
  return true;
}

size_t ResponseStore::size() const {
  std::lock_guard lk(mu_);
  return lru_.size();
}

}  // namespace ds4::server
