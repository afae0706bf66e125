#include "download/http_meta.h"

#include <algorithm>
#include <cctype>
#include <charconv>

namespace ds4::download {

namespace {

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t' || s.back() == '\r' || s.back() == '\n')) s.remove_suffix(1);
  return s;
}

std::optional<int64_t> parse_int(std::string_view s) {
  if (s.empty() || s.size() > 19) return std::nullopt;  // from_chars reports overflow
  int64_t v = 0;
  const auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || end != s.data() + s.size() || v < 0) return std::nullopt;
  return v;
}

}  // namespace

std::optional<int> parse_status_line(std::string_view line) {
  line = trim(line);
  if (!line.starts_with("HTTP/")) return std::nullopt;
  const size_t sp = line.find(' ');
  if (sp == std::string_view::npos) return std::nullopt;
  std::string_view code = line.substr(sp + 1, 3);
  if (code.size() != 3) return std::nullopt;
  const auto v = parse_int(code);
  if (!v || *v < 100) return std::nullopt;
  return static_cast<int>(*v);
}

std::optional<Header> parse_header_line(std::string_view line) {
  const size_t colon = line.find(':');
  if (colon == std::string_view::npos || colon == 0) return std::nullopt;
  Header h;
  h.name = std::string(trim(line.substr(0, colon)));
  std::transform(h.name.begin(), h.name.end(), h.name.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  h.value = std::string(trim(line.substr(colon + 1)));
  return h;
}

std::optional<ContentRange> parse_content_range(std::string_view value) {
  value = trim(value);
  if (!value.starts_with("bytes ")) return std::nullopt;
  value.remove_prefix(6);
  const size_t slash = value.find('/');
  if (slash == std::string_view::npos) return std::nullopt;
  const std::string_view range = trim(value.substr(0, slash)), total = trim(value.substr(slash + 1));
  ContentRange r;
  if (total != "*") {
    const auto t = parse_int(total);
    if (!t) return std::nullopt;
    r.total = *t;
  }
  if (range == "*") return r.total >= 0 ? std::optional(r) : std::nullopt;
  const size_t dash = range.find('-');
  if (dash == std::string_view::npos) return std::nullopt;
  const auto first = parse_int(range.substr(0, dash)), last = parse_int(range.substr(dash + 1));
  if (!first || !last || *last < *first || (r.total >= 0 && *last >= r.total)) return std::nullopt;
  r.first = *first;
  r.last = *last;
  return r;
}

std::optional<int64_t> parse_size(std::string_view value) { return parse_int(trim(value)); }

bool is_sha256_hex(std::string_view s) {
  return s.size() == 64 && std::all_of(s.begin(), s.end(), [](char c) { return std::isxdigit(static_cast<unsigned char>(c)) != 0; });
}

std::optional<std::string> sha256_from_etag(std::string_view value) {
  value = trim(value);
  if (value.starts_with("W/")) value.remove_prefix(2);
  if (value.size() >= 2 && value.front() == '"' && value.back() == '"') value = value.substr(1, value.size() - 2);
  if (!is_sha256_hex(value)) return std::nullopt;
  std::string out(value);
  std::transform(out.begin(), out.end(), out.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return out;
}

}  // namespace ds4::download
