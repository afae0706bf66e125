// POST /v1/chat/completions (reference-behavior §3.7): OpenAI chat JSON to a
// Turn, and the Turn's events back to a chat.completion or to
// chat.completion.chunk SSE events.
#include <fmt/format.h>

#include "server/context.h"
#include "server/http_io.h"
#include "server/openai_common.h"

namespace ds4::server {

namespace {

// content / reasoning_content: a string, null, or an array whose string
// elements and {"text": ...} parts are concatenated (other parts, such as
// images, are dropped).
std::string read_text(const Json& msg, std::string_view key, const std::string& path) {
  const Json* v = field(msg, key);
  if (!v) return {};
  if (v->is_string()) return v->get<std::string>();
  const std::string p = join_path(path, key);
  if (!v->is_array())
    throw ApiError(400, fmt::format("invalid JSON request: field '{}' must be a string or an array, not {}", p, v->type_name()), p);
  std::string out;
  for (size_t i = 0; i < v->size(); ++i) {
    const Json& part = (*v)[i];
    if (part.is_string()) out += part.get<std::string>();
    else if (part.is_object()) out += get_string(part, "text", fmt::format("{}[{}]", p, i)).value_or("");
    else throw ApiError(400, fmt::format("invalid JSON request: field '{}[{}]' must be a string or an object", p, i), p);
  }
  return out;
}

chat::Role read_role(const Json& msg, const std::string& path) {
  const std::string role = get_string(msg, "role", path).value_or("user");
  if (role == "user") return chat::Role::User;
  if (role == "assistant") return chat::Role::Assistant;
  if (role == "system" || role == "developer") return chat::Role::System;
  if (role == "tool" || role == "function") return chat::Role::Tool;
  throw ApiError(400, fmt::format("invalid JSON request: field '{}.role' has unknown role '{}' (expected system, developer, user, assistant, tool or function)", path, role),
                 "messages");
}

std::vector<chat::ToolCall> read_tool_calls(const Json& msg, const std::string& path) {
  std::vector<chat::ToolCall> calls;
  const Json* arr = get_array(msg, "tool_calls", path);
  if (!arr) return calls;
  for (size_t i = 0; i < arr->size(); ++i) {
    const Json& c = (*arr)[i];
    const std::string p = fmt::format("{}.tool_calls[{}]", path, i);
    if (!c.is_object()) throw ApiError(400, fmt::format("invalid JSON request: field '{}' must be an object", p), "messages");
    const Json* fn = get_object(c, "function", p);
    if (!fn) continue;  // entries lacking a function are dropped (§3.7)
    const auto name = get_string(*fn, "name", p + ".function");
    const Json* args = field(*fn, "arguments");
    if (!name || !args) continue;
    chat::ToolCall tc;
    tc.id = get_string(c, "id", p).value_or("");
    tc.name = *name;
    tc.arguments = args->is_string() ? args->get<std::string>() : dump(*args);
    calls.push_back(std::move(tc));
  }
  return calls;
}

std::vector<chat::Message> read_messages(const Json& body) {
  const Json* arr = get_array(body, "messages", "");
  if (!arr) throw ApiError(400, "missing messages", "messages");
  if (arr->empty()) throw ApiError(400, "invalid JSON request: field 'messages' must not be empty", "messages");
  std::vector<chat::Message> out;
  for (size_t i = 0; i < arr->size(); ++i) {
    const Json& m = (*arr)[i];
    const std::string path = fmt::format("messages[{}]", i);
    if (!m.is_object())
      throw ApiError(400, fmt::format("invalid JSON request: field '{}' must be an object, not {}", path, m.type_name()), "messages");
    chat::Message msg;
    msg.role = read_role(m, path);
    msg.content = read_text(m, "content", path);
    if (msg.role == chat::Role::Assistant) {
      if (field(m, "reasoning_content")) msg.reasoning = read_text(m, "reasoning_content", path);
      msg.tool_calls = read_tool_calls(m, path);
    }
    if (msg.role == chat::Role::Tool) msg.tool_call_id = get_string(m, "tool_call_id", path).value_or("");
    out.push_back(std::move(msg));
  }
  return out;
}

std::vector<chat::ToolDef> read_tools(const Json& body) {
  std::vector<chat::ToolDef> out;
  const Json* arr = get_array(body, "tools", "");
  if (!arr) return out;
  for (size_t i = 0; i < arr->size(); ++i) {
    const Json& t = (*arr)[i];
    const std::string path = fmt::format("tools[{}]", i);
    if (!t.is_object()) throw ApiError(400, fmt::format("invalid JSON request: field '{}' must be an object", path), "tools");
    // {"type":"function","function":{...}}: the schema line is the inner object (§2.5).
    const Json* fn = get_object(t, "function", path);
    const Json& def = fn ? *fn : t;
    const std::string dpath = fn ? path + ".function" : path;
    const auto name = get_string(def, "name", dpath);
    if (!name || name->empty()) throw ApiError(400, fmt::format("invalid JSON request: field '{}.name' is missing", dpath), "tools");
    chat::ToolDef td;
    td.name = *name;
    td.description = get_string(def, "description", dpath).value_or("");
    if (const Json* p = get_object(def, "parameters", dpath)) td.parameters = *p;
    td.raw_json = dump(def);
    out.push_back(std::move(td));
  }
  return out;
}

bool read_tool_choice(const Json& body) {
  const Json* v = field(body, "tool_choice");
  if (!v) return true;
  if (v->is_string()) return v->get<std::string>() != "none";
  if (v->is_object()) return true;  // a forced function is treated as auto (§3.7)
  throw ApiError(400, "invalid JSON request: field 'tool_choice' must be a string or an object", "tool_choice");
}

Json message_json(const TurnEvent& done) {
  const chat::ParsedMessage& p = done.parsed;
  Json msg = {{"role", "assistant"}, {"content", p.content}};
  if (p.reasoning && !p.reasoning->empty()) msg["reasoning_content"] = *p.reasoning;
  if (!p.calls.empty()) {
    Json calls = Json::array();
    for (const auto& c : p.calls)
      calls.push_back({{"id", c.id},
                       {"type", "function"},
                       {"function", {{"name", c.name}, {"arguments", chat::compact_arguments(c.arguments)}}}});
    msg["tool_calls"] = calls;
  }
  return msg;
}

struct ChatRequest {
  Turn turn;
  std::string model;
  bool stream = false;
  bool include_usage = false;
};

ChatRequest read_request(const Json& body, const ServerContext& ctx) {
  ChatRequest r;
  reject_unsupported(body);
  r.model = model_of(body, ctx.opt.model_id);
  r.turn.messages = read_messages(body);
  r.turn.tools = read_tools(body);
  r.turn.tools_active = read_tool_choice(body);
  read_sampling(body, r.turn);
  read_thinking(body, r.turn);
  read_stop(body, "stop", r.turn);
  read_max_tokens(body, r.turn, true);
  if (get_bool(body, "logprobs", "").value_or(false))
    r.turn.top_logprobs = static_cast<int>(get_int(body, "top_logprobs", "", 0, 20).value_or(0));
  else
    (void)get_int(body, "top_logprobs", "", 0, 20);  // still type-checked
  r.stream = get_bool(body, "stream", "").value_or(false);
  if (const Json* so = get_object(body, "stream_options", ""))
    r.include_usage = get_bool(*so, "include_usage", "stream_options").value_or(false);
  return r;
}

void handle(const httplib::Request& req, httplib::Response& res, ServerContext& ctx) {
  // Held until the response is written (the SSE body outlives this function).
  auto ticket = std::make_shared<GenerationTicket>(ctx);
  const Json body = parse_body(req.body);
  ChatRequest r = read_request(body, ctx);
  const PreparedTurn prepared = ctx.runner.prepare(r.turn, "messages");
  std::shared_ptr<TurnStream> stream = ctx.runner.start(r.turn, prepared);
  const std::string id = fmt::format("chatcmpl-{}", next_response_number());
  const long long created = unix_now();

  if (!r.stream) {
    std::vector<TurnEvent> lps;
    TurnEvent done = wait_done(req, *stream, r.turn.top_logprobs >= 0 ? &lps : nullptr);
    if (done.finish == TurnFinish::error && done.usage.completion_tokens == 0)
      throw ApiError(500, done.error.empty() ? "generation failed" : done.error);
    Json choice = {{"index", 0}, {"message", message_json(done)}};
    if (r.turn.top_logprobs >= 0) {
      Json content = Json::array();
      for (const auto& e : lps) content.push_back(chat_logprob(e));
      choice["logprobs"] = {{"content", content}};
    } else {
      choice["logprobs"] = nullptr;
    }
    choice["finish_reason"] = finish_reason(done.finish);
    send_json(res, 200,
              {{"id", id},
               {"object", "chat.completion"},
               {"created", created},
               {"model", r.model},
               {"choices", Json::array({choice})},
               {"usage", usage_json(done.usage)},
               {"timings", timings_json(done.usage)},
               {"ds4_steering", steering_json(done.usage)}});
    return;
  }

  auto chunk = [id, created, model = r.model](Json delta, Json finish = nullptr) {
    return Json{{"id", id},
                {"object", "chat.completion.chunk"},
                {"created", created},
                {"model", model},
                {"choices", Json::array({{{"index", 0}, {"delta", std::move(delta)}, {"finish_reason", std::move(finish)}}})}};
  };
  auto streamed_calls = std::make_shared<int>(0);
  const bool include_usage = r.include_usage;
  stream_turn(
      res, stream, [chunk](SseWriter& w) { return w.data(chunk({{"role", "assistant"}, {"content", ""}})); },
      [chunk, streamed_calls, include_usage, id, created, model = r.model, ticket](SseWriter& w, const TurnEvent& e) {
        using K = chat::StreamEvent::Kind;
        switch (e.kind) {
          case TurnEvent::Kind::Progress: return true;
          case TurnEvent::Kind::Logprob: {
            Json c = chunk(Json::object());
            c["choices"][0]["logprobs"] = {{"content", Json::array({chat_logprob(e)})}};
            return w.data(c);
          }
          case TurnEvent::Kind::Stream: {
            const chat::StreamEvent& s = e.stream;
            switch (s.kind) {
              case K::Reasoning: return w.data(chunk({{"reasoning_content", s.text}}));
              case K::Text: return w.data(chunk({{"content", s.text}}));
              case K::ToolStart:
                ++*streamed_calls;
                return w.data(chunk({{"tool_calls", Json::array({{{"index", s.index},
                                                                   {"id", s.id},
                                                                   {"type", "function"},
                                                                   {"function", {{"name", s.text}, {"arguments", ""}}}}})}}));
              case K::ToolArgs:
                return w.data(chunk({{"tool_calls", Json::array({{{"index", s.index}, {"function", {{"arguments", s.text}}}}})}}));
              case K::ToolEnd: return true;
            }
            return true;
          }
          case TurnEvent::Kind::Done: {
            // §3.7 step 5: calls the live projection could not stream come whole.
            if (*streamed_calls == 0 && !e.parsed.calls.empty()) {
              Json calls = Json::array();
              for (size_t i = 0; i < e.parsed.calls.size(); ++i) {
                const auto& c = e.parsed.calls[i];
                calls.push_back({{"index", i},
                                 {"id", c.id},
                                 {"type", "function"},
                                 {"function", {{"name", c.name}, {"arguments", chat::compact_arguments(c.arguments)}}}});
              }
              if (!w.data(chunk({{"tool_calls", calls}}))) return false;
            }
            // The finish chunk reports the steering too, so a stream without
            // include_usage has it.
            Json fin = chunk(Json::object(), finish_reason(e.finish));
            fin["ds4_steering"] = steering_json(e.usage);
            if (!w.data(fin)) return false;
            if (include_usage) {
              Json u = {{"id", id}, {"object", "chat.completion.chunk"}, {"created", created}, {"model", model},
                        {"choices", Json::array()}, {"usage", usage_json(e.usage)}, {"timings", timings_json(e.usage)},
                        {"ds4_steering", steering_json(e.usage)}};
              if (!w.data(u)) return false;
            }
            return w.raw("data: [DONE]\n\n");
          }
        }
        return true;
      });
}

}  // namespace

void add_openai_chat_routes(httplib::Server& s, ServerContext& ctx) {
  s.Post("/v1/chat/completions", [&ctx](const httplib::Request& req, httplib::Response& res) {
    guarded(res, openai_error_body, [&] { handle(req, res, ctx); });
  });
}

}  // namespace ds4::server
