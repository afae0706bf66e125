#include "engine/session.h"

#include "util/error.h"

namespace ds4::engine {

Session::Session(const backend::Backend& be, const backend::SessionOptions& opt)
    : be_(be), state_(be.new_session(opt)) {}

std::vector<float> Session::feed_all(std::span<const int32_t> toks) {
  const size_t V = be_.model().config.n_vocab;
  std::vector<float> logits(toks.size() * V);
  const backend::SeqStep step{state_.get(), toks, backend::Logits::all, logits, steer_};
  be_.forward(std::span<const backend::SeqStep>(&step, 1));
  tokens_.insert(tokens_.end(), toks.begin(), toks.end());
  return logits;
}

std::vector<float> Session::feed(std::span<const int32_t> toks) {
  if (toks.empty()) fail("session: feed() needs at least one token");
  const size_t V = be_.model().config.n_vocab;
  std::vector<float> logits(V);
  const backend::SeqStep step{state_.get(), toks, backend::Logits::last, logits, steer_};
  be_.forward(std::span<const backend::SeqStep>(&step, 1));
  tokens_.insert(tokens_.end(), toks.begin(), toks.end());
  return logits;
}

void Session::prefill(std::span<const int32_t> toks) {
  const backend::SeqStep step{state_.get(), toks, backend::Logits::none, {}, steer_};
  be_.forward(std::span<const backend::SeqStep>(&step, 1));
  tokens_.insert(tokens_.end(), toks.begin(), toks.end());
}

}  // namespace ds4::engine
