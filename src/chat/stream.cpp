// Streaming projection of a generation (reference-behavior.md §4.3): splits
// reasoning, visible text and DSML tool calls as decoded pieces arrive. Text is
// held back only while it may still be the start of a marker, an entity or
// separator whitespace; the final parse (parse.cpp) remains the authority.
#include <algorithm>

#include "chat/chat.h"
#include "chat/dsml_syntax.h"
#include "chat/json_raw.h"

namespace ds4::chat {

namespace {

using detail::kSyntaxes;

bool is_space(char c) { return c == ' ' || c == '\n' || c == '\r' || c == '\t' || c == '\f' || c == '\v'; }

// Length of the longest suffix of s that is a proper prefix of word.
size_t partial_suffix(std::string_view s, std::string_view word) {
  for (size_t n = std::min(s.size(), word.size() - 1); n > 0; --n) {
    if (s.substr(s.size() - n) == word.substr(0, n)) return n;
  }
  return 0;
}

bool is_prefix_of(std::string_view s, std::string_view word) {
  return s.size() < word.size() && word.substr(0, s.size()) == s;
}

// A trailing '&' run that may still grow into an entity we decode.
size_t partial_entity(std::string_view s) {
  size_t amp = s.rfind('&');
  if (amp == std::string_view::npos) return 0;
  std::string_view tail = s.substr(amp);
  for (std::string_view ent : {"&amp;", "&lt;", "&gt;", "&quot;", "&apos;"}) {
    if (is_prefix_of(tail, ent)) return tail.size();
  }
  return 0;
}

// JSON string body (no quotes) for decoded text.
std::string json_body(std::string_view s) {
  std::string q = detail::quote(s);
  return q.substr(1, q.size() - 2);
}

}  // namespace

StreamParser::StreamParser(StreamOptions opt, IdGenerator ids)
    : opt_(opt), ids_(std::move(ids)), state_(opt.thinking ? State::Reasoning : State::Text) {}

void StreamParser::emit(std::vector<StreamEvent>& out, StreamEvent::Kind k, std::string_view s) {
  if (s.empty()) return;
  bool mergeable = k == StreamEvent::Kind::Reasoning || k == StreamEvent::Kind::Text ||
                   k == StreamEvent::Kind::ToolArgs;
  int index = k == StreamEvent::Kind::ToolArgs ? call_index_ : -1;
  if (mergeable && !out.empty() && out.back().kind == k && out.back().index == index) {
    out.back().text += s;
    return;
  }
  out.push_back({k, std::string(s), index, {}});
}

std::vector<StreamEvent> StreamParser::feed(std::string_view piece) {
  std::vector<StreamEvent> out;
  if (state_ == State::Done) return out;  // generation has stopped at the end marker
  all_ += piece;
  pending_ += piece;
  step(out, false);
  return out;
}

std::vector<StreamEvent> StreamParser::finish() {
  std::vector<StreamEvent> out;
  step(out, true);
  if (state_ == State::Tool) unterminated_ = true;
  result_ = parse_completion(all_, opt_.thinking);
  // Ids shown during streaming stay with their calls (§4.4).
  for (size_t i = 0; i < result_.calls.size(); ++i) {
    result_.calls[i].id = i < shown_ids_.size() ? shown_ids_[i] : ids_.next();
  }
  return out;
}

void StreamParser::step(std::vector<StreamEvent>& out, bool final) {
  for (;;) {
    if (state_ == State::Reasoning) {
      if (!start_checked_) {
        // ds4 drops a <think> the model repeats at the very start.
        if (!final && is_prefix_of(pending_, kThinkOpen)) return;
        if (pending_.starts_with(kThinkOpen)) pending_.erase(0, kThinkOpen.size());
        start_checked_ = true;
      }
      size_t end = pending_.find(kThinkClose);
      if (end != std::string::npos) {
        emit(out, StreamEvent::Kind::Reasoning, std::string_view(pending_).substr(0, end));
        pending_.erase(0, end + kThinkClose.size());
        state_ = State::Text;
        continue;
      }
      size_t keep = final ? 0 : partial_suffix(pending_, kThinkClose);
      emit(out, StreamEvent::Kind::Reasoning, std::string_view(pending_).substr(0, pending_.size() - keep));
      pending_.erase(0, pending_.size() - keep);
      return;
    }
    if (state_ == State::Text) {
      if (!opt_.tools) {
        emit(out, StreamEvent::Kind::Text, pending_);
        pending_.clear();
        return;
      }
      size_t best = std::string::npos;
      for (size_t st = 0; st < kSyntaxes.size(); ++st) {
        size_t hit = pending_.find(kSyntaxes[st].calls_start);
        if (hit < best) {
          best = hit;
          style_ = static_cast<int>(st);
        }
      }
      if (best != std::string::npos) {
        // Separator whitespace before the block is syntax, not content.
        size_t end = best;
        while (end > 0 && is_space(pending_[end - 1])) --end;
        emit(out, StreamEvent::Kind::Text, std::string_view(pending_).substr(0, end));
        pending_.erase(0, best + kSyntaxes[static_cast<size_t>(style_)].calls_start.size());
        state_ = State::Tool;
        tool_ = Tool::BeforeInvoke;
        continue;
      }
      size_t keep = 0;
      if (!final) {
        for (const auto& syn : kSyntaxes) keep = std::max(keep, partial_suffix(pending_, syn.calls_start));
        while (keep < pending_.size() && is_space(pending_[pending_.size() - keep - 1])) ++keep;
      }
      emit(out, StreamEvent::Kind::Text, std::string_view(pending_).substr(0, pending_.size() - keep));
      pending_.erase(0, pending_.size() - keep);
      return;
    }
    if (state_ == State::Tool) {
      if (!step_tool(out, final)) return;
      continue;
    }
    return;  // Done
  }
}

// Advances inside a tool block; false when more input is needed.
bool StreamParser::step_tool(std::vector<StreamEvent>& out, bool final) {
  const auto& syn = kSyntaxes[static_cast<size_t>(style_)];
  auto ends_block = [&]() {
    size_t e = pending_.find(syn.calls_end);
    if (e == std::string::npos) return false;
    pending_.clear();
    state_ = State::Done;
    return true;
  };
  if (tool_ == Tool::Lost) {
    // The projection cannot follow this shape; the final parse decides.
    if (ends_block()) return false;
    size_t keep = partial_suffix(pending_, syn.calls_end);
    pending_.erase(0, pending_.size() - keep);
    return false;
  }
  if (tool_ == Tool::InValue) {
    size_t end = pending_.find(syn.param_end);
    size_t take = end;
    if (end == std::string::npos) {
      if (final) return false;
      size_t keep = partial_suffix(pending_, syn.param_end);
      if (value_is_string_) keep = std::max(keep, partial_entity(std::string_view(pending_).substr(0, pending_.size())));
      take = pending_.size() - keep;
    }
    std::string_view body = std::string_view(pending_).substr(0, take);
    emit(out, StreamEvent::Kind::ToolArgs,
         value_is_string_ ? json_body(detail::unescape_entities(body)) : std::string(body));
    pending_.erase(0, take);
    if (end == std::string::npos) return false;
    pending_.erase(0, syn.param_end.size());
    if (value_is_string_) emit(out, StreamEvent::Kind::ToolArgs, "\"");
    tool_ = Tool::InInvoke;
    return true;
  }
  size_t p = 0;
  while (p < pending_.size() && is_space(pending_[p])) ++p;
  pending_.erase(0, p);
  if (pending_.empty()) return false;
  auto lost = [&]() {
    tool_ = Tool::Lost;
    return true;
  };
  if (tool_ == Tool::BeforeInvoke) {
    if (pending_.starts_with(syn.calls_end)) return ends_block();
    if (pending_.starts_with(syn.invoke_start)) {
      size_t gt = pending_.find('>');
      if (gt == std::string::npos) return false;
      auto name = detail::tag_attr(std::string_view(pending_).substr(0, gt + 1), "name");
      if (!name) return lost();
      pending_.erase(0, gt + 1);
      ++call_index_;
      if (static_cast<size_t>(call_index_) >= shown_ids_.size()) shown_ids_.push_back(ids_.next());
      out.push_back({StreamEvent::Kind::ToolStart, *name, call_index_, shown_ids_[static_cast<size_t>(call_index_)]});
      emit(out, StreamEvent::Kind::ToolArgs, "{");
      first_param_ = true;
      tool_ = Tool::InInvoke;
      return true;
    }
    if (is_prefix_of(pending_, syn.calls_end) || is_prefix_of(pending_, syn.invoke_start)) return false;
    return lost();
  }
  // InInvoke
  if (pending_.starts_with(syn.invoke_end)) {
    pending_.erase(0, syn.invoke_end.size());
    emit(out, StreamEvent::Kind::ToolArgs, "}");
    out.push_back({StreamEvent::Kind::ToolEnd, {}, call_index_, {}});
    tool_ = Tool::BeforeInvoke;
    return true;
  }
  if (pending_.starts_with(syn.param_start)) {
    size_t gt = pending_.find('>');
    if (gt == std::string::npos) return false;
    std::string_view tag = std::string_view(pending_).substr(0, gt + 1);
    auto name = detail::tag_attr(tag, "name");
    auto str = detail::tag_attr(tag, "string");
    if (!name || !str) return lost();  // loose shapes are left to the final parse
    value_is_string_ = *str == "true";
    std::string frag = first_param_ ? "" : ",";
    frag += detail::quote(*name) + ":";
    if (value_is_string_) frag += "\"";
    emit(out, StreamEvent::Kind::ToolArgs, frag);
    first_param_ = false;
    pending_.erase(0, gt + 1);
    tool_ = Tool::InValue;
    return true;
  }
  if (is_prefix_of(pending_, syn.invoke_end) || is_prefix_of(pending_, syn.param_start)) return false;
  return lost();
}

}  // namespace ds4::chat
