#pragma once
// The pre-tokenizer: a sequence of regex "Split (Isolated)" steps as Hugging
// Face tokenizers applies them. Each step splits every piece produced by the
// previous step into the regex's matches and the gaps between them (both kept).
// Regexes run in PCRE2 with UTF + UCP, so \p{L}, \p{N}, \s ... use the Unicode
// tables, not ASCII.
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace ds4::tokenizer {

struct Piece {
  uint32_t begin;
  uint32_t end;
};

class PreTokenizer {
 public:
  // Throws ds4::Error when a pattern does not compile.
  explicit PreTokenizer(const std::vector<std::string>& patterns);
  ~PreTokenizer();
  PreTokenizer(const PreTokenizer&) = delete;
  PreTokenizer& operator=(const PreTokenizer&) = delete;

  // Byte ranges of `text` (which may be any bytes: invalid UTF-8 never matches
  // a pattern and so ends up in gap pieces). Appends to `out`.
  void split(std::string_view text, std::vector<Piece>& out) const;

  // The regex list llama.cpp and ds4 associate with a `tokenizer.ggml.pre`
  // name; throws ds4::Error naming the supported ones for anything else.
  static std::vector<std::string> patterns_for(std::string_view pre_name);

 private:
  struct Regex;
  std::vector<std::unique_ptr<Regex>> stages_;
};

}  // namespace ds4::tokenizer
