#include "server/responses_request.h"

#include <set>

#include <fmt/format.h>

#include "server/http_io.h"
#include "server/openai_common.h"

namespace ds4::server {

namespace {

[[noreturn]] void bad(const std::string& path, const std::string& what) {
  throw ApiError(400, fmt::format("invalid JSON request: field '{}' {}", path, what), "input");
}

// Text of a content list: a string, or parts of the text kinds (§3.10). Images
// and files are refused: ds4 reads text only, and dropping them silently would
// answer a different question.
std::string read_parts(const Json& item, std::string_view key, const std::string& path) {
  const Json* v = field(item, key);
  if (!v) return {};
  const std::string p = join_path(path, key);
  if (v->is_string()) return v->get<std::string>();
  if (!v->is_array()) bad(p, fmt::format("must be a string or an array of content parts, not {}", v->type_name()));
  std::string out;
  for (size_t i = 0; i < v->size(); ++i) {
    const Json& part = (*v)[i];
    const std::string pp = fmt::format("{}[{}]", p, i);
    if (!part.is_object()) bad(pp, fmt::format("must be an object, not {}", part.type_name()));
    const std::string type = get_string(part, "type", pp).value_or("");
    if (type != "input_text" && type != "output_text" && type != "text" && type != "summary_text" &&
        type != "reasoning_text")
      bad(pp + ".type", fmt::format("is '{}': ds4 reads text parts only (input_text, output_text, text)", type));
    const auto text = get_string(part, "text", pp);
    if (!text) bad(pp + ".text", "is missing");
    out += *text;
  }
  return out;
}

std::string join_texts(const Json& item, std::string_view key, const std::string& path) {
  const Json* v = get_array(item, key, path);
  std::string out;
  if (!v) return out;
  for (size_t i = 0; i < v->size(); ++i) {
    const Json& part = (*v)[i];
    const std::string pp = fmt::format("{}.{}[{}]", path, key, i);
    if (!part.is_object()) bad(pp, "must be an object");
    const auto t = get_string(part, "text", pp);
    if (!t) continue;
    if (!out.empty()) out += '\n';
    out += *t;
  }
  return out;
}

struct InputReader {
  std::vector<chat::Message> out;
  std::optional<std::string> pending_reasoning;
  std::set<std::string> call_ids;
  bool last_is_call_turn = false;  // out.back() is an assistant message that may take more calls

  void flush_reasoning() {
    if (!pending_reasoning) return;
    chat::Message m;
    m.role = chat::Role::Assistant;
    m.reasoning = std::move(pending_reasoning);
    pending_reasoning.reset();
    out.push_back(std::move(m));
    last_is_call_turn = false;
  }

  void message(const Json& it, const std::string& path) {
    const std::string role = get_string(it, "role", path).value_or("user");
    chat::Message m;
    if (role == "user") m.role = chat::Role::User;
    else if (role == "assistant") m.role = chat::Role::Assistant;
    else if (role == "system" || role == "developer") m.role = chat::Role::System;
    else bad(path + ".role", fmt::format("has unknown role '{}' (expected user, assistant, system or developer)", role));
    m.content = read_parts(it, "content", path);
    if (m.role == chat::Role::Assistant) {
      m.reasoning = std::move(pending_reasoning);
      pending_reasoning.reset();
      out.push_back(std::move(m));
      last_is_call_turn = true;
      return;
    }
    flush_reasoning();
    out.push_back(std::move(m));
    last_is_call_turn = false;
  }

  void call(const Json& it, const std::string& path, bool custom) {
    chat::ToolCall tc;
    const auto name = get_string(it, "name", path);
    if (!name || name->empty()) bad(path + ".name", "is missing");
    tc.name = get_string(it, "namespace", path).value_or("") + *name;
    tc.id = get_string(it, "call_id", path).value_or("");
    if (tc.id.empty()) tc.id = get_string(it, "id", path).value_or("");
    if (custom) {
      // Rendered as the one string parameter the tool's schema line names.
      tc.arguments = dump(Json{{std::string(kCustomInputParam), get_string(it, "input", path).value_or("")}});
    } else {
      tc.arguments = get_string(it, "arguments", path).value_or("{}");
    }
    call_ids.insert(tc.id);
    if (!(last_is_call_turn && !out.empty() && out.back().role == chat::Role::Assistant && !pending_reasoning)) {
      chat::Message m;
      m.role = chat::Role::Assistant;
      m.reasoning = std::move(pending_reasoning);
      pending_reasoning.reset();
      out.push_back(std::move(m));
      last_is_call_turn = true;
    }
    out.back().tool_calls.push_back(std::move(tc));
  }

  void output(const Json& it, const std::string& path) {
    flush_reasoning();
    std::string id = get_string(it, "call_id", path).value_or("");
    if (id.empty()) id = get_string(it, "id", path).value_or("");
    if (!call_ids.count(id))
      throw ApiError(400,
                     fmt::format("Responses continuation state is not available for call_id {}; retry by replaying "
                                 "the full input history",
                                 id),
                     "input");
    chat::Message m;
    m.role = chat::Role::Tool;
    m.tool_call_id = id;
    m.content = read_parts(it, "output", path);
    out.push_back(std::move(m));
    last_is_call_turn = false;
  }

  void item(const Json& it, size_t i) {
    const std::string path = fmt::format("input[{}]", i);
    if (!it.is_object()) bad(path, fmt::format("must be an object, not {}", it.type_name()));
    const std::string type = get_string(it, "type", path).value_or(field(it, "role") ? "message" : "");
    // Items a client replays from an earlier response are completed; an
    // incomplete one (a turn cut at max_output_tokens) is replayed as it stands.
    if (auto st = get_string(it, "status", path); st && *st != "completed" && *st != "incomplete")
      bad(path + ".status", fmt::format("is '{}': only completed items can be replayed", *st));
    if (type == "message") message(it, path);
    else if (type == "reasoning") {
      std::string text = join_texts(it, "summary", path);
      const std::string content = join_texts(it, "content", path);
      if (!content.empty()) text += (text.empty() ? "" : "\n") + content;
      const std::string blob = get_string(it, "encrypted_content", path).value_or("");
      if (text.empty() && blob.rfind(kReasoningBlobPrefix, 0) == 0) text = blob.substr(kReasoningBlobPrefix.size());
      pending_reasoning = pending_reasoning ? *pending_reasoning + "\n" + text : text;
    } else if (type == "function_call") call(it, path, false);
    else if (type == "custom_tool_call") call(it, path, true);
    else if (type == "function_call_output" || type == "custom_tool_call_output") output(it, path);
    else if (type == "compaction" || type == "context_compaction") return;  // client bookkeeping
    else bad(path + ".type", fmt::format("is '{}', which ds4 does not take (message, reasoning, function_call, "
                                         "function_call_output, custom_tool_call, custom_tool_call_output)",
                                         type));
  }
};

void read_tools(const Json& body, ResponsesRequest& r) {
  const Json* arr = get_array(body, "tools", "");
  if (!arr) return;
  auto add = [&](const Json& t, const std::string& path, const std::string& ns) {
    const std::string type = get_string(t, "type", path).value_or("function");
    const auto name = get_string(t, "name", path);
    if (type != "function" && type != "custom") return;  // hosted tools (web_search, ...) cannot run here
    if (!name || name->empty()) throw ApiError(400, fmt::format("invalid JSON request: field '{}.name' is missing", path), "tools");
    chat::ToolDef td;
    td.name = ns + *name;
    td.description = get_string(t, "description", path).value_or("");
    ResponsesTool rt{*name, ns, type == "custom"};
    if (type == "function" && ns.empty()) {
      if (const Json* p = get_object(t, "parameters", path)) td.parameters = *p;
      td.raw_json = dump(t);  // flat function tools are shown as sent (§3.10)
    } else {
      // A custom tool takes free text (Codex's apply_patch: a patch in its own
      // grammar). The model sees it as a function of one string parameter, with
      // the grammar in its description; namespaced functions get their prompt name.
      Json line = {{"name", td.name}};
      if (type == "custom") {
        std::string desc = td.description;
        if (const Json* f = get_object(t, "format", path)) {
          const auto def = get_string(*f, "definition", path + ".format");
          if (def) desc += fmt::format("\n\nThe input must follow this {} grammar:\n{}",
                                       get_string(*f, "syntax", path + ".format").value_or(""), *def);
        }
        line["description"] = desc;
        line["parameters"] = {{"type", "object"},
                              {"properties", {{std::string(kCustomInputParam), {{"type", "string"}}}}},
                              {"required", Json::array({std::string(kCustomInputParam)})}};
      } else {
        line["description"] = td.description;
        const Json* p = get_object(t, "parameters", path);
        line["parameters"] = p ? *p : Json::object();
      }
      td.parameters = line["parameters"];
      td.raw_json = dump(line);
    }
    r.tools[td.name] = rt;
    r.turn.tools.push_back(std::move(td));
  };
  for (size_t i = 0; i < arr->size(); ++i) {
    const Json& t = (*arr)[i];
    const std::string path = fmt::format("tools[{}]", i);
    if (!t.is_object()) throw ApiError(400, fmt::format("invalid JSON request: field '{}' must be an object", path), "tools");
    if (get_string(t, "type", path).value_or("") == "namespace") {
      const std::string ns = get_string(t, "name", path).value_or("");
      const Json* inner = get_array(t, "tools", path);
      if (!inner) continue;
      for (size_t j = 0; j < inner->size(); ++j) {
        const std::string ip = fmt::format("{}.tools[{}]", path, j);
        if (!(*inner)[j].is_object()) throw ApiError(400, fmt::format("invalid JSON request: field '{}' must be an object", ip), "tools");
        add((*inner)[j], ip, ns);
      }
      continue;
    }
    add(t, path, "");
  }
}

void read_reasoning(const Json& body, ResponsesRequest& r) {
  bool explicit_effort = false;
  Turn& t = r.turn;
  t.think = chat::ThinkMode::High;
  if (const Json* rs = get_object(body, "reasoning", "")) {
    r.reasoning = *rs;
    if (auto e = get_string(*rs, "effort", "reasoning")) {
      explicit_effort = true;
      if (*e == "max") t.think = chat::ThinkMode::Max;
      else if (*e == "none") t.think = chat::ThinkMode::None;
      else if (*e != "xhigh" && *e != "high" && *e != "medium" && *e != "low" && *e != "minimal")
        throw ApiError(400, "invalid JSON request: field 'reasoning.effort' must be one of max, xhigh, high, medium, low, minimal, none",
                       "reasoning");
    }
    if (auto s = get_string(*rs, "summary", "reasoning"))
      r.summaries = *s == "auto" || *s == "concise" || *s == "detailed";
  }
  if (!explicit_effort) {
    if (r.model == "deepseek-chat") t.think = chat::ThinkMode::None;
    if (r.model == "deepseek-reasoner") t.think = chat::ThinkMode::High;
  }
}

}  // namespace

ResponsesRequest read_responses_request(const Json& body, const std::string& default_model, ResponseStore* previous) {
  ResponsesRequest r;
  if (const Json* st = field(body, "store")) {
    if (!st->is_boolean()) throw ApiError(400, "invalid JSON request: field 'store' must be a boolean", "store");
    r.store = st->get<bool>();
  }
  Json earlier = Json::array();
  if (const Json* prev = field(body, "previous_response_id")) {
    if (!previous)
      throw ApiError(400, "previous_response_id is not supported; replay full input instead", "previous_response_id");
    if (!prev->is_string())
      throw ApiError(400, "invalid JSON request: field 'previous_response_id' must be a string", "previous_response_id");
    r.previous_id = prev->get<std::string>();
    auto items = previous->get(r.previous_id);
    if (!items)
      throw ApiError(400,
                     fmt::format("previous response '{}' not found: ds4 keeps recent responses in memory only (not "
                                 "those made with store=false, nor across a restart); replay full input instead",
                                 r.previous_id),
                     "previous_response_id");
    earlier = std::move(*items);
  }
  if (field(body, "conversation"))
    throw ApiError(400, "conversation is not supported; replay full input instead", "conversation");
  if (const Json* text = get_object(body, "text", ""))
    if (const Json* f = get_object(*text, "format", "text")) {
      const auto type = get_string(*f, "type", "text.format").value_or("text");
      if (type != "text")
        throw ApiError(400,
                       fmt::format("text.format type '{}' is not supported: ds4 has no constrained decoding yet, and "
                                   "unconstrained text would not be guaranteed to match",
                                   type),
                       "text");
    }
  r.model = model_of(body, default_model);
  r.turn.id_style = chat::IdStyle::OpenAI;
  r.instructions = get_string(body, "instructions", "").value_or("");
  if (!r.instructions.empty()) {
    chat::Message sys;
    sys.role = chat::Role::System;
    sys.content = r.instructions;
    r.turn.messages.push_back(std::move(sys));
  }
  const Json* input = field(body, "input");
  if (!input) throw ApiError(400, "missing input", "input");
  if (input->is_string() && earlier.empty()) {
    chat::Message m;
    m.content = input->get<std::string>();
    r.turn.messages.push_back(std::move(m));
    r.items.push_back({{"type", "message"}, {"role", "user"}, {"content", *input}});
  } else if (input->is_array() || input->is_string()) {
    if (input->is_array() && input->empty())
      throw ApiError(400, "invalid JSON request: field 'input' must not be empty", "input");
    // A continued response's items first (they were read once already, when
    // that request came), then this input's, with its own indices in errors.
    InputReader in;
    for (size_t i = 0; i < earlier.size(); ++i) in.item(earlier[i], i);
    r.items = std::move(earlier);
    const Json mine = input->is_string() ? Json::array({{{"type", "message"}, {"role", "user"}, {"content", *input}}})
                                         : *input;
    for (size_t i = 0; i < mine.size(); ++i) in.item(mine[i], i);
    for (const Json& it : mine) r.items.push_back(it);
    in.flush_reasoning();
    for (auto& m : in.out) r.turn.messages.push_back(std::move(m));
  } else {
    throw ApiError(400, fmt::format("invalid JSON request: field 'input' must be a string or an array of items, not {}", input->type_name()),
                   "input");
  }
  read_tools(body, r);
  if (const Json* tc = field(body, "tool_choice")) {
    if (tc->is_object()) throw ApiError(400, "forced tool_choice not supported", "tool_choice");
    if (!tc->is_string()) throw ApiError(400, "invalid JSON request: field 'tool_choice' must be a string", "tool_choice");
    const std::string c = tc->get<std::string>();
    if (c != "auto" && c != "none") throw ApiError(400, fmt::format("tool_choice={} not supported", c), "tool_choice");
    r.turn.tools_active = c != "none";
  }
  read_reasoning(body, r);
  read_steering(body, r.turn);
  constexpr int64_t kBig = int64_t{1} << 53;
  if (auto v = get_int(body, "max_tokens", "", -kBig, kBig)) r.turn.max_tokens = *v;
  if (auto v = get_int(body, "max_output_tokens", "", -kBig, kBig)) r.turn.max_tokens = *v;
  if (auto v = get_number(body, "temperature", "")) {
    if (*v < 0 || *v > 2) throw ApiError(400, "invalid JSON request: field 'temperature' must be in [0, 2]", "temperature");
    r.turn.sampling.temperature = static_cast<float>(*v);
  }
  if (auto v = get_number(body, "top_p", "")) {
    if (*v < 0 || *v > 1) throw ApiError(400, "invalid JSON request: field 'top_p' must be in [0, 1]", "top_p");
    r.turn.sampling.top_p = static_cast<float>(*v);
  }
  r.stream = get_bool(body, "stream", "").value_or(false);
  if (const Json* inc = get_array(body, "include", ""))
    for (const auto& v : *inc)
      if (v.is_string() && v.get<std::string>() == "reasoning.encrypted_content") r.encrypted_reasoning = true;
  return r;
}

}  // namespace ds4::server
