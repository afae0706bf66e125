#pragma once
// OpenAI Responses request parsing (reference-behavior §3.10): `input` items
// (messages, reasoning, function and custom tool calls and their outputs) to
// the chat messages the DS4 renderer takes, and the tools the response must
// report back in their own shape (custom tools, namespaces).
#include <map>
#include <string>

#include "server/json_fields.h"
#include "server/response_store.h"
#include "server/turn.h"

namespace ds4::server {

// How a prompt-side tool name maps back to what the client declared.
struct ResponsesTool {
  std::string name;       // as the client declared it
  std::string ns;         // namespace, or empty
  bool custom = false;    // a custom tool: the call carries free text `input`
};

struct ResponsesRequest {
  Turn turn;
  std::string model;
  bool stream = false;
  bool summaries = false;  // reasoning.summary asked for reasoning output items
  // include: ["reasoning.encrypted_content"] (Codex with store=false): the
  // reasoning item carries the raw reasoning in encrypted_content, so a client
  // that shows no summaries still replays it and the next turn's prompt
  // matches what the model wrote (a reused prefix).
  bool encrypted_reasoning = false;
  bool reasoning_items() const { return summaries || encrypted_reasoning; }
  Json reasoning = Json::object();  // echoed in the response object
  std::string instructions;
  std::map<std::string, ResponsesTool> tools;  // by prompt name
  // The conversation as input items: a continued response's items, then this
  // request's input (a string input as one user message item). What the
  // response store keeps, followed by the output.
  Json items = Json::array();
  bool store = true;         // body.store (OpenAI's default: true)
  std::string previous_id;   // previous_response_id, or empty
};

// `previous` resolves previous_response_id (null: the field is refused).
ResponsesRequest read_responses_request(const Json& body, const std::string& default_model,
                                        ResponseStore* previous = nullptr);

// A custom tool's call is rendered and parsed as one string parameter of this
// name (docs/server.md: custom tools).
inline constexpr std::string_view kCustomInputParam = "input";

// ds4's "encrypted" reasoning is the reasoning text behind this marker (not
// secret: the client already holds the conversation); other servers' opaque
// blobs lack it and are ignored.
inline constexpr std::string_view kReasoningBlobPrefix = "ds4-reasoning:";

}  // namespace ds4::server
