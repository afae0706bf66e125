#include "engine/prompt.h"

namespace ds4::engine {

namespace {
constexpr std::string_view kBosText = "<｜begin▁of▁sentence｜>";
}

std::string_view thinking_name(Thinking t) {
  switch (t) {
    case Thinking::none: return "none";
    case Thinking::high: return "high";
    case Thinking::max: return "max";
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

std::vector<int32_t> prompt_head(const Engine& e, std::string_view system, Thinking t) {
  std::vector<int32_t> out{e.specials().bos};
  if (t == Thinking::max) e.tokenizer().encode_append(think_max_prefix(), out);
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
  std::vector<int32_t> out = prompt_head(e, system, t);
  const std::vector<int32_t> turn = user_turn(e, user, t);
  out.insert(out.end(), turn.begin(), turn.end());
  return out;
}

}  // namespace ds4::engine
