#include "tokenizer/tokenizer.h"

#include <fmt/format.h>

#include <unordered_map>

#include "tokenizer/byte_level.h"
#include "tokenizer/pretokenizer.h"
#include "tokenizer/special_trie.h"
#include "util/error.h"

namespace ds4::tokenizer {

namespace {
constexpr std::string_view kModel = "tokenizer.ggml.model";
constexpr std::string_view kPre = "tokenizer.ggml.pre";
constexpr std::string_view kTokens = "tokenizer.ggml.tokens";
constexpr std::string_view kTypes = "tokenizer.ggml.token_type";
constexpr std::string_view kMerges = "tokenizer.ggml.merges";
constexpr std::string_view kBos = "tokenizer.ggml.bos_token_id";
constexpr std::string_view kEos = "tokenizer.ggml.eos_token_id";

const gguf::Value* find_key(const Metadata& md, std::string_view key) {
  for (const auto& [k, v] : md)
    if (k == key) return &v;
  return nullptr;
}

const gguf::Value& require_key(const Metadata& md, std::string_view key) {
  const gguf::Value* v = find_key(md, key);
  if (!v) fail("tokenizer metadata: missing key '{}'", key);
  return *v;
}

const std::vector<gguf::Value>& require_array(const gguf::Value& v, std::string_view key, gguf::ValueType elem) {
  if (v.type != gguf::ValueType::ARRAY)
    fail("tokenizer metadata: '{}' must be an array of {}, found {}", key, gguf::value_type_name(elem),
         gguf::value_type_name(v.type));
  if (v.elem_type != elem)
    fail("tokenizer metadata: '{}' must be an array of {}, found an array of {}", key, gguf::value_type_name(elem),
         gguf::value_type_name(v.elem_type));
  return v.items;
}

}  // namespace

struct Tokenizer::Impl {
  std::string pre_name;
  std::unique_ptr<PreTokenizer> pre;
  std::vector<std::string> text;   // vocabulary strings as stored
  std::vector<std::string> bytes;  // what each token decodes to
  std::vector<TokenType> type;
  std::unordered_map<std::string, TokenId> by_text;
  std::unordered_map<std::string, TokenId> special_by_text;
  SpecialTrie special_trie;
  TokenId byte_token[256] = {};
  MergeTable merges;
  std::optional<TokenId> bos, eos;

  void check_id(TokenId id) const {
    if (id < 0 || static_cast<size_t>(id) >= text.size())
      fail("token id {} is out of range (vocabulary has {} tokens)", id, text.size());
  }
  void encode_plain(std::string_view s, std::vector<TokenId>& out) const;
};

Tokenizer::Tokenizer(const Metadata& md) {
  auto impl = std::make_shared<Impl>();

  const std::string& model = require_key(md, kModel).as_string(kModel);
  if (model != "gpt2")
    fail("tokenizer metadata: '{}' is '{}'; only byte-level BPE ('gpt2') is supported", kModel, model);
  impl->pre_name = require_key(md, kPre).as_string(kPre);
  impl->pre = std::make_unique<PreTokenizer>(PreTokenizer::patterns_for(impl->pre_name));

  const auto& tokens = require_array(require_key(md, kTokens), kTokens, gguf::ValueType::STRING);
  if (tokens.empty()) fail("tokenizer metadata: '{}' is empty", kTokens);
  if (tokens.size() > static_cast<size_t>(INT32_MAX)) fail("tokenizer metadata: '{}' has too many tokens", kTokens);
  const size_t n = tokens.size();
  impl->text.reserve(n);
  for (const auto& t : tokens) impl->text.push_back(t.s);

  impl->type.assign(n, TokenType::NORMAL);
  if (const gguf::Value* tv = find_key(md, kTypes)) {
    if (tv->type != gguf::ValueType::ARRAY)
      fail("tokenizer metadata: '{}' must be an array of integers, found {}", kTypes, gguf::value_type_name(tv->type));
    if (tv->items.size() != n)
      fail("tokenizer metadata: '{}' has {} entries but '{}' has {}", kTypes, tv->items.size(), kTokens, n);
    for (size_t i = 0; i < n; ++i) {
      const gguf::Value& e = tv->items[i];
      if (!e.is_integer())
        fail("tokenizer metadata: '{}' must be an array of integers, found an array of {}", kTypes,
             gguf::value_type_name(tv->elem_type));
      const int64_t t = e.as_i64(kTypes);
      if (t < 0 || t > 6) fail("tokenizer metadata: '{}'[{}] = {} is not a token type (0..6)", kTypes, i, t);
      impl->type[i] = static_cast<TokenType>(t);
    }
  }

  impl->by_text.reserve(n);
  impl->bytes.reserve(n);
  for (size_t i = 0; i < n; ++i) {
    const std::string& s = impl->text[i];
    impl->by_text.emplace(s, static_cast<TokenId>(i));  // first spelling wins
    const TokenType ty = impl->type[i];
    const bool added = ty == TokenType::CONTROL || ty == TokenType::USER_DEFINED;
    if (added && !s.empty()) {
      impl->special_by_text.emplace(s, static_cast<TokenId>(i));
      impl->special_trie.insert(s, static_cast<TokenId>(i));
    }
    // Normal tokens are spelled in the byte-level alphabet; anything outside it
    // (added tokens such as "<｜User｜>") stands for its own UTF-8 bytes.
    std::optional<std::string> b;
    if (!added) b = symbols_to_bytes(s);
    impl->bytes.push_back(b ? std::move(*b) : s);
  }
  for (int b = 0; b < 256; ++b) {
    auto it = impl->by_text.find(byte_to_symbol(static_cast<uint8_t>(b)));
    if (it == impl->by_text.end())
      fail("tokenizer metadata: '{}' has no token for byte 0x{:02x} ('{}'), which byte-level BPE needs", kTokens, b,
           byte_to_symbol(static_cast<uint8_t>(b)));
    impl->byte_token[b] = it->second;
  }

  const gguf::Value* mv = find_key(md, kMerges);
  if (!mv) fail("tokenizer metadata: missing key '{}' (byte-level BPE needs its merge list)", kMerges);
  const auto& merges = require_array(*mv, kMerges, gguf::ValueType::STRING);
  impl->merges.reserve(merges.size());
  for (size_t r = 0; r < merges.size(); ++r) {
    const std::string& m = merges[r].s;
    const size_t sp = m.find(' ');
    if (sp == std::string::npos || sp == 0 || sp + 1 >= m.size() || m.find(' ', sp + 1) != std::string::npos)
      fail("tokenizer metadata: '{}'[{}] = '{}' is not two tokens separated by one space", kMerges, r, m);
    const std::string left = m.substr(0, sp), right = m.substr(sp + 1);
    auto l = impl->by_text.find(left), rr = impl->by_text.find(right), res = impl->by_text.find(left + right);
    if (l == impl->by_text.end())
      fail("tokenizer metadata: '{}'[{}] = '{}' refers to unknown token '{}'", kMerges, r, m, left);
    if (rr == impl->by_text.end())
      fail("tokenizer metadata: '{}'[{}] = '{}' refers to unknown token '{}'", kMerges, r, m, right);
    if (res == impl->by_text.end())
      fail("tokenizer metadata: '{}'[{}] = '{}' merges to '{}', which is not in the vocabulary", kMerges, r, m,
           left + right);
    impl->merges.insert(l->second, rr->second, static_cast<int32_t>(r), res->second);
  }

  auto read_id = [&](std::string_view key) -> std::optional<TokenId> {
    const gguf::Value* v = find_key(md, key);
    if (!v) return std::nullopt;
    if (!v->is_integer()) fail("tokenizer metadata: '{}' must be an integer, found {}", key, gguf::value_type_name(v->type));
    const int64_t id = v->as_i64(key);
    if (id < 0 || static_cast<size_t>(id) >= n)
      fail("tokenizer metadata: '{}' = {} is out of range (vocabulary has {} tokens)", key, id, n);
    return static_cast<TokenId>(id);
  };
  impl->bos = read_id(kBos);
  impl->eos = read_id(kEos);
  impl_ = std::move(impl);
}

Tokenizer Tokenizer::from_gguf(const gguf::File& file) {
  Metadata md;
  for (const auto& [k, v] : file.metadata())
    if (k.starts_with("tokenizer.ggml.")) md.emplace_back(k, v);
  try {
    return Tokenizer(md);
  } catch (const Error& e) {
    fail("{}: {}", file.path(), e.what());
  }
}

void Tokenizer::Impl::encode_plain(std::string_view s, std::vector<TokenId>& out) const {
  if (s.size() > UINT32_MAX) fail("text of {} bytes is too long to tokenize in one call", s.size());
  std::vector<Piece> pieces;
  pre->split(s, pieces);
  std::vector<TokenId> word;
  for (const Piece& p : pieces) {
    word.clear();
    for (uint32_t i = p.begin; i < p.end; ++i) word.push_back(byte_token[static_cast<uint8_t>(s[i])]);
    bpe_merge(merges, word);
    out.insert(out.end(), word.begin(), word.end());
  }
}

void Tokenizer::encode_append(std::string_view text, std::vector<TokenId>& out, bool parse_special) const {
  if (!parse_special) {
    impl_->encode_plain(text, out);
    return;
  }
  size_t start = 0, i = 0;
  while (i < text.size()) {
    size_t len = 0;
    const TokenId id = impl_->special_trie.longest_at(text, i, len);
    if (id < 0) {
      ++i;
      continue;
    }
    impl_->encode_plain(text.substr(start, i - start), out);
    out.push_back(id);
    i += len;
    start = i;
  }
  impl_->encode_plain(text.substr(start), out);
}

std::vector<TokenId> Tokenizer::encode(std::string_view text, bool parse_special) const {
  std::vector<TokenId> out;
  out.reserve(text.size() / 3 + 1);
  encode_append(text, out, parse_special);
  return out;
}

std::string Tokenizer::decode(std::span<const TokenId> ids) const {
  std::string out;
  for (TokenId id : ids) {
    impl_->check_id(id);
    out += impl_->bytes[static_cast<size_t>(id)];
  }
  return out;
}

const std::string& Tokenizer::token_bytes(TokenId id) const {
  impl_->check_id(id);
  return impl_->bytes[static_cast<size_t>(id)];
}

const std::string& Tokenizer::token_text(TokenId id) const {
  impl_->check_id(id);
  return impl_->text[static_cast<size_t>(id)];
}

TokenType Tokenizer::token_type(TokenId id) const {
  impl_->check_id(id);
  return impl_->type[static_cast<size_t>(id)];
}

std::optional<TokenId> Tokenizer::find_special(std::string_view text) const {
  auto it = impl_->special_by_text.find(std::string(text));
  if (it == impl_->special_by_text.end()) return std::nullopt;
  return it->second;
}

TokenId Tokenizer::special_id(std::string_view text) const {
  if (auto id = find_special(text)) return *id;
  fail("the tokenizer has no special token '{}'", text);
}

std::optional<TokenId> Tokenizer::find_token(std::string_view text) const {
  auto it = impl_->by_text.find(std::string(text));
  if (it == impl_->by_text.end()) return std::nullopt;
  return it->second;
}

size_t Tokenizer::vocab_size() const { return impl_->text.size(); }
size_t Tokenizer::merge_count() const { return impl_->merges.size(); }
std::optional<TokenId> Tokenizer::bos_id() const { return impl_->bos; }
std::optional<TokenId> Tokenizer::eos_id() const { return impl_->eos; }
const std::string& Tokenizer::pre_name() const { return impl_->pre_name; }

}  // namespace ds4::tokenizer
