#pragma once
// Request fields and response pieces shared by the OpenAI adapters (chat
// completions and legacy completions; reference-behavior §3.6, §3.11, §3.12).
#include <string>
#include <vector>

#include "server/json_fields.h"
#include "server/turn.h"

namespace ds4::server {

// temperature, top_p, min_p, top_k, seed.
// Also reads the `ds4_steering` extension (read_steering).
void read_sampling(const Json& body, Turn& t);
// `ds4_steering`: {"vector": NAME, "ffn": S, "attn": S}, every key optional;
// any other key is a 400 (a path to a file above all: requests never make the
// server read files; docs/steering.md).
void read_steering(const Json& body, Turn& t);
// A client-sent name or key for an error message: at most 64 bytes, cut at
// a UTF-8 character boundary.
std::string echo_name(const std::string& s);
// {"vector": NAME, "ffn": S, "attn": S} when the turn runs steered, else null.
// Every API's reply reports it as `ds4_steering`.
Json steering_json(const backend::Steering& s, const std::string& vector);
inline Json steering_json(const TurnUsage& u) { return steering_json(u.steering, u.steering_vector); }
inline Json steering_json(const PreparedTurn& p) { return steering_json(p.steering, p.steering_vector); }
// thinking / think / reasoning_effort and the deepseek-chat / -reasoner aliases.
void read_thinking(const Json& body, Turn& t);
// stop: a string or an array of strings (empty strings ignored).
void read_stop(const Json& body, std::string_view key, Turn& t);
// max_tokens (and max_completion_tokens for chat).
void read_max_tokens(const Json& body, Turn& t, bool chat);
// response_format other than {"type":"text"} is a 400: constrained decoding
// does not exist yet, and ignoring it would return unconstrained text. n != 1
// is a 400 too (one choice per request).
void reject_unsupported(const Json& body);

std::string model_of(const Json& body, const std::string& fallback);
std::string finish_reason(TurnFinish f);  // stop / length / tool_calls / error
Json usage_json(const TurnUsage& u);
Json timings_json(const TurnUsage& u);
// Chat logprobs entry: {"token","logprob","bytes","top_logprobs":[...]}.
Json chat_logprob(const TurnEvent& e);
// The token's text for JSON (bytes that are not UTF-8 are replaced).
std::string token_text(const std::string& bytes);
long long next_response_number();  // process-wide counter for ids (chatcmpl-N, cmpl-N)
long long unix_now();

}  // namespace ds4::server
