#include "tokenizer/byte_level.h"

#include <unordered_map>
#include <vector>

#include "tokenizer/utf8.h"

namespace ds4::tokenizer {
namespace {

struct Tables {
  std::array<std::string, 256> symbol;            // byte -> UTF-8 text
  std::unordered_map<uint32_t, uint8_t> by_code;  // code point -> byte
  Tables() {
    // Bytes that are already printable keep their own code point; the other 68
    // get consecutive code points from 256 up, in byte order (GPT-2's table).
    uint32_t next = 256;
    for (uint32_t b = 0; b < 256; ++b) {
      const bool printable = (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff);
      const uint32_t cp = printable ? b : next++;
      symbol[b] = utf8_encode(cp);
      by_code[cp] = static_cast<uint8_t>(b);
    }
  }
};

const Tables& tables() {
  static const Tables t;
  return t;
}

}  // namespace

const std::string& byte_to_symbol(uint8_t b) { return tables().symbol[b]; }

std::optional<std::string> symbols_to_bytes(std::string_view text) {
  const Tables& t = tables();
  std::string out;
  out.reserve(text.size());
  size_t i = 0;
  while (i < text.size()) {
    const auto cp = utf8_next(text, i);
    if (!cp) return std::nullopt;
    auto it = t.by_code.find(*cp);
    if (it == t.by_code.end()) return std::nullopt;
    out.push_back(static_cast<char>(it->second));
  }
  return out;
}

}  // namespace ds4::tokenizer
