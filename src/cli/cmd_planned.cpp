// Subcommands that are part of the design but not built yet. They are listed in
// --help so the command surface is visible, and fail clearly when used.
#include <cstdio>
#include <cstdlib>

#include "cli/commands.h"

namespace ds4::cli {

void register_planned(CLI::App& app) {
  struct Planned {
    const char* name;
    const char* help;
  };
  static const Planned planned[] = {
      {"convert", "Convert a DeepSeek V4 safetensors checkpoint to GGUF (not implemented yet)"},
      {"synth", "Write a random-weight model of any shape (not implemented yet)"},
      {"logits", "Print float32 logits for a token sequence (not implemented yet)"},
      {"tokenize", "Print token ids for text (not implemented yet)"},
      {"detokenize", "Print text for token ids (not implemented yet)"},
      {"run", "Generate text: one-shot or interactive chat (not implemented yet)"},
      {"serve", "OpenAI/Anthropic-compatible HTTP server (not implemented yet)"},
      {"bench", "Prefill/decode benchmark over context sizes (not implemented yet)"},
  };
  for (const auto& p : planned) {
    CLI::App* sub = app.add_subcommand(p.name, p.help);
    sub->allow_extras();
    const char* name = p.name;
    sub->callback([name] {
      std::fprintf(stderr, "ds4: error: '%s' is not implemented yet\n", name);
      std::exit(2);
    });
  }
}

}  // namespace ds4::cli
