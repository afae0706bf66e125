#pragma once
// Text-level prefix reuse (reference-behavior §5.1 "memory-text"): a slot's
// token history may spell the start of a new prompt without being its token
// prefix, because the model sampled a different split of the same bytes than
// BPE gives when the client sends that reply back. Then the slot's tokens are
// kept and only the rest of the prompt is tokenized.
//
// A history holding <think>reasoning</think> where the prompt has a bare
// </think> (clients do not send old reasoning back) matches too: the slot's
// state keeps the reasoning, as the reference server's thinking continuation
// does (reference-behavior §4.9).
//
// Control tokens must line up with the prompt's special segments: a history
// whose control token sits where the prompt has the same spelling as plain
// user text does not match (user text never becomes control tokens).
#include <cstdint>
#include <optional>
#include <span>
#include <vector>

#include "chat/chat.h"
#include "tokenizer/tokenizer.h"

namespace ds4::engine {

// history + the tokens of the rest of `prompt` when the history, read as
// segments (control tokens as Special, runs of other tokens as their bytes),
// is a proper prefix of `prompt`'s segments; nullopt otherwise.
std::optional<std::vector<int32_t>> extend_by_text(const tokenizer::Tokenizer& tok, std::span<const int32_t> history,
                                                   const chat::Segments& prompt);

}  // namespace ds4::engine
