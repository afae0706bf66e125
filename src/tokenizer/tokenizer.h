#pragma once
// DeepSeek byte-level BPE tokenizer built from GGUF tokenizer metadata
// (llama.cpp's `tokenizer.ggml.*` keys, so llama.cpp-made GGUFs load too).
//
// encode(text) never produces control tokens unless asked: text from users,
// tools and files is tokenized with parse_special=false, so a literal
// "<｜Assistant｜>" in it becomes ordinary BPE pieces. Rendered prompts use
// parse_special=true, where added-token spellings are matched first
// (leftmost, longest), exactly as Hugging Face does with added tokens.
//
// A Tokenizer is immutable after construction; copies share state and every
// method is safe to call from several threads at once.
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "gguf/gguf.h"
#include "tokenizer/bpe.h"

namespace ds4::tokenizer {

// llama.cpp's token types (values stored in tokenizer.ggml.token_type).
enum class TokenType : int32_t {
  UNDEFINED = 0, NORMAL = 1, UNKNOWN = 2, CONTROL = 3, USER_DEFINED = 4, UNUSED = 5, BYTE = 6,
};

using Metadata = std::vector<std::pair<std::string, gguf::Value>>;

class Tokenizer {
 public:
  // Throws ds4::Error naming the key and the problem for bad metadata.
  explicit Tokenizer(const Metadata& metadata);
  static Tokenizer from_gguf(const gguf::File& file);

  std::vector<TokenId> encode(std::string_view text, bool parse_special = false) const;
  void encode_append(std::string_view text, std::vector<TokenId>& out, bool parse_special = false) const;

  // Raw bytes of the ids (exact inverse of encode; may be invalid UTF-8 if the
  // ids end inside a character). Throws ds4::Error for an id out of range.
  std::string decode(std::span<const TokenId> ids) const;
  // Bytes one token stands for (byte-level spelling undone; added tokens as is).
  const std::string& token_bytes(TokenId id) const;
  // The vocabulary string as stored in the GGUF.
  const std::string& token_text(TokenId id) const;
  TokenType token_type(TokenId id) const;
  bool is_control(TokenId id) const { return token_type(id) == TokenType::CONTROL; }

  // Id of an added/special token by its exact spelling (e.g. "<think>").
  std::optional<TokenId> find_special(std::string_view text) const;
  TokenId special_id(std::string_view text) const;  // throws when absent
  // Id of any vocabulary string (byte-level spelling for normal tokens).
  std::optional<TokenId> find_token(std::string_view text) const;

  size_t vocab_size() const;
  size_t merge_count() const;
  std::optional<TokenId> bos_id() const;
  std::optional<TokenId> eos_id() const;
  const std::string& pre_name() const;

 private:
  struct Impl;
  std::shared_ptr<const Impl> impl_;
  explicit Tokenizer(std::shared_ptr<const Impl> impl) : impl_(std::move(impl)) {}
};

// Incremental detokenizer for streaming generated text: push() returns only
// complete, well-formed UTF-8 and holds back the bytes of a character that is
// still being spelled across byte tokens. Bytes that can never form a
// character become U+FFFD, so every chunk is valid UTF-8 on its own.
class StreamDecoder {
 public:
  explicit StreamDecoder(Tokenizer tok) : tok_(std::move(tok)) {}
  std::string push(TokenId id);
  // Ends the stream: held-back bytes of an unfinished character become U+FFFD.
  std::string flush();
  size_t pending_bytes() const { return pending_.size(); }

 private:
  Tokenizer tok_;  // a cheap shared handle, so the decoder cannot dangle
  std::string pending_;
};

}  // namespace ds4::tokenizer
