#pragma once
// Shared by `ds4 run` one-shot mode and the REPL: the run options, the text
// printer and the interactive loop.
#include <atomic>
#include <cstdint>
#include <string>
#include <string_view>

#include "cli/placement_flags.h"
#include "cli/steering_flags.h"
#include "engine/engine.h"
#include "engine/generate.h"
#include "engine/prompt.h"

namespace ds4::cli {

struct RunOptions {
  std::string model, prompt, prompt_file, system = "You are a helpful assistant", dump_logprobs, trace,
      backend = "cpu", numerics = "faithful";
  bool system_set = false;
  int64_t ctx = 32768, tokens = 50000;
  double temp = 1.0, top_p = 1.0, min_p = 0.05;
  uint64_t seed = 0;
  int logprobs_top_k = 20, threads = 0;
  bool nothink = false, think = false, think_max = false, dump_tokens = false;
  engine::Thinking thinking = engine::Thinking::high;  // resolved from the flags and ctx
  SteeringFlags steering;
  ExpertFlags experts;  // --cpu-moe, --gpu-layers-experts (CUDA)
};

// Streams generated text to stdout: reasoning dim grey on a terminal, tags
// hidden, a newline between reasoning and answer so they never run together.
class TextPrinter {
 public:
  explicit TextPrinter(bool tty);
  void print(std::string_view text, bool reasoning);
  // End of a turn: closes colour and ends the line.
  void finish();

 private:
  bool tty_;
  bool in_reasoning_ = false, any_ = false, at_line_start_ = true;
};

engine::GenerateOptions generate_options(const RunOptions& o);
// "ds4: prefill: X t/s, generation: Y t/s (N tokens)" on stderr.
void print_timing(const engine::GenerateResult& r);
// Why generation stopped, on stderr, when it was not the model's own end:
// "ds4: [stopped: N-token limit] ..." or the context-full message.
void print_stop(const engine::GenerateResult& r, int64_t max_tokens);
// The thinking mode the flags ask for, downgraded with a warning when the
// context is too small for Think Max. `what` names the flag or command.
engine::Thinking resolve_thinking(engine::Thinking requested, int64_t ctx, std::string_view what);

// Set by the SIGINT handler while a REPL is running.
extern std::atomic<bool> g_interrupt;

// The interactive loop; returns the process exit status.
int run_repl(const engine::Engine& e, RunOptions o);

}  // namespace ds4::cli
