#pragma once
// The real DeepSeek V4 tokenizer, imported once per test binary from the repo copy.
#include <string>

#include "tokenizer/hf_import.h"
#include "tokenizer/tokenizer.h"

namespace ds4::tokenizer::test {

inline std::string source_dir() { return DS4_SOURCE_DIR; }

inline const Metadata& v4_metadata() {
  static const Metadata md = gguf_metadata_from_hf(source_dir() + "/data/tokenizer/deepseek-v4/tokenizer.json");
  return md;
}

inline const Tokenizer& v4() {
  static const Tokenizer tok(v4_metadata());
  return tok;
}

}  // namespace ds4::tokenizer::test
