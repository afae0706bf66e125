#pragma once
// Finished Responses API turns kept in memory, so that a request naming
// `previous_response_id` continues one without the client replaying it
// (OpenAI's default, store=true; Codex sends store=false and replays).
//
// What is kept for a response is its whole conversation as Responses input
// items: the input it was given (with any earlier response it continued
// already spliced in) followed by its own output, reasoning included as
// ds4's reasoning blob. A continuation is then exactly the request a client
// replaying everything would have sent, so it renders the same prompt and
// reuses the same cached prefix. Instructions are not carried over, as in
// OpenAI's API. Bounded by entries and bytes, least recently used first; lost
// on restart (the 400 for an unknown id says so).
#include <cstddef>
#include <list>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>

#include "server/json_fields.h"

namespace ds4::server {

class ResponseStore {
 public:
  explicit ResponseStore(size_t max_entries = 512, size_t max_bytes = size_t{256} << 20);
  // Keeps `items` (a JSON array) and the response object as it was returned
  // under `id`; evicts the least recently used entries beyond the bounds. An
  // entry larger than max_bytes is not kept.
  void put(const std::string& id, Json items, Json response = nullptr);
  // The items of `id`, or nothing when it was never stored or has been evicted.
  std::optional<Json> get(const std::string& id);
  // The response object of `id` (GET /v1/responses/{id}).
  std::optional<Json> response(const std::string& id);
  // Forgets `id`; false when it was not there (DELETE /v1/responses/{id}).
  bool erase(const std::string& id);
  size_t size() const;

 private:
  struct Entry {
    std::string id;
    Json items, response;
    size_t bytes = 0;
  };
  size_t max_entries_, max_bytes_;
  mutable std::mutex mu_;
  std::list<Entry> lru_;  // most recently used first
  std::unordered_map<std::string, std::list<Entry>::iterator> by_id_;
  size_t bytes_ = 0;
};

}  // namespace ds4::server
