#pragma once
// A conversation's state on one backend: the token history and the backend's
// KV state (model-spec §9). Feeding tokens in any chunking gives the same
// logits as one prefill.
#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "backend/backend.h"

namespace ds4::engine {

class Session {
 public:
  Session(const backend::Backend& be, const backend::SessionOptions& opt);

  const std::vector<int32_t>& tokens() const { return tokens_; }
  int64_t position() const { return state_->position(); }
  int64_t capacity() const { return state_->capacity(); }
  backend::SessionState& state() { return *state_; }
  // Steering scales used by every later feed (zero: none).
  void set_steering(const backend::Steering& s) { steer_ = s; }
  const backend::Steering& steering() const { return steer_; }
  backend::NumericsMode numerics() const { return state_->numerics(); }

  // Appends `toks`; returns the logits of the last one (vocab floats).
  std::vector<float> feed(std::span<const int32_t> toks);
  // Appends `toks`; returns logits for every one of them, [n, vocab] row-major.
  std::vector<float> feed_all(std::span<const int32_t> toks);
  // Appends without computing logits (prompt prefill).
  void prefill(std::span<const int32_t> toks);

  // In-memory checkpoint: the backend state in canonical layout plus the token
  // history. restore() continues exactly as if nothing happened in between.
  struct Snapshot {
    std::vector<uint8_t> state;
    std::vector<int32_t> tokens;
    size_t bytes() const { return state.size() + tokens.size() * sizeof(int32_t); }
  };
  Snapshot snapshot() const { return {state_->save(), tokens_}; }
  std::vector<uint8_t> state_bytes() const { return state_->save(); }
  void restore(const Snapshot& s) {
    state_->load(s.state);
    tokens_ = s.tokens;
  }

 private:
  const backend::Backend& be_;
  std::unique_ptr<backend::SessionState> state_;
  std::vector<int32_t> tokens_;
  backend::Steering steer_;
};

}  // namespace ds4::engine
