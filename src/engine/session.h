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
  Session(const backend::Backend& be, backend::NumericsMode mode);

  const std::vector<int32_t>& tokens() const { return tokens_; }
  int64_t position() const { return state_->position(); }
  backend::NumericsMode numerics() const { return state_->numerics(); }

  // Appends `toks`; returns the logits of the last one (vocab floats).
  std::vector<float> feed(std::span<const int32_t> toks);
  // Appends `toks`; returns logits for every one of them, [n, vocab] row-major.
  std::vector<float> feed_all(std::span<const int32_t> toks);
  // Appends without computing logits (prompt prefill).
  void prefill(std::span<const int32_t> toks);

 private:
  const backend::Backend& be_;
  std::unique_ptr<backend::SessionState> state_;
  std::vector<int32_t> tokens_;
};

}  // namespace ds4::engine
