#include "tokenizer/tokenizer.h"
#include "tokenizer/utf8.h"

namespace ds4::tokenizer {

namespace {
constexpr std::string_view kReplacement = "\xef\xbf\xbd";  // U+FFFD
}

std::string StreamDecoder::push(TokenId id) {
  pending_ += tok_.token_bytes(id);
  std::string out;
  size_t i = 0;
  while (i < pending_.size()) {
    size_t len = 0;
    const Utf8Status st = utf8_check(pending_, i, len);
    if (st == Utf8Status::truncated) break;  // wait for the next token's bytes
    if (st == Utf8Status::complete)
      out.append(pending_, i, len);
    else
      out += kReplacement;  // one U+FFFD per maximal invalid subpart (Unicode's recommendation)
    i += len;
  }
  pending_.erase(0, i);
  return out;
}

std::string StreamDecoder::flush() {
  std::string out;
  if (!pending_.empty()) out = kReplacement;  // a truncated prefix is one maximal subpart
  pending_.clear();
  return out;
}

}  // namespace ds4::tokenizer
