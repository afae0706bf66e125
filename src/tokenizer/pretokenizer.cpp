#include "tokenizer/pretokenizer.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include "util/error.h"

namespace ds4::tokenizer {
namespace {

// DeepSeek V3/V4 (tokenizer.json "pre_tokenizer", three Split steps). These are
// the exact strings of the Hugging Face file; llama.cpp uses the same list for
// the names below.
const std::vector<std::string> kDeepSeekPatterns = {
    "\\p{N}{1,3}",
    "[\xe4\xb8\x80-\xe9\xbe\xa5\xe3\x81\x80-\xe3\x82\x9f\xe3\x82\xa0-\xe3\x83\xbf]+",  // [一-龥぀-ゟ゠-ヿ]+
    "[!\"#$%&'()*+,\\-./:;<=>?@\\[\\\\\\]^_`{|}~][A-Za-z]+|[^\r\n\\p{L}\\p{P}\\p{S}]?[\\p{L}\\p{M}]+|"
    " ?[\\p{P}\\p{S}]+[\r\n]*|\\s*[\r\n]+|\\s+(?!\\S)|\\s+",
};

// Hugging Face runs these regexes in Oniguruma, whose \s is Unicode White_Space.
// PCRE2's \s (UCP) also matches U+180E MONGOLIAN VOWEL SEPARATOR, a format
// character (Cf) since Unicode 6.3, so outside character classes \s and \S
// are rewritten to exclude/include it. \s inside a class cannot be rewritten
// this way and is rejected (no supported pattern has one).
std::string onig_compatible(const std::string& p) {
  std::string out;
  bool in_class = false;
  for (size_t i = 0; i < p.size(); ++i) {
    const char c = p[i];
    if (c == '\\' && i + 1 < p.size()) {
      const char e = p[i + 1];
      if ((e == 's' || e == 'S') && in_class) fail("pre-tokenizer regex '{}': \\{} inside a character class is not supported", p, e);
      if (e == 's') out += "[^\\S\\x{180E}]";
      else if (e == 'S') out += "[\\S\\x{180E}]";
      else out.append(p, i, 2);
      ++i;
      continue;
    }
    if (c == '[' && !in_class) {
      in_class = true;
      out += c;
      // a ']' right after '[' or '[^' is a literal member, not the end
      if (i + 1 < p.size() && p[i + 1] == '^') out += p[++i];
      if (i + 1 < p.size() && p[i + 1] == ']') out += p[++i];
      continue;
    }
    if (c == ']' && in_class) in_class = false;
    out += c;
  }
  return out;
}

std::string pcre2_message(int code) {
  PCRE2_UCHAR buf[256];
  pcre2_get_error_message(code, buf, sizeof buf);
  return reinterpret_cast<const char*>(buf);
}

}  // namespace

struct PreTokenizer::Regex {
  pcre2_code* code = nullptr;
  std::string pattern;
  ~Regex() { pcre2_code_free(code); }
};

PreTokenizer::PreTokenizer(const std::vector<std::string>& patterns) {
  for (const auto& p : patterns) {
    auto r = std::make_unique<Regex>();
    r->pattern = p;
    const std::string compiled = onig_compatible(p);
    int err = 0;
    PCRE2_SIZE off = 0;
    // MATCH_INVALID_UTF: arbitrary bytes are legal subjects; ill-formed
    // sequences simply never match, so encode() is total and lossless.
    r->code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(compiled.data()), compiled.size(),
                            PCRE2_UTF | PCRE2_UCP | PCRE2_MATCH_INVALID_UTF, &err, &off, nullptr);
    if (!r->code) fail("pre-tokenizer regex '{}' does not compile at offset {}: {}", p, off, pcre2_message(err));
    // JIT is an optimisation only: where it is unavailable the interpreter runs.
    pcre2_jit_compile(r->code, PCRE2_JIT_COMPLETE);
    stages_.push_back(std::move(r));
  }
}

PreTokenizer::~PreTokenizer() = default;

void PreTokenizer::split(std::string_view text, std::vector<Piece>& out) const {
  std::vector<Piece> cur{{0, static_cast<uint32_t>(text.size())}};
  if (text.empty()) return;
  std::vector<Piece> next;
  for (const auto& stage : stages_) {
    next.clear();
    pcre2_match_data* md = pcre2_match_data_create_from_pattern(stage->code, nullptr);
    if (!md) fail("pre-tokenizer: out of memory");
    for (const Piece& piece : cur) {
      // Each piece is matched as its own subject, as Hugging Face does: a
      // lookahead such as (?!\S) sees the end of the piece, not the next one.
      const auto* subject = reinterpret_cast<PCRE2_SPTR>(text.data() + piece.begin);
      const size_t len = piece.end - piece.begin;
      size_t pos = 0, gap = 0;
      while (pos < len) {
        const int rc = pcre2_match(stage->code, subject, len, pos, 0, md, nullptr);
        if (rc == PCRE2_ERROR_NOMATCH) break;
        if (rc < 0) {
          pcre2_match_data_free(md);
          fail("pre-tokenizer regex '{}' failed: {}", stage->pattern, pcre2_message(rc));
        }
        const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(md);
        const size_t mb = ov[0], me = ov[1];
        if (me == mb) {  // empty match: not a piece; step past one byte
          pos = mb + 1;
          continue;
        }
        if (mb > gap) next.push_back({piece.begin + static_cast<uint32_t>(gap), piece.begin + static_cast<uint32_t>(mb)});
        next.push_back({piece.begin + static_cast<uint32_t>(mb), piece.begin + static_cast<uint32_t>(me)});
        pos = gap = me;
      }
      if (gap < len) next.push_back({piece.begin + static_cast<uint32_t>(gap), piece.end});
    }
    pcre2_match_data_free(md);
    cur.swap(next);
  }
  out.insert(out.end(), cur.begin(), cur.end());
}

std::vector<std::string> PreTokenizer::patterns_for(std::string_view pre_name) {
  // llama.cpp maps all three names to one regex set: "deepseek-v3" is what its
  // converter writes for V3, "joyai-llm" is what shipped DeepSeek V4 GGUFs
  // carry (their tokenizer hash matched JoyAI's, which shares the regexes).
  if (pre_name == "deepseek-v3" || pre_name == "joyai-llm" || pre_name == "hunyuan-dense" ||
      pre_name == "deepseek-v4")
    return kDeepSeekPatterns;
  fail("unsupported tokenizer.ggml.pre '{}' (supported: deepseek-v3, joyai-llm, deepseek-v4, hunyuan-dense)",
       pre_name);
}

}  // namespace ds4::tokenizer
