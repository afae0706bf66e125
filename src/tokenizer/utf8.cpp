#include "tokenizer/utf8.h"

namespace ds4::tokenizer {

std::string utf8_encode(uint32_t cp) {
  std::string s;
  if (cp < 0x80) {
    s.push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    s.push_back(static_cast<char>(0xc0 | (cp >> 6)));
    s.push_back(static_cast<char>(0x80 | (cp & 0x3f)));
  } else if (cp < 0x10000) {
    s.push_back(static_cast<char>(0xe0 | (cp >> 12)));
    s.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3f)));
    s.push_back(static_cast<char>(0x80 | (cp & 0x3f)));
  } else {
    s.push_back(static_cast<char>(0xf0 | (cp >> 18)));
    s.push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3f)));
    s.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3f)));
    s.push_back(static_cast<char>(0x80 | (cp & 0x3f)));
  }
  return s;
}

Utf8Status utf8_check(std::string_view text, size_t i, size_t& len) {
  const auto byte = [&](size_t k) { return static_cast<uint8_t>(text[k]); };
  const uint8_t b0 = byte(i);
  if (b0 < 0x80) {
    len = 1;
    return Utf8Status::complete;
  }
  size_t need;
  uint8_t lo = 0x80, hi = 0xbf;  // allowed range of the second byte
  if (b0 >= 0xc2 && b0 <= 0xdf) {
    need = 2;
  } else if (b0 >= 0xe0 && b0 <= 0xef) {
    need = 3;
    if (b0 == 0xe0) lo = 0xa0;  // overlong
    if (b0 == 0xed) hi = 0x9f;  // surrogates
  } else if (b0 >= 0xf0 && b0 <= 0xf4) {
    need = 4;
    if (b0 == 0xf0) lo = 0x90;  // overlong
    if (b0 == 0xf4) hi = 0x8f;  // above U+10FFFF
  } else {
    len = 1;
    return Utf8Status::invalid;
  }
  for (size_t k = 1; k < need; ++k) {
    if (i + k >= text.size()) {
      len = k;
      return Utf8Status::truncated;
    }
    const uint8_t b = byte(i + k);
    const bool ok = k == 1 ? (b >= lo && b <= hi) : (b >= 0x80 && b <= 0xbf);
    if (!ok) {
      len = k;
      return Utf8Status::invalid;
    }
  }
  len = need;
  return Utf8Status::complete;
}

std::optional<uint32_t> utf8_next(std::string_view text, size_t& i) {
  if (i >= text.size()) return std::nullopt;
  size_t len = 0;
  if (utf8_check(text, i, len) != Utf8Status::complete) return std::nullopt;
  const auto byte = [&](size_t k) { return static_cast<uint32_t>(static_cast<uint8_t>(text[i + k])); };
  uint32_t cp;
  switch (len) {
    case 1: cp = byte(0); break;
    case 2: cp = ((byte(0) & 0x1f) << 6) | (byte(1) & 0x3f); break;
    case 3: cp = ((byte(0) & 0x0f) << 12) | ((byte(1) & 0x3f) << 6) | (byte(2) & 0x3f); break;
    default:
      cp = ((byte(0) & 0x07) << 18) | ((byte(1) & 0x3f) << 12) | ((byte(2) & 0x3f) << 6) | (byte(3) & 0x3f);
  }
  i += len;
  return cp;
}

bool utf8_valid(std::string_view text) {
  size_t i = 0;
  while (i < text.size()) {
    size_t len = 0;
    if (utf8_check(text, i, len) != Utf8Status::complete) return false;
    i += len;
  }
  return true;
}

}  // namespace ds4::tokenizer
