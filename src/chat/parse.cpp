// Final parse of a generation (reference-behavior.md §4.2), the authority on
// what a turn's reasoning, content and tool calls are.
#include <cctype>

#include "chat/chat.h"
#include "chat/dsml_syntax.h"
#include "chat/json_raw.h"

namespace ds4::chat {

namespace detail {

std::string unescape_entities(std::string_view s) {
  static constexpr std::pair<std::string_view, char> kEntities[] = {
      {"&amp;", '&'}, {"&lt;", '<'}, {"&gt;", '>'}, {"&quot;", '"'}, {"&apos;", '\''}};
  std::string out;
  for (size_t i = 0; i < s.size();) {
    bool hit = false;
    if (s[i] == '&') {
      for (auto [ent, c] : kEntities) {
        if (s.substr(i, ent.size()) == ent) {
          out += c;
          i += ent.size();
          hit = true;
          break;
        }
      }
    }
    if (!hit) out += s[i++];
  }
  return out;
}

std::optional<std::string> tag_attr(std::string_view tag, std::string_view name) {
  std::string pat = std::string(name) + "=\"";
  size_t p = tag.find(pat);
  if (p == std::string_view::npos) return std::nullopt;
  p += pat.size();
  size_t q = tag.find('"', p);
  if (q == std::string_view::npos) return std::nullopt;
  return unescape_entities(tag.substr(p, q - p));
}

}  // namespace detail

namespace {

using detail::DsmlSyntax;

bool is_space(char c) { return std::isspace(static_cast<unsigned char>(c)) != 0; }

size_t skip_ws(std::string_view s, size_t p) {
  while (p < s.size() && is_space(s[p])) ++p;
  return p;
}

bool starts(std::string_view s, size_t p, std::string_view w) { return s.substr(p, w.size()) == w; }

// One "k": v member in ds4's argument form.
void add_arg(std::string& args, std::string_view name, std::string_view value, bool is_string) {
  if (!args.empty()) args += ", ";
  args += detail::quote(name);
  args += ": ";
  if (is_string) {
    args += detail::quote(value);
  } else {
    std::string min = detail::minify_value(value.empty() ? std::string_view("null") : value);
    args += min.empty() ? "null" : min;
  }
}

void split_reasoning(std::string_view text, ParsedMessage& out) {
  std::string_view body = text;
  if (body.substr(0, kThinkOpen.size()) == kThinkOpen) body.remove_prefix(kThinkOpen.size());
  size_t end = body.find(kThinkClose);
  if (end == std::string_view::npos) {
    out.reasoning.reset();
    out.content = std::string(text);
  } else {
    out.reasoning = std::string(body.substr(0, end));
    out.content = std::string(body.substr(end + kThinkClose.size()));
  }
}

// Parses one parameter element at p (which starts with param_start) into args.
// Loose nesting (no string attribute, child parameters) becomes a JSON object.
bool parse_param(std::string_view s, size_t& p, const DsmlSyntax& syn, std::string& args, bool allow_nested) {
  size_t tag_end = s.find('>', p);
  if (tag_end == std::string_view::npos) return false;
  std::string_view tag = s.substr(p, tag_end - p + 1);
  auto name = detail::tag_attr(tag, "name");
  auto is_string = detail::tag_attr(tag, "string");
  if (!name) return false;
  size_t value_start = tag_end + 1;
  if (allow_nested && !is_string && starts(s, skip_ws(s, value_start), syn.param_start)) {
    std::string members;
    size_t q = value_start;
    for (;;) {
      q = skip_ws(s, q);
      if (!starts(s, q, syn.param_start)) break;
      if (!parse_param(s, q, syn, members, false)) return false;
    }
    add_arg(args, *name, "{" + members + "}", false);
    q = skip_ws(s, q);
    if (starts(s, q, syn.param_end)) q += syn.param_end.size();
    p = q;
    return true;
  }
  size_t value_end = s.find(syn.param_end, value_start);
  if (value_end == std::string_view::npos) return false;
  std::string_view raw = s.substr(value_start, value_end - value_start);
  bool str = !is_string || *is_string == "true";
  add_arg(args, *name, str ? detail::unescape_entities(raw) : std::string(raw), str);
  p = value_end + syn.param_end.size();
  return true;
}

}  // namespace

ParsedMessage parse_completion(std::string_view text, bool thinking) {
  ParsedMessage out;
  size_t search_from = 0;
  if (thinking) {
    // DSML inside the reasoning is not executable: look after the last </think>.
    size_t last = text.rfind(kThinkClose);
    if (last == std::string_view::npos) {
      split_reasoning(text, out);
      return out;
    }
    search_from = last + kThinkClose.size();
  }
  std::string_view tail = text.substr(search_from);
  size_t start = std::string_view::npos;
  int style = 0;
  // Preference order of ds4: each spelling with its "\n\n" separator first.
  for (int st : {detail::kStyleDsml, detail::kStyleShort, detail::kStylePlain}) {
    const auto& syn = detail::kSyntaxes[static_cast<size_t>(st)];
    size_t hit = tail.find("\n\n" + std::string(syn.calls_start));
    if (hit == std::string_view::npos) hit = tail.find(syn.calls_start);
    if (hit != std::string_view::npos) {
      start = search_from + hit;
      style = st;
      break;
    }
  }
  if (start == std::string_view::npos) {
    split_reasoning(text, out);
    return out;
  }
  const DsmlSyntax& syn = detail::kSyntaxes[static_cast<size_t>(style)];
  size_t content_end = start;
  while (content_end > 0 && is_space(text[content_end - 1])) --content_end;

  auto fail = [&]() {
    ParsedMessage bad;
    bad.ok = false;
    bad.content = std::string(text);
    return bad;
  };
  size_t p = text.find(syn.calls_start, start) + syn.calls_start.size();
  for (;;) {
    p = skip_ws(text, p);
    if (starts(text, p, syn.calls_end)) {
      size_t block_end = p + syn.calls_end.size();
      out.raw_dsml = std::string(text.substr(start, block_end - start));
      split_reasoning(text.substr(0, content_end), out);
      return out;
    }
    if (!starts(text, p, syn.invoke_start)) return fail();
    size_t tag_end = text.find('>', p);
    if (tag_end == std::string_view::npos) return fail();
    auto name = detail::tag_attr(text.substr(p, tag_end - p + 1), "name");
    if (!name) return fail();
    p = tag_end + 1;
    std::string args;
    for (;;) {
      p = skip_ws(text, p);
      if (starts(text, p, syn.invoke_end)) {
        p += syn.invoke_end.size();
        break;
      }
      if (!starts(text, p, syn.param_start)) return fail();
      if (!parse_param(text, p, syn, args, true)) return fail();
    }
    out.calls.push_back({"", *name, "{" + args + "}"});
  }
}

std::string compact_arguments(std::string_view arguments) {
  auto members = detail::object_members(arguments);
  if (!members) return "{}";
  std::string out = "{";
  for (size_t i = 0; i < members->size(); ++i) {
    const auto& m = (*members)[i];
    if (i) out += ',';
    out += detail::quote(m.key);
    out += ':';
    out += m.is_string ? detail::quote(m.str) : m.raw;
  }
  return out + "}";
}

}  // namespace ds4::chat
