// Subcommands that are part of the design but not built yet. They are listed in
// --help so the command surface is visible, and fail clearly when used. A
// command implemented in its own cmd_*.cpp takes precedence over its entry here.
#include <cstdio>
#include <cstdlib>

#include "cli/commands.h"

namespace ds4::cli {
namespace {

struct Planned {
  const char* name;
  const char* help;
  int order;
};
constexpr Planned kPlanned[] = {
    {"run", "Generate text: one-shot or interactive chat (not implemented yet)", 10},
    {"serve", "OpenAI/Anthropic-compatible HTTP server (not implemented yet)", 20},
    {"convert", "Convert a DeepSeek V4 safetensors checkpoint to GGUF (not implemented yet)", 30},
    {"synth", "Write a random-weight model of any shape (not implemented yet)", 40},
    {"logits", "Print float32 logits for a token sequence (not implemented yet)", 50},
    {"tokenize", "Print token ids for text (not implemented yet)", 60},
    {"detokenize", "Print text for token ids (not implemented yet)", 70},
    {"bench", "Prefill/decode benchmark over context sizes (not implemented yet)", 80},
};

bool implemented_elsewhere(const std::string& name) {
  int n = 0;
  for (const auto& c : command_registry())
    if (c.name == name) ++n;
  return n > 1;  // ours plus a real one
}

struct RegisterPlanned {
  RegisterPlanned() {
    for (const auto& p : kPlanned) {
      const Planned* pp = &p;
      command_registry().push_back({p.name, p.order, [pp](CLI::App& app) {
                                      if (implemented_elsewhere(pp->name)) return;
                                      CLI::App* sub = app.add_subcommand(pp->name, pp->help);
                                      sub->allow_extras();
                                      sub->callback([pp] {
                                        std::fprintf(stderr, "ds4: error: '%s' is not implemented yet\n", pp->name);
                                        std::exit(2);
                                      });
                                    }});
    }
  }
} register_planned;

}  // namespace
}  // namespace ds4::cli
