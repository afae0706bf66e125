#include "chat/json_raw.h"

#include <cctype>
#include <cstdlib>

#include "chat/chat.h"

namespace ds4::chat::detail {

namespace {
constexpr int kMaxDepth = 64;

bool is_space(char c) { return std::isspace(static_cast<unsigned char>(c)) != 0; }

// Decodes a string literal at pos into out (may be null); false if malformed.
bool scan_string(std::string_view s, size_t& pos, std::string* out) {
  if (pos >= s.size() || s[pos] != '"') return false;
  size_t start = pos++;
  while (pos < s.size() && s[pos] != '"') {
    if (s[pos] == '\\') ++pos;
    ++pos;
  }
  if (pos >= s.size()) return false;
  ++pos;
  if (out) {
    auto j = Json::parse(s.substr(start, pos - start), nullptr, false);
    if (!j.is_string()) return false;
    *out = j.get<std::string>();
  }
  return true;
}

bool skip_depth(std::string_view s, size_t& pos, int depth);

bool skip_container(std::string_view s, size_t& pos, int depth, char open, char close) {
  if (depth >= kMaxDepth || pos >= s.size() || s[pos] != open) return false;
  ++pos;
  skip_ws(s, pos);
  if (pos < s.size() && s[pos] == close) {
    ++pos;
    return true;
  }
  for (;;) {
    if (open == '{') {
      skip_ws(s, pos);
      if (!scan_string(s, pos, nullptr)) return false;
      skip_ws(s, pos);
      if (pos >= s.size() || s[pos] != ':') return false;
      ++pos;
    }
    if (!skip_depth(s, pos, depth + 1)) return false;
    skip_ws(s, pos);
    if (pos < s.size() && s[pos] == close) {
      ++pos;
      return true;
    }
    if (pos >= s.size() || s[pos] != ',') return false;
    ++pos;
  }
}

bool skip_depth(std::string_view s, size_t& pos, int depth) {
  skip_ws(s, pos);
  if (pos >= s.size()) return false;
  char c = s[pos];
  if (c == '"') return scan_string(s, pos, nullptr);
  if (c == '{') return skip_container(s, pos, depth, '{', '}');
  if (c == '[') return skip_container(s, pos, depth, '[', ']');
  for (std::string_view lit : {"true", "false", "null"}) {
    if (s.substr(pos, lit.size()) == lit) {
      pos += lit.size();
      return true;
    }
  }
  std::string rest(s.substr(pos, 64));  // strtod needs a terminated buffer
  char* end = nullptr;
  (void)std::strtod(rest.c_str(), &end);
  if (end == rest.c_str()) return false;
  pos += static_cast<size_t>(end - rest.c_str());
  return true;
}
}  // namespace

void skip_ws(std::string_view s, size_t& pos) {
  while (pos < s.size() && is_space(s[pos])) ++pos;
}

bool skip_value(std::string_view s, size_t& pos) { return skip_depth(s, pos, 0); }

std::string minify_value(std::string_view raw) {
  size_t pos = 0;
  skip_ws(raw, pos);
  size_t start = pos;
  if (!skip_value(raw, pos)) return std::string(raw);
  std::string out;
  bool in_str = false, esc = false;
  for (size_t i = start; i < pos; ++i) {
    char c = raw[i];
    if (in_str) {
      out += c;
      if (esc) {
        esc = false;
      } else if (c == '\\') {
        esc = true;
      } else if (c == '"') {
        in_str = false;
      }
    } else if (c == '"') {
      in_str = true;
      out += c;
    } else if (!is_space(c)) {
      out += c;
    }
  }
  return out;
}

std::optional<std::vector<Member>> object_members(std::string_view s) {
  size_t pos = 0;
  skip_ws(s, pos);
  if (pos >= s.size() || s[pos] != '{') return std::nullopt;
  ++pos;
  skip_ws(s, pos);
  std::vector<Member> out;
  // Commas are optional between members, as in ds4's argument reader.
  while (pos < s.size() && s[pos] != '}') {
    Member m;
    if (!scan_string(s, pos, &m.key)) return std::nullopt;
    skip_ws(s, pos);
    if (pos >= s.size() || s[pos] != ':') return std::nullopt;
    ++pos;
    skip_ws(s, pos);
    size_t vstart = pos;
    if (pos < s.size() && s[pos] == '"') {
      m.is_string = true;
      if (!scan_string(s, pos, &m.str)) return std::nullopt;
      m.raw = std::string(s.substr(vstart, pos - vstart));
    } else {
      if (!skip_value(s, pos)) return std::nullopt;
      m.raw = minify_value(s.substr(vstart, pos - vstart));
    }
    out.push_back(std::move(m));
    skip_ws(s, pos);
    if (pos < s.size() && s[pos] == ',') ++pos;
    skip_ws(s, pos);
  }
  if (pos >= s.size()) return std::nullopt;
  return out;
}

std::string quote(std::string_view s) {
  static const char* hex = "0123456789abcdef";
  std::string out = "\"";
  for (char ch : s) {
    auto c = static_cast<unsigned char>(ch);
    if (c == '"' || c == '\\') {
      out += '\\';
      out += ch;
    } else if (c == '\n') {
      out += "\\n";
    } else if (c == '\r') {
      out += "\\r";
    } else if (c == '\t') {
      out += "\\t";
    } else if (c < 0x20) {
      out += "\\u00";
      out += hex[c >> 4];
      out += hex[c & 15];
    } else {
      out += ch;
    }
  }
  out += '"';
  return out;
}

}  // namespace ds4::chat::detail
