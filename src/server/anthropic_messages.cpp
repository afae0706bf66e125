// POST /v1/messages and /v1/messages/count_tokens (Anthropic Messages API,
// reference-behavior §3.9): Anthropic JSON to a Turn, and the Turn's events
// back to a message object or to the named SSE events Claude Code reads.
#include <fmt/format.h>

#include "server/anthropic_request.h"
#include "server/context.h"
#include "server/http_io.h"
#include "server/openai_common.h"
#include "server/random_hex.h"

namespace ds4::server {

namespace {

Json tool_input(const std::string& arguments) { return Json::parse(chat::compact_arguments(arguments)); }

Json message_content(const TurnEvent& done, const std::string& signature) {
  const chat::ParsedMessage& p = done.parsed;
  Json content = Json::array();
  if (p.reasoning && !p.reasoning->empty())
    content.push_back({{"type", "thinking"}, {"thinking", *p.reasoning}, {"signature", signature}});
  if (!p.content.empty()) content.push_back({{"type", "text"}, {"text", p.content}});
  for (const auto& c : p.calls)
    content.push_back({{"type", "tool_use"}, {"id", c.id}, {"name", c.name}, {"input", tool_input(c.arguments)}});
  // A message always carries a text or tool_use block, even when the model
  // produced nothing visible.
  if (content.empty() || content.back()["type"] == "thinking") content.push_back({{"type", "text"}, {"text", ""}});
  return content;
}

Json stop_sequence_json(const TurnEvent& done) {
  return done.stop_sequence.empty() ? Json(nullptr) : Json(done.stop_sequence);
}

// The SSE side: content blocks open and close as the stream's kind changes
// (thinking, text, one block per tool call).
class BlockStream {
 public:
  explicit BlockStream(std::string signature) : signature_(std::move(signature)) {}

  bool on_stream(SseWriter& w, const chat::StreamEvent& s) {
    using K = chat::StreamEvent::Kind;
    switch (s.kind) {
      case K::Reasoning:
        if (s.text.empty()) return true;
        if (open_ != Open::thinking && !start(w, Open::thinking, {{"type", "thinking"}, {"thinking", ""}, {"signature", ""}}))
          return false;
        return delta(w, {{"type", "thinking_delta"}, {"thinking", s.text}});
      case K::Text:
        if (s.text.empty()) return true;
        if (open_ != Open::text && !start(w, Open::text, {{"type", "text"}, {"text", ""}})) return false;
        saw_visible_ = true;
        return delta(w, {{"type", "text_delta"}, {"text", s.text}});
      case K::ToolStart:
        saw_visible_ = true;
        tool_open_index_ = s.index;
        return start(w, Open::tool, {{"type", "tool_use"}, {"id", s.id}, {"name", s.text}, {"input", Json::object()}});
      case K::ToolArgs:
        if (open_ != Open::tool) return true;
        return delta(w, {{"type", "input_json_delta"}, {"partial_json", s.text}});
      case K::ToolEnd:
        if (open_ == Open::tool) streamed_calls_.push_back(tool_open_index_);
        return close(w);
    }
    return true;
  }

  // Calls the live projection did not stream come whole (§3.9 step 4), then
  // an empty text block when only thinking was sent (step 5).
  bool finish(SseWriter& w, const chat::ParsedMessage& parsed) {
    if (!close(w)) return false;
    for (size_t i = 0; i < parsed.calls.size(); ++i) {
      if (std::find(streamed_calls_.begin(), streamed_calls_.end(), static_cast<int>(i)) != streamed_calls_.end()) continue;
      const auto& c = parsed.calls[i];
      saw_visible_ = true;
      if (!start(w, Open::tool, {{"type", "tool_use"}, {"id", c.id}, {"name", c.name}, {"input", Json::object()}}) ||
          !delta(w, {{"type", "input_json_delta"}, {"partial_json", chat::compact_arguments(c.arguments)}}) || !close(w))
        return false;
    }
    if (!saw_visible_) return start(w, Open::text, {{"type", "text"}, {"text", ""}}) && close(w);
    return true;
  }

  bool close(SseWriter& w) {
    if (open_ == Open::none) return true;
    if (open_ == Open::thinking && !delta(w, {{"type", "signature_delta"}, {"signature", signature_}})) return false;
    open_ = Open::none;
    return w.event("content_block_stop", {{"type", "content_block_stop"}, {"index", index_}});
  }

 private:
  enum class Open { none, thinking, text, tool };
  bool start(SseWriter& w, Open kind, Json block) {
    if (!close(w)) return false;
    open_ = kind;
    ++index_;
    return w.event("content_block_start", {{"type", "content_block_start"}, {"index", index_}, {"content_block", std::move(block)}});
  }
  bool delta(SseWriter& w, Json d) {
    return w.event("content_block_delta", {{"type", "content_block_delta"}, {"index", index_}, {"delta", std::move(d)}});
  }

  std::string signature_;
  Open open_ = Open::none;
  int index_ = -1;
  int tool_open_index_ = -1;
  std::vector<int> streamed_calls_;  // parser call indexes whose block closed normally
  bool saw_visible_ = false;
};

void handle_messages(const httplib::Request& req, httplib::Response& res, ServerContext& ctx) {
  auto ticket = std::make_shared<GenerationTicket>(ctx);
  const Json body = parse_body(req.body);
  AnthropicRequest r = read_anthropic_request(body, ctx.opt.model_id, false);
  const PreparedTurn prepared = ctx.runner.prepare(r.turn, "messages");
  std::shared_ptr<TurnStream> stream = ctx.runner.start(r.turn, prepared);
  const std::string id = random_id("msg_", 24);

  if (!r.stream) {
    TurnEvent done = wait_done(req, *stream, nullptr);
    if (done.finish == TurnFinish::error || done.finish == TurnFinish::cancelled)
      throw ApiError(500, done.error.empty() ? "generation failed" : done.error);
    send_json(res, 200,
              {{"id", id},
               {"type", "message"},
               {"role", "assistant"},
               {"model", r.model},
               {"content", message_content(done, id)},
               {"stop_reason", anthropic_stop_reason(done)},
               {"stop_sequence", stop_sequence_json(done)},
               {"usage", anthropic_usage(done.usage)},
               {"ds4_steering", steering_json(done.usage)}});
    return;
  }

  const auto prompt_tokens = static_cast<int64_t>(prepared.tokens.size());
  Json start = {{"type", "message_start"},
                {"message",
                 {{"id", id},
                  {"type", "message"},
                  {"role", "assistant"},
                  {"model", r.model},
                  {"content", Json::array()},
                  {"stop_reason", nullptr},
                  {"stop_sequence", nullptr},
                  {"usage",
                   {{"input_tokens", prompt_tokens},
                    {"cache_creation_input_tokens", 0},
                    {"cache_read_input_tokens", 0},
                    {"output_tokens", 0}}},
                  // Decided before generation starts; SDKs keep a message's
                  // extra fields, so the streamed message carries it too.
                  {"ds4_steering", steering_json(prepared)}}}};
  auto blocks = std::make_shared<BlockStream>(id);
  stream_turn(
      res, stream,
      [start](SseWriter& w) { return w.event("message_start", start) && w.event("ping", {{"type", "ping"}}); },
      [blocks, ticket](SseWriter& w, const TurnEvent& e) {
        switch (e.kind) {
          case TurnEvent::Kind::Progress:
          case TurnEvent::Kind::Logprob: return true;
          case TurnEvent::Kind::Stream: return blocks->on_stream(w, e.stream);
          case TurnEvent::Kind::Done: {
            if (e.finish == TurnFinish::error || e.finish == TurnFinish::cancelled) {
              // A failed turn (unterminated tool call, shutdown) must not look
              // like a finished one: the client would run a half-streamed call.
              if (!blocks->close(w)) return false;
              return w.event("error", {{"type", "error"},
                                       {"error", {{"type", "api_error"},
                                                  {"message", e.error.empty() ? "generation failed" : e.error}}}});
            }
            if (!blocks->finish(w, e.parsed)) return false;
            Json usage = anthropic_usage(e.usage);
            if (!w.event("message_delta",
                         {{"type", "message_delta"},
                          {"delta", {{"stop_reason", anthropic_stop_reason(e)}, {"stop_sequence", stop_sequence_json(e)}}},
                          {"usage", usage}}))
              return false;
            return w.event("message_stop", {{"type", "message_stop"}});
          }
        }
        return true;
      });
}

// The prompt's token count exactly as /v1/messages would render it (same
// parsing, same thinking gate, same tools block), without running anything.
void handle_count_tokens(const httplib::Request& req, httplib::Response& res, ServerContext& ctx) {
  const Json body = parse_body(req.body);
  const AnthropicRequest r = read_anthropic_request(body, ctx.opt.model_id, true);
  send_json(res, 200, {{"input_tokens", static_cast<int64_t>(ctx.runner.render(r.turn).tokens.size())}});
}

}  // namespace

void add_anthropic_routes(httplib::Server& s, ServerContext& ctx) {
  // Claude Code calls /v1/messages?beta=true; the query string does not take
  // part in routing.
  s.Post("/v1/messages", [&ctx](const httplib::Request& req, httplib::Response& res) {
    guarded(res, anthropic_error_body, [&] { handle_messages(req, res, ctx); });
  });
  s.Post("/v1/messages/count_tokens", [&ctx](const httplib::Request& req, httplib::Response& res) {
    guarded(res, anthropic_error_body, [&] { handle_count_tokens(req, res, ctx); });
  });
}

}  // namespace ds4::server
