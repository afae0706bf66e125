#pragma once
// DS4 prompt token sequences for the CLI: the §2.3 single prompt is rendered by
// chat::render_single; the REPL transcript (§2.9) is built from the same head
// and turn pieces. Text from users and files is tokenized without special-token
// recognition; markers go in as ids.
#include <cstdint>
#include <string_view>
#include <vector>

#include "chat/chat.h"
#include "engine/engine.h"

namespace ds4::engine {

enum class Thinking { none, high, max };

// Think Max needs at least this much context; below it the CLI uses `high`.
inline constexpr int64_t kThinkMaxMinContext = chat::kThinkMaxMinContext;
chat::ThinkMode to_chat(Thinking t);
std::string_view thinking_name(Thinking t);  // "none", "high", "max"

// Token ids of rendered segments: specials by id, text as plain BPE.
std::vector<int32_t> encode_segments(const Engine& e, const chat::Segments& segments);

// BOS [max prefix] [system] — the head of every prompt and REPL transcript.
std::vector<int32_t> prompt_head(const Engine& e, std::string_view system, Thinking t);
// <｜User｜> text <｜Assistant｜> (<think> | </think>) — one user turn.
std::vector<int32_t> user_turn(const Engine& e, std::string_view user, Thinking t);
// §2.3: head + one user turn; a prompt that starts with the BOS spelling is
// taken as already rendered (special tokens recognized, nothing added).
std::vector<int32_t> single_prompt(const Engine& e, std::string_view system, std::string_view user, Thinking t);
bool is_prerendered(std::string_view prompt);

}  // namespace ds4::engine
