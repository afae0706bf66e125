#pragma once
// Reading the HTTP response headers a download depends on (internal to
// download/). Pure functions, so they are tested without a network.
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace ds4::download {

// "HTTP/1.1 206 Partial Content" -> 206; nullopt for other lines.
std::optional<int> parse_status_line(std::string_view line);

// "Name: value\r\n" -> {lower-case name, trimmed value}; nullopt without ':'.
struct Header {
  std::string name, value;
};
std::optional<Header> parse_header_line(std::string_view line);

// Content-Range of a 206 ("bytes 100-199/1000") or a 416 ("bytes */1000").
// first/last are -1 in the 416 form; total is -1 when the server wrote '*'.
struct ContentRange {
  int64_t first = -1, last = -1, total = -1;
};
std::optional<ContentRange> parse_content_range(std::string_view value);

// A non-negative decimal header value (Content-Length, X-Linked-Size).
std::optional<int64_t> parse_size(std::string_view value);

// The SHA-256 an ETag carries, as Hugging Face's X-Linked-ETag does for LFS
// files: 64 hex digits, optionally quoted and/or weak (W/). Lower case.
// nullopt for any other ETag (an MD5, an opaque id).
std::optional<std::string> sha256_from_etag(std::string_view value);

// True for exactly 64 hex digits.
bool is_sha256_hex(std::string_view s);

}  // namespace ds4::download
