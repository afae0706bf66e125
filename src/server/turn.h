#pragma once
// The server's one API-neutral picture of a generation request (a Turn) and of
// what it yields (TurnEvents). Every API adapter (OpenAI chat, completions,
// Anthropic messages, Responses) maps its JSON to a Turn and the events back to
// its own JSON / SSE; nothing below this file knows about any API
// (docs/server.md).
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "backend/backend.h"
#include "chat/chat.h"
#include "engine/sampler.h"

namespace ds4::server {

// The `ds4_steering` extension field as the request sent it
// (docs/steering.md); TurnRunner::prepare resolves it against the direction
// sets the server loaded at start.
struct SteeringAsk {
  std::optional<std::string> vector;  // a set's name; absent: the default set
  std::optional<float> ffn, attn;     // absent both with a vector: that set's scales
};

struct Turn {
  // Chat-style turns render `messages` with `tools` (reference-behavior §2.4);
  // a completion renders `prompt` as §2.8 and yields raw text (no reasoning
  // split, no tool parsing).
  enum class Kind { Chat, Completion };
  Kind kind = Kind::Chat;
  std::vector<chat::Message> messages;
  std::vector<chat::ToolDef> tools;
  bool tools_active = true;  // false for tool_choice "none" (tools neither rendered nor parsed)
  std::string prompt;        // Completion only
  chat::ThinkMode think = chat::ThinkMode::High;  // as requested; the context gate is applied later
  engine::SamplingParams sampling;
  std::optional<int64_t> max_tokens;  // absent: the server's default; always clamped to the context left
  std::vector<std::string> stop;
  int top_logprobs = -1;  // < 0: no logprobs
  chat::IdStyle id_style = chat::IdStyle::OpenAI;
  // `ds4_steering` (docs/steering.md): absent, the server's own steering.
  std::optional<SteeringAsk> steering;
};

// A turn after rendering and tokenizing (done on the HTTP thread, so errors
// such as a prompt over the context become a 400 before anything is queued).
struct PreparedTurn {
  std::vector<int32_t> tokens;
  std::shared_ptr<const chat::Segments> segments;  // what `tokens` encode (for text-level prefix reuse)
  bool thinking = false;  // the prompt ends with <think>
  bool parse_tools = false;
  int64_t max_tokens = 0;
  backend::Steering steering;   // the request's, else the server's; `dirs` resolved
  std::string steering_vector;  // the name of the set `steering` uses ("" when unsteered)
};

// Why a turn ended, in API-neutral words (reference-behavior §3.12).
enum class TurnFinish { stop, length, tool_calls, error, cancelled };

struct TurnUsage {
  int64_t prompt_tokens = 0;
  int64_t cached_tokens = 0;
  int64_t completion_tokens = 0;
  double prefill_seconds = 0, decode_seconds = 0, ttft_seconds = 0;
  backend::Steering steering;   // the steering the turn ran with (reported when active)
  std::string steering_vector;  // its set's name
};

struct TokenAlt {
  std::string bytes;  // raw token bytes (may be a piece of a UTF-8 character)
  float logprob = 0;
};

struct TurnEvent {
  enum class Kind {
    Progress,  // prefill progress: done / total
    Stream,    // a reasoning / text / tool-call delta
    Logprob,   // one sampled token with its logprob (only when asked)
    Done,      // last event
  };
  Kind kind = Kind::Stream;
  int64_t done = 0, total = 0;  // Progress
  chat::StreamEvent stream;     // Stream
  TokenAlt token;               // Logprob: the sampled token
  std::vector<TokenAlt> top;    // Logprob: the best alternatives
  // Done:
  TurnFinish finish = TurnFinish::stop;
  std::string error;            // finish == error / cancelled
  std::string stop_sequence;    // finish == stop because this client stop string matched
  chat::ParsedMessage parsed;   // final parse (chat); for completions content is the whole text
  TurnUsage usage;
};

}  // namespace ds4::server
