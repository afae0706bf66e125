#pragma once
// GPT-2 byte-level alphabet: every byte maps to one printable Unicode character
// so that BPE vocabularies can be stored as text. Vocabulary strings of normal
// tokens are spelled in this alphabet; decoding maps them back to bytes.
#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace ds4::tokenizer {

// UTF-8 spelling of the character that stands for byte `b`.
const std::string& byte_to_symbol(uint8_t b);

// Maps a byte-level spelled token back to raw bytes, or nullopt when the text
// contains a character outside the alphabet (then callers use the text as is,
// as Hugging Face's ByteLevel decoder does).
std::optional<std::string> symbols_to_bytes(std::string_view text);

}  // namespace ds4::tokenizer
