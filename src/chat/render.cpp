// DS4 prompt rendering, reference-behavior.md §2.2-§2.8. Where DeepSeek's
// official encoding_dsv4.py differs, we follow antirez/ds4 (what our users'
// KV caches and agents were built against); each such place says so.
#include "chat/json_raw.h"
#include "chat/segments.h"

namespace ds4::chat {

using detail::Builder;

ThinkMode effective_think_mode(ThinkMode requested, int64_t ctx_size) {
  if (requested == ThinkMode::Max && ctx_size < kThinkMaxMinContext) return ThinkMode::High;
  return requested;
}

std::string_view think_mode_name(ThinkMode m) {
  switch (m) {
    case ThinkMode::None: return "none";
    case ThinkMode::High: return "high";
    case ThinkMode::Max: return "max";
  }
  return "high";
}

std::string_view think_max_prefix() {
  return "Reasoning Effort: Absolute maximum with no shortcuts permitted.\n"
         "You MUST be very thorough in your thinking and comprehensively decompose the problem to resolve the "
         "root cause, rigorously stress-testing your logic against all potential paths, edge cases, and "
         "adversarial scenarios.\n"
         "Explicitly write out your entire deliberation process, documenting every intermediate step, "
         "considered alternative, and rejected hypothesis to ensure absolutely no assumption is left "
         "unchecked.\n\n";
}

namespace {

// ds4's wording (ds4_server.c append_tools_prompt_text). The official template
// says "the user's question", lacks the entity-escaping sentence and the final
// "Use the exact parameter names" sentence, and ends in "\n".
constexpr std::string_view kToolsHead =
    "## Tools\n\n"
    "You have access to a set of tools to help answer the user question. "
    "You can invoke tools by writing a \"<｜DSML｜tool_calls>\" block like the following:\n\n"
    "<｜DSML｜tool_calls>\n"
    "<｜DSML｜invoke name=\"$TOOL_NAME\">\n"
    "<｜DSML｜parameter name=\"$PARAMETER_NAME\" string=\"true|false\">$PARAMETER_VALUE</｜DSML｜parameter>\n"
    "...\n"
    "</｜DSML｜invoke>\n"
    "<｜DSML｜invoke name=\"$TOOL_NAME2\">\n"
    "...\n"
    "</｜DSML｜invoke>\n"
    "</｜DSML｜tool_calls>\n\n"
    "String parameters should be specified as raw text and set `string=\"true\"`. "
    "Preserve characters such as `>`, `&`, and `&&` exactly; never replace normal string characters with XML "
    "or HTML entity escapes. "
    "Only if a string value itself contains the exact closing parameter tag `</｜DSML｜parameter>`, write that "
    "tag as `&lt;/｜DSML｜parameter>` inside the value. "
    "For all other types (numbers, booleans, arrays, objects), pass the value in JSON format and set "
    "`string=\"false\"`.\n\n"
    "If thinking_mode is enabled (triggered by <think>), you MUST output your complete reasoning inside "
    "<think>...</think> BEFORE any tool calls or final response.\n\n"
    "Otherwise, output directly after </think> with tool calls or final response.\n\n"
    "### Available Tool Schemas\n\n";
constexpr std::string_view kToolsTail =
    "\n\nYou MUST strictly follow the above defined tool name and parameter schemas to invoke tool calls. "
    "Use the exact parameter names from the schemas.";

std::string schema_line(const ToolDef& t) {
  if (!t.raw_json.empty()) return t.raw_json;
  Json j = Json::object();
  j["name"] = t.name;
  if (!t.description.empty()) j["description"] = t.description;
  j["parameters"] = t.parameters;
  return j.dump();
}

// The template is ours, so its spellings are tokens; the schemas are client
// data, so they stay text.
void tools_block(Builder& b, const std::vector<ToolDef>& tools) {
  b.trusted(kToolsHead);
  for (size_t i = 0; i < tools.size(); ++i) {
    if (i) b.text("\n");
    b.text(schema_line(tools[i]));
  }
  b.trusted(kToolsTail);
}

void dsml_param(Builder& b, std::string_view key, bool is_string, std::string_view value) {
  b.text("<");
  b.special(kDsml);
  b.text("parameter name=\"" + detail::escape_attr(key) + "\" string=\"" + (is_string ? "true" : "false") + "\">");
  if (is_string) {
    b.text(detail::escape_param_text(value));
  } else {
    // Inside JSON the closing tag's '<' can be written as a JSON escape.
    std::string v(value);
    std::string out;
    constexpr std::string_view end = "</｜DSML｜parameter>";
    for (size_t i = 0; i < v.size(); ++i) {
      if (std::string_view(v).substr(i, end.size()) == end) {
        out += "\\u003c";
      } else {
        out += v[i];
      }
    }
    b.text(out);
  }
  b.text("</");
  b.special(kDsml);
  b.text("parameter>\n");
}

// §2.6 canonical rendering. The official encoder serializes non-string values
// with json.dumps (", " and ": " separators) and escapes nothing; ds4 keeps the
// client's value text minified and protects the closing tag.
void dsml_block(Builder& b, const std::vector<ToolCall>& calls) {
  auto tag = [&b](std::string_view open, std::string_view rest) {
    b.text(open);
    b.special(kDsml);
    b.text(rest);
  };
  b.text("\n\n");
  tag("<", "tool_calls>\n");
  for (const auto& c : calls) {
    tag("<", "invoke name=\"" + detail::escape_attr(c.name) + "\">\n");
    if (auto members = detail::object_members(c.arguments)) {
      for (const auto& m : *members) dsml_param(b, m.key, m.is_string, m.is_string ? m.str : m.raw);
    } else {
      dsml_param(b, "arguments", true, c.arguments);
    }
    tag("</", "invoke>\n");
  }
  tag("</", "tool_calls>");
}

bool tool_context(const std::vector<Message>& msgs, const RenderOptions& opt) {
  if (!opt.tools.empty()) return true;
  for (const auto& m : msgs) {
    if (m.role == Role::Tool || (m.role == Role::Assistant && !m.tool_calls.empty())) return true;
  }
  return false;
}

void prologue(Builder& b, ThinkMode think) {
  b.special(kBos);
  if (think == ThinkMode::Max) b.text(think_max_prefix());
}

void assistant_prefix(Builder& b, ThinkMode think) {
  b.special(kAssistant);
  b.special(think == ThinkMode::None ? kThinkClose : kThinkOpen);
}

}  // namespace

std::string canonical_dsml(const std::vector<ToolCall>& calls) {
  Builder b;
  dsml_block(b, calls);
  return join(b.take());
}

Segments render_chat(const std::vector<Message>& msgs, const RenderOptions& opt) {
  const bool think = opt.think != ThinkMode::None;
  const bool tools_ctx = tool_context(msgs, opt);
  size_t last_user = SIZE_MAX;
  for (size_t i = 0; i < msgs.size(); ++i) {
    if (msgs[i].role == Role::User || msgs[i].role == Role::Tool) last_user = i;
  }

  Builder b;
  prologue(b, opt.think);
  // System region (§2.4 step 3): tools block first, then every system message
  // joined by "\n\n". The official encoder renders system messages in place
  // and puts the tools block after the system text.
  bool any_system = false;
  if (!opt.tools.empty()) {
    tools_block(b, opt.tools);
    any_system = true;
  }
  for (const auto& m : msgs) {
    if (m.role != Role::System) continue;
    if (any_system) b.text("\n\n");
    b.text(m.content);
    any_system = true;
  }

  bool pending_assistant = false;
  bool pending_tool = false;
  for (size_t i = 0; i < msgs.size(); ++i) {
    const Message& m = msgs[i];
    switch (m.role) {
      case Role::System: break;
      case Role::User:
        b.special(kUser);
        b.text(m.content);
        pending_assistant = true;
        pending_tool = false;
        break;
      case Role::Tool:
        // Consecutive results share one user turn with no separator; the
        // official encoder joins them with "\n\n" and sorts them by call order.
        if (!pending_tool) b.special(kUser);
        b.text("<tool_result>" + detail::escape_tool_result(m.content) + "</tool_result>");
        pending_assistant = true;
        pending_tool = true;
        break;
      case Role::Assistant:
        if (pending_assistant) {
          b.special(kAssistant);
          if (think && (tools_ctx || last_user == SIZE_MAX || i > last_user)) {
            b.special(kThinkOpen);
            b.text(m.reasoning.value_or(""));
          }
          b.special(kThinkClose);
        }
        b.text(m.content);
        if (!m.tool_calls.empty()) {
          if (!m.raw_dsml.empty()) {
            b.append(split_specials(m.raw_dsml));
          } else {
            dsml_block(b, m.tool_calls);
          }
        }
        b.special(kEos);
        pending_assistant = false;
        pending_tool = false;
        break;
    }
  }
  if (pending_assistant) assistant_prefix(b, opt.think);
  return b.take();
}

Segments render_single(std::string_view system, std::string_view user, ThinkMode think) {
  Builder b;
  prologue(b, think);
  b.text(system);
  b.special(kUser);
  b.text(user);
  assistant_prefix(b, think);
  return b.take();
}

Segments render_completion(std::string_view prompt, ThinkMode think) {
  return render_single(kDefaultSystem, prompt, think);
}

}  // namespace ds4::chat
