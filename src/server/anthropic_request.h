#pragma once
// Anthropic Messages request parsing and response pieces shared by
// /v1/messages and /v1/messages/count_tokens (docs/server.md, reference-behavior
// §3.9): both render a request the same way, so count_tokens counts exactly
// the prompt /v1/messages would run.
#include <string>

#include "server/json_fields.h"
#include "server/turn.h"

namespace ds4::server {

struct AnthropicRequest {
  Turn turn;
  std::string model;
  bool stream = false;
};

// `for_count`: count_tokens has no max_tokens and no sampling.
AnthropicRequest read_anthropic_request(const Json& body, const std::string& default_model, bool for_count);

// {"type":"error","error":{"type":T,"message":M,...}} (Anthropic's error shape).
Json anthropic_error_body(const ApiError& e);

// Anthropic usage: input_tokens are the prompt tokens not read from the
// session cache, cache_read_input_tokens those that were, so the two add up to
// the prompt (count_tokens' figure).
Json anthropic_usage(const TurnUsage& u);

// end_turn / max_tokens / tool_use / stop_sequence.
std::string anthropic_stop_reason(const TurnEvent& done);

}  // namespace ds4::server
