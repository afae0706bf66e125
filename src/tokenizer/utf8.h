#pragma once
// Small UTF-8 helpers used by the byte-level alphabet and the streaming decoder.
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace ds4::tokenizer {

std::string utf8_encode(uint32_t cp);

// Decodes the well-formed character at text[i] and advances i past it; returns
// nullopt (i unchanged) when the bytes there are not a complete, well-formed
// character (RFC 3629: no overlongs, no surrogates, nothing above U+10FFFF).
std::optional<uint32_t> utf8_next(std::string_view text, size_t& i);

// Status of the bytes starting at text[i]: a complete character of `len` bytes,
// a valid but truncated prefix (more bytes could complete it), or invalid, in
// which case `len` is the length of the maximal invalid subpart to replace.
enum class Utf8Status { complete, truncated, invalid };
Utf8Status utf8_check(std::string_view text, size_t i, size_t& len);

bool utf8_valid(std::string_view text);

}  // namespace ds4::tokenizer
