#include "engine/generate.h"

#include <chrono>
#include <cmath>
#include <limits>

#include "engine/stop_matcher.h"
#include "util/error.h"

namespace ds4::engine {

std::string_view stop_reason_name(StopReason r) {
  switch (r) {
    case StopReason::eos: return "eos";
    case StopReason::stop_string: return "stop";
    case StopReason::max_tokens: return "length";
    case StopReason::context_full: return "context_full";
    case StopReason::interrupted: return "interrupted";
  }
  return "eos";
}

namespace {

using Clock = std::chrono::steady_clock;
double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

bool interrupted(const GenerateOptions& o) { return o.interrupt && o.interrupt->load(std::memory_order_relaxed); }

// Routes decoded text through one stop matcher per channel, so a stop string
// never spans the reasoning/answer boundary and the </think> marker is hidden.
class Streamer {
 public:
  Streamer(const Engine& e, const GenerateOptions& o, GenerateResult& r)
      : e_(e), o_(o), r_(r), dec_(e.tokenizer()), stop_(o.stop), reasoning_(o.thinking) {}

  // Returns true when a stop string was hit.
  bool push(int32_t id) {
    const SpecialIds& s = e_.specials();
    if (id == s.think_close || id == s.think_open) {
      if (id == s.think_close && reasoning_) {
        // Close the reasoning channel: its held-back text is final now.
        emit(stop_.push(dec_.flush()));
        if (stop_.hit()) return true;
        emit(stop_.flush());
        stop_ = StopMatcher(o_.stop);
        reasoning_ = false;
      }
      return false;
    }
    emit(stop_.push(dec_.push(id)));
    return stop_.hit();
  }
  void finish() {
    emit(stop_.push(dec_.flush()));
    emit(stop_.flush());
  }

 private:
  void emit(const std::string& text) {
    if (text.empty()) return;
    (reasoning_ ? r_.reasoning : r_.text) += text;
    if (o_.on_text) o_.on_text(text, reasoning_);
  }

  const Engine& e_;
  const GenerateOptions& o_;
  GenerateResult& r_;
  tokenizer::StreamDecoder dec_;
  StopMatcher stop_;
  bool reasoning_;
};

}  // namespace

GenerateResult generate(const Engine& engine, Session& session, std::span<const int32_t> prompt,
                        const GenerateOptions& opt) {
  GenerateResult r;
  r.prompt_tokens = static_cast<int64_t>(prompt.size());
  const int64_t ctx = opt.ctx_size;
  // One slot must stay free for the first generated token.
  if (session.position() + r.prompt_tokens >= ctx)
    fail("prompt has {} tokens ({} in total with the conversation), but the context is {} tokens", r.prompt_tokens,
         session.position() + r.prompt_tokens, ctx);
  if (prompt.empty() && session.position() == 0) fail("generate: empty prompt");

  // Prefill all but the last prompt token without logits, in chunks.
  const auto t0 = Clock::now();
  const size_t n_pre = prompt.empty() ? 0 : prompt.size() - 1;
  const size_t chunk = static_cast<size_t>(std::max<int64_t>(1, opt.prefill_chunk));
  for (size_t b = 0; b < n_pre; b += chunk) {
    if (interrupted(opt)) {
      r.stop = StopReason::interrupted;
      r.prefill_seconds = seconds_since(t0);
      return r;
    }
    const size_t e = std::min(n_pre, b + chunk);
    session.prefill(prompt.subspan(b, e - b));
    if (opt.on_prefill) opt.on_prefill(static_cast<int64_t>(e), r.prompt_tokens);
  }
  std::vector<float> logits;
  if (!prompt.empty()) {
    logits = session.feed(prompt.last(1));
    if (opt.on_prefill) opt.on_prefill(r.prompt_tokens, r.prompt_tokens);
  }
  r.prefill_seconds = seconds_since(t0);

  const SpecialIds& ids = engine.specials();
  const size_t tok_vocab = engine.tokenizer().vocab_size();
  Sampler answer(opt.sampling), thinking(opt.thinking_sampling);
  bool in_reasoning = opt.thinking;
  Streamer out(engine, opt, r);
  const auto t1 = Clock::now();
  for (;;) {
    if (static_cast<int64_t>(r.tokens.size()) >= opt.max_tokens) {
      r.stop = StopReason::max_tokens;
      break;
    }
    if (interrupted(opt)) {
      r.stop = StopReason::interrupted;
      break;
    }
    // The next token would occupy this position.
    if (session.position() + (r.unfed ? 1 : 0) >= ctx) {
      r.stop = StopReason::context_full;
      r.message = fmt::format("context full ({} tokens): generation stopped", ctx);
      break;
    }
    if (r.unfed) {
      logits = session.feed(std::span<const int32_t>(&*r.unfed, 1));
      r.unfed.reset();
    }
    // Ids past the tokenizer's vocabulary (padding rows) cannot be decoded.
    for (size_t i = tok_vocab; i < logits.size(); ++i) logits[i] = -std::numeric_limits<float>::infinity();
    if (opt.ban_eos) logits[static_cast<size_t>(ids.eos)] = -std::numeric_limits<float>::infinity();
    const int32_t tok = (in_reasoning ? thinking : answer).sample(logits);
    if (opt.on_token) opt.on_token(logits, tok);
    if (tok == ids.eos) {
      r.stop = StopReason::eos;
      break;
    }
    r.tokens.push_back(tok);
    r.unfed = tok;
    if (tok == ids.think_close) in_reasoning = false;
    if (out.push(tok)) {
      r.stop = StopReason::stop_string;
      break;
    }
  }
  if (r.stop != StopReason::stop_string) out.finish();
  r.gen_seconds = seconds_since(t1);
  return r;
}

}  // namespace ds4::engine
