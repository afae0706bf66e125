// POST /v1/responses (OpenAI Responses API, reference-behavior §3.10): input
// items to a Turn, and the Turn back to a response object or to the streamed
// lifecycle Codex and the Agents SDK read. A stream always ends with one
// terminal event (response.completed, .incomplete or .failed) carrying the
// whole response.
#include <fmt/format.h>

#include "server/context.h"
#include "server/http_io.h"
#include "server/openai_common.h"
#include "server/random_hex.h"
#include "server/responses_request.h"

namespace ds4::server {

namespace {

Json responses_usage(const TurnUsage& u) {
  return {{"input_tokens", u.prompt_tokens},
          {"input_tokens_details", {{"cached_tokens", u.cached_tokens}, {"cache_write_tokens", u.prompt_tokens - u.cached_tokens}}},
          {"output_tokens", u.completion_tokens},
          {"output_tokens_details", {{"reasoning_tokens", 0}}},
          {"total_tokens", u.prompt_tokens + u.completion_tokens}};
}

std::string status_of(TurnFinish f) {
  switch (f) {
    case TurnFinish::length: return "incomplete";
    case TurnFinish::error:
    case TurnFinish::cancelled: return "failed";
    default: return "completed";
  }
}

// A custom tool's call carries its free text: the one string parameter it was
// rendered with, else the arguments as they are.
std::string custom_input(const std::string& arguments) {
  const Json args = Json::parse(chat::compact_arguments(arguments));
  if (const Json* v = field(args, kCustomInputParam); v && v->is_string()) return v->get<std::string>();
  if (args.is_object() && args.size() == 1 && args.begin()->is_string()) return args.begin()->get<std::string>();
  return chat::compact_arguments(arguments);
}

// The response being built: item ids are drawn once, so the streamed items and
// the terminal response object agree.
struct ResponseState {
  ResponsesRequest req;
  std::string id = random_id("resp_", 24);
  long long created = unix_now();
  std::string reasoning_id = random_id("rs_", 24);
  std::string message_id = random_id("msg_", 24);
  Json output = Json::array();  // finished items
  Json steering = nullptr;      // ds4_steering, decided when the turn is prepared
  ResponseStore* store = nullptr;  // where a finished turn is kept (req.store)

  Json call_item(const chat::ParsedCall& c, const std::string& status) const {
    auto it = req.tools.find(c.name);
    if (it != req.tools.end() && it->second.custom)
      return {{"id", random_id("ctc_", 24)}, {"type", "custom_tool_call"}, {"status", status},
              {"call_id", c.id}, {"name", it->second.name}, {"input", custom_input(c.arguments)}};
    Json item = {{"id", random_id("fc_", 24)}, {"type", "function_call"}, {"status", status}};
    if (it != req.tools.end() && !it->second.ns.empty()) {
      item["name"] = it->second.name;
      item["namespace"] = it->second.ns;
    } else {
      item["name"] = c.name;
    }
    item["call_id"] = c.id;
    item["arguments"] = chat::compact_arguments(c.arguments);
    return item;
  }
  Json reasoning_item(const std::string& text, const std::string& status) const {
    Json item = {{"id", reasoning_id}, {"type", "reasoning"}, {"status", status}, {"summary", Json::array()}};
    if (req.summaries) item["summary"].push_back({{"type", "summary_text"}, {"text", text}});
    if (req.encrypted_reasoning) item["encrypted_content"] = std::string(kReasoningBlobPrefix) + text;
    return item;
  }
  Json message_item(const std::string& text, const std::string& status) const {
    return {{"id", message_id}, {"type", "message"}, {"status", status}, {"role", "assistant"},
            {"content", Json::array({{{"type", "output_text"}, {"text", text}, {"annotations", Json::array()}}})}};
  }

  // Keeps the conversation for a later previous_response_id (before the
  // terminal event or body goes out, so a client's next request finds it): the
  // request's items, then this turn's output with its reasoning as ds4's blob,
  // whether or not the client asked to see it, so the continuation renders
  // exactly what the model wrote. Failed turns are not kept.
  void remember(const std::string& status, const chat::ParsedMessage& p, const TurnEvent& done) const {
    if (!store || !req.store || (status != "completed" && status != "incomplete")) return;
    const std::string item_status = status == "completed" ? "completed" : "incomplete";
    Json items = req.items;
    if (p.reasoning && !p.reasoning->empty())
      items.push_back({{"type", "reasoning"}, {"status", item_status}, {"summary", Json::array()},
                       {"encrypted_content", std::string(kReasoningBlobPrefix) + *p.reasoning}});
    if (!p.content.empty()) items.push_back(message_item(p.content, item_status));
    for (const auto& c : p.calls) items.push_back(call_item(c, "completed"));
    store->put(id, std::move(items), object(status, &done));
  }

  Json object(const std::string& status, const TurnEvent* done) const {
    Json o = {{"id", id}, {"object", "response"}, {"created_at", created}, {"status", status}, {"model", req.model}};
    o["error"] = nullptr;
    o["incomplete_details"] = nullptr;
    if (done && status == "failed")
      o["error"] = {{"code", "server_error"}, {"message", done->error.empty() ? "generation failed" : done->error}};
    if (done && status == "incomplete") o["incomplete_details"] = {{"reason", "max_output_tokens"}};
    o["instructions"] = req.instructions.empty() ? Json(nullptr) : Json(req.instructions);
    o["output"] = output;
    o["parallel_tool_calls"] = true;
    o["tool_choice"] = req.turn.tools_active ? "auto" : "none";
    o["tools"] = Json::array();
    o["reasoning"] = req.reasoning;
    o["text"] = {{"format", {{"type", "text"}}}};
    o["truncation"] = "disabled";
    o["store"] = req.store;
    o["metadata"] = Json::object();
    o["previous_response_id"] = req.previous_id.empty() ? Json(nullptr) : Json(req.previous_id);
    o["max_output_tokens"] = req.turn.max_tokens ? Json(*req.turn.max_tokens) : Json(nullptr);
    o["usage"] = done ? responses_usage(done->usage) : Json(nullptr);
    o["ds4_steering"] = steering;
    return o;
  }
};

// Streams a ResponseState's events with their sequence numbers.
class ResponseStream {
 public:
  explicit ResponseStream(std::shared_ptr<ResponseState> st) : st_(std::move(st)) {}

  bool begin(SseWriter& w) {
    return send(w, "response.created", {{"response", st_->object("in_progress", nullptr)}}) &&
           send(w, "response.in_progress", {{"response", st_->object("in_progress", nullptr)}});
  }

  bool on_stream(SseWriter& w, const chat::StreamEvent& s) {
    using K = chat::StreamEvent::Kind;
    if (s.kind == K::Reasoning) {
      if (!st_->req.reasoning_items() || s.text.empty()) return true;
      if (!reasoning_open_) {
        reasoning_open_ = true;
        reasoning_index_ = next_index_++;
        Json item = st_->reasoning_item("", "in_progress");
        item["summary"] = Json::array();
        item.erase("encrypted_content");
        if (!send(w, "response.output_item.added", {{"output_index", reasoning_index_}, {"item", item}}))
          return false;
        if (st_->req.summaries &&
            !send(w, "response.reasoning_summary_part.added",
                  {{"item_id", st_->reasoning_id}, {"output_index", reasoning_index_}, {"summary_index", 0},
                   {"part", {{"type", "summary_text"}, {"text", ""}}}}))
          return false;
      }
      reasoning_ += s.text;
      if (!st_->req.summaries) return true;
      return send(w, "response.reasoning_summary_text.delta",
                  {{"item_id", st_->reasoning_id}, {"output_index", reasoning_index_}, {"summary_index", 0}, {"delta", s.text}});
    }
    saw_answer_ = true;  // </think> was passed
    if (s.kind != K::Text || s.text.empty()) return true;  // calls come whole at the end (§4.3)
    if (!close_reasoning(w, "completed")) return false;
    return text_delta(w, s.text);
  }

  bool finish(SseWriter& w, const TurnEvent& done) {
    const std::string status = status_of(done.finish);
    const std::string item_status = status == "completed" ? "completed" : "incomplete";
    if (!close_reasoning(w, saw_answer_ || !done.parsed.calls.empty() ? "completed" : item_status)) return false;
    // The final parse decides the text (a malformed tool block is returned as
    // text): what the live stream held back comes as one more delta.
    const std::string& final_text = done.parsed.content;
    if (final_text.size() > text_.size() && final_text.compare(0, text_.size(), text_) == 0 &&
        !text_delta(w, final_text.substr(text_.size())))
      return false;
    if (message_open_) {
      const Json part = {{"type", "output_text"}, {"text", text_}, {"annotations", Json::array()}};
      const Json ids = {{"item_id", st_->message_id}, {"output_index", message_index_}, {"content_index", 0}};
      Json d = ids;
      d["text"] = text_;
      Json p = ids;
      p["part"] = part;
      Json item = st_->message_item(text_, item_status);
      st_->output.push_back(item);
      if (!send(w, "response.output_text.done", d) || !send(w, "response.content_part.done", p) ||
          !send(w, "response.output_item.done", {{"output_index", message_index_}, {"item", item}}))
        return false;
    }
    for (const auto& c : done.parsed.calls) {
      Json item = st_->call_item(c, "completed");
      const int index = next_index_++;
      const bool custom = item["type"] == "custom_tool_call";
      Json added = item;
      added["status"] = "in_progress";
      added[custom ? "input" : "arguments"] = "";
      const std::string whole = item[custom ? "input" : "arguments"].get<std::string>();
      const Json ids = {{"item_id", item["id"]}, {"output_index", index}};
      Json delta = ids, fin = ids;
      delta["delta"] = whole;
      if (custom) {
        fin["input"] = whole;
      } else {
        fin["name"] = item["name"];
        fin["arguments"] = whole;
      }
      const std::string kind = custom ? "response.custom_tool_call_input" : "response.function_call_arguments";
      st_->output.push_back(item);
      if (!send(w, "response.output_item.added", {{"output_index", index}, {"item", added}}) ||
          !send(w, kind + ".delta", delta) || !send(w, kind + ".done", fin) ||
          !send(w, "response.output_item.done", {{"output_index", index}, {"item", item}}))
        return false;
    }
    const std::string terminal = status == "completed" ? "response.completed"
                                 : status == "incomplete" ? "response.incomplete"
                                                          : "response.failed";
    st_->remember(status, done.parsed, done);
    return send(w, terminal, {{"response", st_->object(status, &done)}});
  }

 private:
  bool send(SseWriter& w, const std::string& type, Json fields) {
    Json ev = {{"type", type}, {"sequence_number", seq_++}};
    for (auto it = fields.begin(); it != fields.end(); ++it) ev[it.key()] = it.value();
    return w.event(type, ev);
  }
  bool text_delta(SseWriter& w, const std::string& text) {
    if (!message_open_) {
      message_open_ = true;
      message_index_ = next_index_++;
      Json item = st_->message_item("", "in_progress");
      item["content"] = Json::array();
      if (!send(w, "response.output_item.added", {{"output_index", message_index_}, {"item", item}}) ||
          !send(w, "response.content_part.added",
                {{"item_id", st_->message_id}, {"output_index", message_index_}, {"content_index", 0},
                 {"part", {{"type", "output_text"}, {"text", ""}, {"annotations", Json::array()}}}}))
        return false;
    }
    text_ += text;
    return send(w, "response.output_text.delta",
                {{"item_id", st_->message_id}, {"output_index", message_index_}, {"content_index", 0}, {"delta", text},
                 {"logprobs", Json::array()}});
  }
  bool close_reasoning(SseWriter& w, const std::string& status) {
    if (!reasoning_open_) return true;
    reasoning_open_ = false;
    const Json part = {{"type", "summary_text"}, {"text", reasoning_}};
    const Json ids = {{"item_id", st_->reasoning_id}, {"output_index", reasoning_index_}, {"summary_index", 0}};
    Json d = ids, p = ids;
    d["text"] = reasoning_;
    p["part"] = part;
    Json item = st_->reasoning_item(reasoning_, status);
    st_->output.push_back(item);
    if (st_->req.summaries &&
        (!send(w, "response.reasoning_summary_text.done", d) || !send(w, "response.reasoning_summary_part.done", p)))
      return false;
    return send(w, "response.output_item.done", {{"output_index", reasoning_index_}, {"item", item}});
  }

  std::shared_ptr<ResponseState> st_;
  long long seq_ = 0;
  int next_index_ = 0;
  bool reasoning_open_ = false, message_open_ = false, saw_answer_ = false;
  int reasoning_index_ = -1, message_index_ = -1;
  std::string reasoning_, text_;
};

void handle(const httplib::Request& req, httplib::Response& res, ServerContext& ctx) {
  auto ticket = std::make_shared<GenerationTicket>(ctx);
  const Json body = parse_body(req.body);
  auto st = std::make_shared<ResponseState>();
  st->req = read_responses_request(body, ctx.opt.model_id, &ctx.responses);
  st->store = &ctx.responses;
  const PreparedTurn prepared = ctx.runner.prepare(st->req.turn, "input");
  st->steering = steering_json(prepared);
  std::shared_ptr<TurnStream> stream = ctx.runner.start(st->req.turn, prepared);

  if (!st->req.stream) {
    TurnEvent done = wait_done(req, *stream, nullptr);
    const std::string status = status_of(done.finish);
    const std::string item_status = status == "completed" ? "completed" : "incomplete";
    const chat::ParsedMessage& p = done.parsed;
    if (st->req.reasoning_items() && p.reasoning && !p.reasoning->empty())
      st->output.push_back(st->reasoning_item(*p.reasoning, item_status));
    if (!p.content.empty()) st->output.push_back(st->message_item(p.content, item_status));
    for (const auto& c : p.calls) st->output.push_back(st->call_item(c, item_status));
    st->remember(status, p, done);
    send_json(res, 200, st->object(status, &done));
    return;
  }

  auto rs = std::make_shared<ResponseStream>(st);
  stream_turn(
      res, stream, [rs](SseWriter& w) { return rs->begin(w); },
      [rs, ticket](SseWriter& w, const TurnEvent& e) {
        switch (e.kind) {
          case TurnEvent::Kind::Progress:
          case TurnEvent::Kind::Logprob: return true;
          case TurnEvent::Kind::Stream: return rs->on_stream(w, e.stream);
          case TurnEvent::Kind::Done: return rs->finish(w, e);
        }
        return true;
      });
}

}  // namespace

void add_openai_responses_routes(httplib::Server& s, ServerContext& ctx) {
  s.Post("/v1/responses", [&ctx](const httplib::Request& req, httplib::Response& res) {
    guarded(res, openai_error_body, [&] { handle(req, res, ctx); });
  });
  // A stored response (not store=false, not evicted, not before a restart).
  s.Get(R"(/v1/responses/([^/]+))", [&ctx](const httplib::Request& req, httplib::Response& res) {
    const std::string id = req.matches[1];
    if (auto o = ctx.responses.response(id)) return send_json(res, 200, *o);
    send_json(res, 404, openai_error_body(ApiError(404, fmt::format("response '{}' not found", id), "response_id")));
  });
  s.Delete(R"(/v1/responses/([^/]+))", [&ctx](const httplib::Request& req, httplib::Response& res) {
    const std::string id = req.matches[1];
    if (ctx.responses.erase(id))
      return send_json(res, 200, Json{{"id", id}, {"object", "response.deleted"}, {"deleted", true}});
    send_json(res, 404, openai_error_body(ApiError(404, fmt::format("response '{}' not found", id), "response_id")));
  });
}

}  // namespace ds4::server
