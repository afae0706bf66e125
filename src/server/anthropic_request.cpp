#include "server/anthropic_request.h"

#include <set>

#include <fmt/format.h>

#include "server/http_io.h"
#include "server/openai_common.h"

namespace ds4::server {

namespace {

[[noreturn]] void bad(const std::string& path, const std::string& what, const std::string& param) {
  throw ApiError(400, fmt::format("invalid JSON request: field '{}' {}", path, what), param);
}

// Claude Code puts a per-request billing line ("x-anthropic-billing-header:
// cc_version=...; cch=...") in its first system block. It changes with every
// request, and being at the top of the prompt it would make every request miss
// the session cache; ds4 drops such private header parts (reference-behavior
// §3.9), so the rendered prompt is the same from one request to the next.
bool private_header_part(const std::string& text) { return text.rfind("x-anthropic-", 0) == 0; }

// system: a string, or an array of strings / {"type":"text","text":...} blocks
// (cache_control and other block fields are ignored), joined with "\n" unless
// the previous part already ends with one.
std::string read_system(const Json& body) {
  const Json* v = field(body, "system");
  if (!v) return {};
  if (v->is_string()) return private_header_part(v->get<std::string>()) ? std::string() : v->get<std::string>();
  if (!v->is_array()) bad("system", fmt::format("must be a string or an array of text blocks, not {}", v->type_name()), "system");
  std::string out;
  for (size_t i = 0; i < v->size(); ++i) {
    const Json& part = (*v)[i];
    const std::string path = fmt::format("system[{}]", i);
    std::string text;
    if (part.is_string()) text = part.get<std::string>();
    else if (part.is_object()) text = get_string(part, "text", path).value_or("");
    else bad(path, fmt::format("must be a string or a text block, not {}", part.type_name()), "system");
    if (text.empty() || private_header_part(text)) continue;
    if (!out.empty() && out.back() != '\n') out += '\n';
    out += text;
  }
  return out;
}

// tool_result content: a string, or blocks whose text parts are concatenated
// (images and other parts are dropped, as for messages).
std::string tool_result_text(const Json& block, const std::string& path) {
  const Json* c = field(block, "content");
  if (!c) return {};
  if (c->is_string()) return c->get<std::string>();
  if (!c->is_array()) bad(path + ".content", fmt::format("must be a string or an array of blocks, not {}", c->type_name()), "messages");
  std::string out;
  for (size_t i = 0; i < c->size(); ++i) {
    const Json& b = (*c)[i];
    const std::string p = fmt::format("{}.content[{}]", path, i);
    if (b.is_string()) out += b.get<std::string>();
    else if (!b.is_object()) bad(p, "must be an object", "messages");
    else if (get_string(b, "type", p).value_or("text") == "text") out += get_string(b, "text", p).value_or("");
  }
  return out;
}

// Tool results live inside the user turn as <tool_result>...</tool_result>
// (reference-behavior §2.7); only the exact closing tag is escaped.
std::string wrap_tool_result(const std::string& text) {
  static constexpr std::string_view kClose = "</tool_result>";
  std::string out = "<tool_result>";
  size_t at = 0;
  for (size_t hit; (hit = text.find(kClose, at)) != std::string::npos; at = hit + kClose.size())
    out.append(text, at, hit - at).append("&lt;/tool_result>");
  out.append(text, at, std::string::npos);
  return out + std::string(kClose);
}

std::vector<chat::Message> read_messages(const Json& body) {
  const Json* arr = get_array(body, "messages", "");
  if (!arr) throw ApiError(400, "missing messages", "messages");
  if (arr->empty()) bad("messages", "must not be empty", "messages");
  std::vector<chat::Message> out;
  std::set<std::string> seen_calls;  // tool_use ids of earlier assistant messages
  for (size_t i = 0; i < arr->size(); ++i) {
    const Json& m = (*arr)[i];
    const std::string path = fmt::format("messages[{}]", i);
    if (!m.is_object()) bad(path, fmt::format("must be an object, not {}", m.type_name()), "messages");
    const std::string role = get_string(m, "role", path).value_or("user");
    chat::Message msg;
    if (role == "user") msg.role = chat::Role::User;
    else if (role == "assistant") msg.role = chat::Role::Assistant;
    // Claude Code sends system reminders as messages of role system; they
    // join the system region like the top-level system field (§2.4).
    else if (role == "system") msg.role = chat::Role::System;
    else bad(path + ".role", fmt::format("has unknown role '{}' (expected user, assistant or system)", role), "messages");
    const Json* content = field(m, "content");
    if (content && content->is_string()) {
      msg.content = content->get<std::string>();
    } else if (content) {
      if (!content->is_array()) bad(path + ".content", fmt::format("must be a string or an array of blocks, not {}", content->type_name()), "messages");
      for (size_t j = 0; j < content->size(); ++j) {
        const Json& b = (*content)[j];
        const std::string bp = fmt::format("{}.content[{}]", path, j);
        if (!b.is_object()) bad(bp, fmt::format("must be an object, not {}", b.type_name()), "messages");
        const std::string type = get_string(b, "type", bp).value_or("");
        if (type == "text") {
          msg.content += get_string(b, "text", bp).value_or("");
        } else if (type == "thinking") {
          // Earlier reasoning, replayed by the client (the signature is ours and needs no check).
          const std::string r = get_string(b, "thinking", bp).value_or("");
          if (msg.role == chat::Role::Assistant) msg.reasoning = msg.reasoning.value_or("") + r;
        } else if (type == "tool_use") {
          if (msg.role != chat::Role::Assistant) bad(bp, "is a tool_use block, which only assistant messages can hold", "messages");
          chat::ToolCall tc;
          tc.id = get_string(b, "id", bp).value_or("");
          const auto name = get_string(b, "name", bp);
          if (!name || name->empty()) bad(bp + ".name", "is missing", "messages");
          tc.name = *name;
          const Json* input = field(b, "input");
          tc.arguments = input ? dump(*input) : "{}";
          if (!tc.id.empty()) seen_calls.insert(tc.id);
          msg.tool_calls.push_back(std::move(tc));
        } else if (type == "tool_result") {
          if (msg.role != chat::Role::User) bad(bp, "is a tool_result block, which only user messages can hold", "messages");
          const auto id = get_string(b, "tool_use_id", bp);
          if (!id) bad(bp + ".tool_use_id", "is missing", "messages");
          if (!seen_calls.count(*id))
            throw ApiError(400,
                           fmt::format("Anthropic continuation state is not available for tool_use_id {}; retry by "
                                       "replaying the full messages history",
                                       *id),
                           "messages");
          msg.content += wrap_tool_result(tool_result_text(b, bp));
        }
        // image, document, redacted_thinking, server tool blocks: not rendered (§3.6).
      }
    }
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
    if (!t.is_object()) bad(path, fmt::format("must be an object, not {}", t.type_name()), "tools");
    const auto name = get_string(t, "name", path);
    if (!name || name->empty()) bad(path + ".name", "is missing", "tools");
    chat::ToolDef td;
    td.name = *name;
    td.description = get_string(t, "description", path).value_or("");
    if (const Json* s = get_object(t, "input_schema", path)) td.parameters = *s;
    // The schema line is the tool object as sent (§2.5), less the caching hint,
    // which says nothing about the tool.
    Json line = t;
    line.erase("cache_control");
    td.raw_json = dump(line);
    out.push_back(std::move(td));
  }
  return out;
}

// Only {"type":"none"} changes anything: any/tool are treated as auto (§3.9).
bool read_tool_choice(const Json& body) {
  const Json* v = get_object(body, "tool_choice", "");
  if (!v) return true;
  const auto type = get_string(*v, "type", "tool_choice");
  if (!type || (*type != "auto" && *type != "any" && *type != "tool" && *type != "none"))
    bad("tool_choice.type", "must be one of auto, any, tool, none", "tool_choice");
  return *type != "none";
}

// thinking {"type":"enabled"|"disabled"|"adaptive", budget_tokens} (the budget
// is not enforced: ds4 thinks until it closes </think>), reasoning_effort, and
// output_config.effort (§3.6).
void read_anthropic_thinking(const Json& body, Turn& t) {
  read_thinking(body, t);
  const Json* oc = get_object(body, "output_config", "");
  if (!oc) return;
  const auto effort = get_string(*oc, "effort", "output_config");
  if (!effort) return;
  if (*effort == "none") t.think = chat::ThinkMode::None;
  else if (*effort == "max") {
    if (t.think != chat::ThinkMode::None) t.think = chat::ThinkMode::Max;
  } else if (*effort != "xhigh" && *effort != "high" && *effort != "medium" && *effort != "low" && *effort != "minimal")
    bad("output_config.effort", "must be one of max, xhigh, high, medium, low, minimal, none", "output_config");
}

}  // namespace

AnthropicRequest read_anthropic_request(const Json& body, const std::string& default_model, bool for_count) {
  AnthropicRequest r;
  r.model = model_of(body, default_model);
  r.turn.id_style = chat::IdStyle::Anthropic;
  std::vector<chat::Message> msgs = read_messages(body);
  const std::string system = read_system(body);
  if (!system.empty()) {
    chat::Message sys;
    sys.role = chat::Role::System;
    sys.content = system;
    r.turn.messages.push_back(std::move(sys));
  }
  for (auto& m : msgs) r.turn.messages.push_back(std::move(m));
  r.turn.tools = read_tools(body);
  r.turn.tools_active = read_tool_choice(body);
  read_anthropic_thinking(body, r.turn);
  if (for_count) return r;
  constexpr int64_t kBig = int64_t{1} << 53;
  const auto max_tokens = get_int(body, "max_tokens", "", 1, kBig);
  if (!max_tokens) throw ApiError(400, "invalid JSON request: field 'max_tokens' is required", "max_tokens");
  r.turn.max_tokens = *max_tokens;
  read_sampling(body, r.turn);
  read_stop(body, "stop_sequences", r.turn);
  r.stream = get_bool(body, "stream", "").value_or(false);
  return r;
}

Json anthropic_error_body(const ApiError& e) {
  std::string type;
  switch (e.status) {
    case 400: type = "invalid_request_error"; break;
    case 401: type = "authentication_error"; break;
    case 403: type = "permission_error"; break;
    case 404: type = "not_found_error"; break;
    case 413: type = "request_too_large"; break;
    case 429: type = "rate_limit_error"; break;
    case 503: type = "overloaded_error"; break;
    default: type = e.status >= 500 ? "api_error" : "invalid_request_error";
  }
  Json err = {{"type", type}, {"message", e.what()}};
  for (auto it = e.extra.begin(); it != e.extra.end(); ++it) err[it.key()] = it.value();
  return {{"type", "error"}, {"error", err}};
}

Json anthropic_usage(const TurnUsage& u) {
  return {{"input_tokens", u.prompt_tokens - u.cached_tokens},
          {"cache_creation_input_tokens", 0},
          {"cache_read_input_tokens", u.cached_tokens},
          {"output_tokens", u.completion_tokens}};
}

std::string anthropic_stop_reason(const TurnEvent& done) {
  switch (done.finish) {
    case TurnFinish::tool_calls: return "tool_use";
    case TurnFinish::length: return "max_tokens";
    default: return done.stop_sequence.empty() ? "end_turn" : "stop_sequence";
  }
}

}  // namespace ds4::server
