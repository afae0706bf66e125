#pragma once
// DS4 prompt token sequences for the CLI (reference-behavior §2.3 single prompt,
// §2.9 REPL transcript). Text from users and files is tokenized without
// special-token recognition; the markers are inserted as ids.
// TODO(chat): once src/chat is committed, build these from chat::render_single.
#include <cstdint>
#include <string_view>
#include <vector>

#include "engine/engine.h"

namespace ds4::engine {

enum class Thinking { none, high, max };

// Think Max needs at least this much context; below it the CLI uses `high`.
inline constexpr int64_t kThinkMaxMinContext = 393216;
std::string_view thinking_name(Thinking t);  // "none", "high", "max"
std::string_view think_max_prefix();

// BOS [max prefix] [system] — the head of every prompt and REPL transcript.
std::vector<int32_t> prompt_head(const Engine& e, std::string_view system, Thinking t);
// <｜User｜> text <｜Assistant｜> (<think> | </think>) — one user turn.
std::vector<int32_t> user_turn(const Engine& e, std::string_view user, Thinking t);
// §2.3: head + one user turn; a prompt that starts with the BOS spelling is
// taken as already rendered (special tokens recognized, nothing added).
std::vector<int32_t> single_prompt(const Engine& e, std::string_view system, std::string_view user, Thinking t);
bool is_prerendered(std::string_view prompt);

}  // namespace ds4::engine
