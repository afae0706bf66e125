#include "engine/prompt.h"

namespace ds4::engine {

namespace {
constexpr std::string_view kBosText = "<｜begin▁of▁sentence｜>";
}

chat::ThinkMode to_chat(Thinking t) {
  switch (t) {
    case Thinking::none: return chat::ThinkMode::None;
    case Thinking::high: return chat::ThinkMode::High;
    case Thinking::max: return chat::ThinkMode::Max;
  }
  return chat::ThinkMode::High;
}

std::string_view thinking_name(Thinking t) { return chat::think_mode_name(to_chat(t)); }

std::vector<int32_t> encode_segments(const Engine& e, const chat::Segments& segments) {
  std::vector<int32_t> out;
  for (const auto& s : segments) {
    if (s.kind == chat::Segment::Kind::Special)
      out.push_back(e.tokenizer().special_id(s.text));
    else
      e.tokenizer().encode_append(s.text, out);
  }
  return out;
}

std::vector<int32_t> prompt_head(const Engine& e, std::string_view system, Thinking t) {
  std::vector<int32_t> out{e.specials().bos};
  if (t == Thinking::max) e.tokenizer().encode_append(chat::think_max_prefix(), out);
  if (!system.empty()) e.tokenizer().encode_append(system, out);
  return out;
}

std::vector<int32_t> user_turn(const Engine& e, std::string_view user, Thinking t) {
  const SpecialIds& s = e.specials();
  std::vector<int32_t> out{s.user};
  e.tokenizer().encode_append(user, out);
  out.push_back(s.assistant);
  out.push_back(t == Thinking::none ? s.think_close : s.think_open);
  return out;
}

bool is_prerendered(std::string_view prompt) { return prompt.starts_with(kBosText); }

std::vector<int32_t> single_prompt(const Engine& e, std::string_view system, std::string_view user, Thinking t) {
  if (is_prerendered(user)) return e.tokenizer().encode(user, /*parse_special=*/true);
  return encode_segments(e, chat::render_single(system, user, to_chat(t)));
}

}  // namespace ds4::engine
