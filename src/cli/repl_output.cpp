// Output helpers shared by one-shot `ds4 run` and the REPL.
#include <unistd.h>

#include <cstdio>

#include "cli/repl.h"
#include "util/error.h"

namespace ds4::cli {

std::atomic<bool> g_interrupt{false};

TextPrinter::TextPrinter(bool tty) : tty_(tty) {}

void TextPrinter::print(std::string_view text, bool reasoning) {
  if (text.empty()) return;
  if (reasoning != in_reasoning_ || !any_) {
    if (!reasoning && in_reasoning_) {
      if (tty_) std::fputs("\x1b[0m", stdout);
      // Reasoning and answer on separate lines even without colour.
      if (!at_line_start_) std::fputc('\n', stdout);
      std::fputc('\n', stdout);
    }
    if (reasoning && tty_) std::fputs("\x1b[90m", stdout);
    in_reasoning_ = reasoning;
  }
  any_ = true;
  std::fwrite(text.data(), 1, text.size(), stdout);
  at_line_start_ = text.back() == '\n';
  std::fflush(stdout);
}

void TextPrinter::finish() {
  if (in_reasoning_ && tty_) std::fputs("\x1b[0m", stdout);
  if (!at_line_start_) std::fputc('\n', stdout);
  std::fflush(stdout);
  in_reasoning_ = any_ = false;
  at_line_start_ = true;
}

engine::GenerateOptions generate_options(const RunOptions& o) {
  engine::GenerateOptions g;
  g.sampling.temperature = static_cast<float>(o.temp);
  g.sampling.top_p = static_cast<float>(o.top_p);
  g.sampling.min_p = static_cast<float>(o.min_p);
  g.sampling.seed = o.seed;
  // While thinking ds4 samples with the defaults whatever the knobs say; the
  // seed still makes the run reproducible.
  g.thinking_sampling = engine::SamplingParams{};
  g.thinking_sampling.seed = o.seed;
  g.max_tokens = o.tokens;
  g.ctx_size = o.ctx;
  g.thinking = o.thinking != engine::Thinking::none;
  return g;
}

void print_timing(const engine::GenerateResult& r) {
  const double pre = r.prefill_seconds > 0 ? static_cast<double>(r.prompt_tokens) / r.prefill_seconds : 0;
  const double gen = r.gen_seconds > 0 ? static_cast<double>(r.tokens.size()) / r.gen_seconds : 0;
  const bool tty = isatty(fileno(stderr));
  std::fprintf(stderr, "%sds4: prefill: %.2f t/s, generation: %.2f t/s (%zu tokens)%s\n", tty ? "\x1b[36m" : "", pre,
               gen, r.tokens.size(), tty ? "\x1b[0m" : "");
}

void print_stop(const engine::GenerateResult& r, int64_t max_tokens) {
  // An end of text needs no word; any other stop does, or a reply cut at the
  // limit looks like a model that stopped mid-sentence on its own.
  if (r.stop == engine::StopReason::max_tokens)
    std::fprintf(stderr, "ds4: [stopped: %lld-token limit] (-n/--tokens sets it)\n", static_cast<long long>(max_tokens));
  else if (r.stop == engine::StopReason::context_full)
    std::fprintf(stderr, "ds4: %s\n", r.message.c_str());
}

engine::Thinking resolve_thinking(engine::Thinking requested, int64_t ctx, std::string_view what) {
  if (requested == engine::Thinking::max && ctx < engine::kThinkMaxMinContext) {
    std::fprintf(stderr, "ds4: warning: %.*s needs --ctx >= %lld; ctx=%lld uses normal thinking instead\n",
                 static_cast<int>(what.size()), what.data(), static_cast<long long>(engine::kThinkMaxMinContext),
                 static_cast<long long>(ctx));
    return engine::Thinking::high;
  }
  return requested;
}

}  // namespace ds4::cli
