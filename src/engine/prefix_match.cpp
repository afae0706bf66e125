#include "engine/prefix_match.h"

namespace ds4::engine {

namespace {

using Kind = chat::Segment::Kind;

// Adjacent text segments as one: the renderer may split text anywhere.
chat::Segments merged(const chat::Segments& in) {
  chat::Segments out;
  for (const auto& s : in) {
    if (s.kind == Kind::Text && s.text.empty()) continue;
    if (s.kind == Kind::Text && !out.empty() && out.back().kind == Kind::Text)
      out.back().text += s.text;
    else
      out.push_back(s);
  }
  return out;
}

bool is_control(const tokenizer::Tokenizer& tok, int32_t id) {
  const auto s = tok.find_special(tok.token_bytes(id));
  return s && *s == id;
}

}  // namespace

std::optional<std::vector<int32_t>> extend_by_text(const tokenizer::Tokenizer& tok, std::span<const int32_t> history,
                                                   const chat::Segments& prompt) {
  if (history.empty()) return std::nullopt;
  chat::Segments hist;
  for (int32_t id : history) {
    if (is_control(tok, id)) {
      hist.push_back({Kind::Special, tok.token_bytes(id)});
    } else if (!hist.empty() && hist.back().kind == Kind::Text) {
      hist.back().text += tok.token_bytes(id);
    } else {
      hist.push_back({Kind::Text, tok.token_bytes(id)});
    }
  }
  const chat::Segments p = merged(prompt);
  const size_t hn = hist.size();
  size_t hi = 0, pi = 0;
  for (;;) {
    if (pi >= p.size()) return std::nullopt;
    // Hidden reasoning (reference-behavior §4.9 "thinking visible-prefix"):
    // the slot holds <think>R</think> where the client, who never sees R
    // again, renders a bare </think>. The slot's state, reasoning included,
    // continues the conversation.
    if (hist[hi].kind == Kind::Special && hist[hi].text == chat::kThinkOpen && p[pi].kind == Kind::Special &&
        p[pi].text == chat::kThinkClose) {
      size_t j = hi + 1;
      if (j < hn && hist[j].kind == Kind::Text) ++j;
      if (j >= hn || !(hist[j].kind == Kind::Special && hist[j].text == chat::kThinkClose)) return std::nullopt;
      hi = j;
    }
    if (hi == hn - 1) break;
    if (!(hist[hi] == p[pi])) return std::nullopt;
    ++hi;
    ++pi;
  }
  const size_t last = hi;
  std::string rest_text;
  size_t next = pi + 1;
  if (hist[last].kind == Kind::Special) {
    if (!(hist[last] == p[pi])) return std::nullopt;
  } else {
    if (p[pi].kind != Kind::Text || p[pi].text.compare(0, hist[last].text.size(), hist[last].text) != 0)
      return std::nullopt;
    rest_text = p[pi].text.substr(hist[last].text.size());
  }
  std::vector<int32_t> out(history.begin(), history.end());
  const size_t before = out.size();
  if (!rest_text.empty()) tok.encode_append(rest_text, out);
  for (size_t i = next; i < p.size(); ++i) {
    if (p[i].kind == Kind::Special)
      out.push_back(tok.special_id(p[i].text));
    else
      tok.encode_append(p[i].text, out);
  }
  if (out.size() == before) return std::nullopt;  // nothing left to feed: no logits to continue from
  return out;
}

}  // namespace ds4::engine
