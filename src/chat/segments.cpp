#include "chat/segments.h"

#include <array>

namespace ds4::chat {

namespace {
// The seven spellings ds4 recognizes inside rendered text (§2.1).
constexpr std::array<std::string_view, 7> kSpecials = {kBos,       kEos,        kUser, kAssistant,
                                                       kThinkOpen, kThinkClose, kDsml};

std::string replace_all_prefix(std::string_view s, std::string_view needle, std::string_view repl) {
  // Replaces the first character of each occurrence of `needle` by `repl`.
  std::string out;
  out.reserve(s.size());
  size_t i = 0;
  while (i < s.size()) {
    if (s.substr(i, needle.size()) == needle) {
      out += repl;
      i += 1;
    } else {
      out += s[i++];
    }
  }
  return out;
}
}  // namespace

std::string join(const Segments& s) {
  std::string out;
  for (const auto& seg : s) out += seg.text;
  return out;
}

Segments split_specials(std::string_view text) {
  detail::Builder b;
  size_t start = 0;
  size_t i = 0;
  while (i < text.size()) {
    std::string_view hit;
    for (auto sp : kSpecials) {
      if (text.substr(i, sp.size()) == sp) {
        hit = sp;
        break;
      }
    }
    if (hit.empty()) {
      ++i;
      continue;
    }
    b.text(text.substr(start, i - start));
    b.special(hit);
    i += hit.size();
    start = i;
  }
  b.text(text.substr(start));
  return b.take();
}

namespace detail {

void Builder::special(std::string_view s) { out_.push_back({Segment::Kind::Special, std::string(s)}); }

void Builder::text(std::string_view s) {
  if (s.empty()) return;
  if (!out_.empty() && out_.back().kind == Segment::Kind::Text) {
    out_.back().text += s;
  } else {
    out_.push_back({Segment::Kind::Text, std::string(s)});
  }
}

void Builder::trusted(std::string_view s) { append(split_specials(s)); }

void Builder::append(const Segments& s) {
  for (const auto& seg : s) {
    if (seg.kind == Segment::Kind::Special) {
      special(seg.text);
    } else {
      text(seg.text);
    }
  }
}

std::string escape_attr(std::string_view s) {
  std::string out;
  for (char c : s) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&quot;"; break;
      default: out += c;
    }
  }
  return out;
}

std::string escape_param_text(std::string_view s) {
  return replace_all_prefix(s, "</｜DSML｜parameter>", "&lt;");
}

std::string escape_tool_result(std::string_view s) { return replace_all_prefix(s, "</tool_result>", "&lt;"); }

}  // namespace detail
}  // namespace ds4::chat
