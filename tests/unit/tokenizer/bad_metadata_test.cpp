// Bad tokenizer metadata fails with one clear ds4::Error naming the problem.
#include <gtest/gtest.h>

#include <functional>

#include "tokenizer/byte_level.h"
#include "tokenizer/tokenizer.h"
#include "util/error.h"

namespace ds4::tokenizer {
namespace {

// A minimal valid byte-level vocabulary: the 256 byte symbols plus "ab", "abc".
Metadata tiny() {
  std::vector<std::string> tokens;
  for (int b = 0; b < 256; ++b) tokens.push_back(byte_to_symbol(static_cast<uint8_t>(b)));
  tokens.push_back("ab");
  tokens.push_back("abc");
  tokens.push_back("<think>");
  std::vector<int32_t> types(tokens.size(), 1);
  types.back() = 4;
  return {
      {"tokenizer.ggml.model", gguf::Value::str("gpt2")},
      {"tokenizer.ggml.pre", gguf::Value::str("deepseek-v3")},
      {"tokenizer.ggml.tokens", gguf::Value::string_array(tokens)},
      {"tokenizer.ggml.token_type", gguf::Value::i32_array(types)},
      {"tokenizer.ggml.merges", gguf::Value::string_array({"a b", "ab c"})},
      {"tokenizer.ggml.bos_token_id", gguf::Value::u32(0)},
  };
}

gguf::Value& key(Metadata& md, const std::string& k) {
  for (auto& [name, v] : md)
    if (name == k) return v;
  throw std::logic_error("no key " + k);
}

void remove_key(Metadata& md, const std::string& k) {
  std::erase_if(md, [&](const auto& kv) { return kv.first == k; });
}

void expect_error(const std::function<void(Metadata&)>& edit, const std::string& fragment) {
  Metadata md = tiny();
  edit(md);
  try {
    Tokenizer t(md);
    FAIL() << "no error; expected one containing: " << fragment;
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(fragment), std::string::npos) << e.what();
  }
}

TEST(BadMetadata, TinyVocabularyIsValid) {
  Tokenizer t(tiny());
  EXPECT_EQ(t.encode("abcab"), (std::vector<TokenId>{257, 256}));
  EXPECT_EQ(t.encode("<think>", true), (std::vector<TokenId>{258}));
}

TEST(BadMetadata, MissingKeys) {
  expect_error([](Metadata& m) { remove_key(m, "tokenizer.ggml.merges"); }, "missing key 'tokenizer.ggml.merges'");
  expect_error([](Metadata& m) { remove_key(m, "tokenizer.ggml.tokens"); }, "missing key 'tokenizer.ggml.tokens'");
  expect_error([](Metadata& m) { remove_key(m, "tokenizer.ggml.model"); }, "missing key 'tokenizer.ggml.model'");
  expect_error([](Metadata& m) { remove_key(m, "tokenizer.ggml.pre"); }, "missing key 'tokenizer.ggml.pre'");
}

TEST(BadMetadata, BadMerges) {
  expect_error([](Metadata& m) { key(m, "tokenizer.ggml.merges") = gguf::Value::string_array({"a b", "a zz"}); },
               "'tokenizer.ggml.merges'[1] = 'a zz' refers to unknown token 'zz'");
  expect_error([](Metadata& m) { key(m, "tokenizer.ggml.merges") = gguf::Value::string_array({"b c"}); },
               "merges to 'bc', which is not in the vocabulary");
  expect_error([](Metadata& m) { key(m, "tokenizer.ggml.merges") = gguf::Value::string_array({"abc"}); },
               "is not two tokens separated by one space");
  expect_error([](Metadata& m) { key(m, "tokenizer.ggml.merges") = gguf::Value::u32_array({1, 2}); },
               "'tokenizer.ggml.merges' must be an array of string");
}

TEST(BadMetadata, WrongTypes) {
  expect_error([](Metadata& m) { key(m, "tokenizer.ggml.tokens") = gguf::Value::str("abc"); },
               "'tokenizer.ggml.tokens' must be an array of string");
  expect_error([](Metadata& m) { key(m, "tokenizer.ggml.model") = gguf::Value::u32(2); }, "tokenizer.ggml.model");
  expect_error([](Metadata& m) { key(m, "tokenizer.ggml.token_type") = gguf::Value::string_array({"x"}); },
               "'tokenizer.ggml.token_type'");
  expect_error([](Metadata& m) { key(m, "tokenizer.ggml.token_type") = gguf::Value::i32_array({1, 1}); },
               "'tokenizer.ggml.token_type' has 2 entries but 'tokenizer.ggml.tokens' has 259");
  expect_error([](Metadata& m) { key(m, "tokenizer.ggml.bos_token_id") = gguf::Value::str("0"); },
               "'tokenizer.ggml.bos_token_id' must be an integer");
  expect_error([](Metadata& m) { key(m, "tokenizer.ggml.bos_token_id") = gguf::Value::u32(999); },
               "'tokenizer.ggml.bos_token_id' = 999 is out of range");
}

TEST(BadMetadata, UnsupportedModelOrPreTokenizer) {
  expect_error([](Metadata& m) { key(m, "tokenizer.ggml.model") = gguf::Value::str("llama"); },
               "only byte-level BPE ('gpt2') is supported");
  expect_error([](Metadata& m) { key(m, "tokenizer.ggml.pre") = gguf::Value::str("qwen2"); },
               "unsupported tokenizer.ggml.pre 'qwen2'");
}

TEST(BadMetadata, MissingByteToken) {
  expect_error(
      [](Metadata& m) {
        auto& t = key(m, "tokenizer.ggml.tokens");
        t.items[0x41] = gguf::Value::str("AA");  // no token for 'A' any more
      },
      "has no token for byte 0x41");
}

TEST(BadMetadata, OutOfRangeIdsOnDecode) {
  Tokenizer t(tiny());
  EXPECT_THROW(t.decode(std::vector<TokenId>{259}), Error);
  EXPECT_THROW(t.decode(std::vector<TokenId>{-1}), Error);
  EXPECT_THROW((void)t.token_type(1000), Error);
}

}  // namespace
}  // namespace ds4::tokenizer
