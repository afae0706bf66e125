#include "server/dsml_greedy.h"

#include "chat/dsml_syntax.h"

namespace ds4::server {

namespace {
constexpr size_t kWindow = 64;  // longer than every marker
constexpr std::string_view kThinkClose = "</think>";
}  // namespace

DsmlGreedyTracker::DsmlGreedyTracker(bool thinking) : state_(thinking ? State::Reasoning : State::Outside) {}

bool DsmlGreedyTracker::ends_with(std::string_view s) const {
  return window_.size() >= s.size() && std::string_view(window_).substr(window_.size() - s.size()) == s;
}

size_t DsmlGreedyTracker::partial(std::string_view s) const {
  for (size_t n = std::min(s.size() - 1, window_.size()); n > 0; --n)
    if (std::string_view(window_).substr(window_.size() - n) == s.substr(0, n)) return n;
  return 0;
}

void DsmlGreedyTracker::feed(std::string_view text) {
  using chat::detail::kSyntaxes;
  for (char c : text) {
    window_ += c;
    if (window_.size() > 2 * kWindow) window_.erase(0, window_.size() - kWindow);
    const auto& syn = kSyntaxes[static_cast<size_t>(style_)];
    switch (state_) {
      case State::Reasoning:
        if (ends_with(kThinkClose)) state_ = State::Outside;
        break;
      case State::Outside:
        for (size_t i = 0; i < kSyntaxes.size(); ++i)
          if (ends_with(kSyntaxes[i].calls_start)) {
            state_ = State::Structural;
            style_ = static_cast<int>(i);
          }
        break;
      case State::Structural:
        if (ends_with(syn.calls_end)) {
          state_ = State::Done;
        } else if (ends_with(syn.param_start)) {
          state_ = State::ParamTag;
          tag_.clear();
        }
        break;
      case State::ParamTag:
        if (c == '>') {
          // A missing string attribute means a string (§4.2 step 4).
          const bool json = tag_.find("string=\"false\"") != std::string::npos;
          state_ = json ? State::JsonValue : State::StringBody;
          in_string_ = escaped_ = false;
        } else {
          tag_ += c;
        }
        break;
      case State::StringBody:
        if (ends_with(syn.param_end)) state_ = State::Structural;
        break;
      case State::JsonValue:
        if (in_string_) {
          if (escaped_) escaped_ = false;
          else if (c == '\\') escaped_ = true;
          else if (c == '"') in_string_ = false;
        } else if (c == '"') {
          in_string_ = true;
        } else if (ends_with(syn.param_end)) {
          state_ = State::Structural;
        }
        break;
      case State::Done: break;
    }
  }
}

bool DsmlGreedyTracker::greedy() const {
  const auto& syn = chat::detail::kSyntaxes[static_cast<size_t>(style_)];
  switch (state_) {
    case State::Reasoning:
    case State::Outside:
    case State::Done: return false;
    case State::Structural:
    case State::ParamTag: return true;
    case State::StringBody: return partial(syn.param_end) >= 2;
    case State::JsonValue: return !in_string_ || partial(syn.param_end) >= 2;
  }
  return false;
}

}  // namespace ds4::server
