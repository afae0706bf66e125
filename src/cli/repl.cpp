// The interactive chat of `ds4 run` without a prompt (reference-behavior §2.9,
// §6.4). The conversation is a token transcript; each turn feeds only the
// tokens the live session does not hold yet, so history is never re-prefilled
// unless the KV was invalidated (Think Max toggle, /ctx, interrupted prefill).
#include <editline/readline.h>
#include <signal.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <optional>
#include <sstream>

#include "cli/progress.h"
#include "cli/repl.h"
#include "util/error.h"

namespace ds4::cli {
namespace {

void on_sigint(int) { g_interrupt.store(true); }

void print_help() {
  std::printf(
      "Commands:\n"
      "  /help          Show this help.\n"
      "  /think         Think before answering (default).\n"
      "  /think-max     Think with maximum effort (needs --ctx >= %lld).\n"
      "  /nothink       Answer without thinking.\n"
      "  /ctx N         Set the context size to N tokens (the conversation is re-read).\n"
      "  /read FILE     Send the contents of FILE as the next message.\n"
      "  /quit, /exit   Leave (also Ctrl+D).\n"
      "  Ctrl+C         Stop generation and return to the prompt.\n",
      static_cast<long long>(engine::kThinkMaxMinContext));
  std::fflush(stdout);
}

// Line input: libedit on a terminal, plain getline otherwise (pipes, tests).
class LineReader {
 public:
  LineReader() : tty_(isatty(STDIN_FILENO)) {}
  // nullopt at end of input.
  std::optional<std::string> read(const char* prompt) {
    if (!tty_) {
      std::fputs(prompt, stdout);
      std::fflush(stdout);
      std::string line;
      if (!std::getline(std::cin, line)) return std::nullopt;
      std::fputs("\n", stdout);
      return line;
    }
    for (;;) {
      g_interrupt.store(false);
      char* raw = readline(prompt);
      if (!raw) {
        // Ctrl+C at the prompt only abandons the line being typed.
        if (g_interrupt.exchange(false)) {
          std::fputs("\n", stdout);
          continue;
        }
        return std::nullopt;
      }
      std::string line(raw);
      std::free(raw);
      if (!line.empty()) add_history(line.c_str());
      return line;
    }
  }

 private:
  bool tty_;
};

class Repl {
 public:
  Repl(const engine::Engine& e, RunOptions o) : e_(e), o_(std::move(o)), session_(e.new_session(o_.ctx)) {}

  int loop() {
    // Ctrl+C only sets a flag for the whole REPL: it stops a generation or
    // abandons the line being typed, never the process. No SA_RESTART, so a
    // blocked read returns and the flag is seen.
    struct sigaction sa {}, old {};
    sa.sa_handler = on_sigint;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, &old);
    const int rc = loop_lines();
    sigaction(SIGINT, &old, nullptr);
    return rc;
  }

 private:
  int loop_lines() {
    print_help();
    LineReader in;
    for (;;) {
      auto line = in.read("ds4> ");
      if (!line) break;
      if (!line->empty() && line->back() == '\r') line->pop_back();
      if (line->empty()) continue;
      if ((*line)[0] == '/') {
        if (!command(*line)) break;
        continue;
      }
      turn(*line);
    }
    return 0;
  }

  // Returns false to leave the REPL.
  bool command(const std::string& line) {
    std::istringstream ss(line);
    std::string cmd, arg;
    ss >> cmd;
    std::getline(ss >> std::ws, arg);
    if (cmd == "/quit" || cmd == "/exit") return false;
    if (cmd == "/help") {
      print_help();
    } else if (cmd == "/think") {
      o_.thinking = engine::Thinking::high;
      std::printf("Thinking mode: high.\n");
    } else if (cmd == "/nothink") {
      o_.thinking = engine::Thinking::none;
      std::printf("Thinking mode: none.\n");
    } else if (cmd == "/think-max") {
      o_.thinking = resolve_thinking(engine::Thinking::max, o_.ctx, "/think-max");
      if (o_.thinking == engine::Thinking::max)
        std::printf("Thinking mode: max.\n");
      else
        std::printf("Thinking mode: high (ctx below %lld).\n", static_cast<long long>(engine::kThinkMaxMinContext));
    } else if (cmd == "/ctx") {
      char* end = nullptr;
      const long long n = std::strtoll(arg.c_str(), &end, 10);
      if (arg.empty() || *end != '\0' || n <= 0) {
        std::fprintf(stderr, "ds4: /ctx needs a positive number of tokens\n");
      } else {
        o_.ctx = n;
        session_ = e_.new_session(o_.ctx);  // KV dropped; the transcript is re-read next turn
        std::printf("Context: %lld tokens.\n", n);
      }
    } else if (cmd == "/read") {
      std::ifstream f(arg, std::ios::binary);
      std::ostringstream text;
      if (arg.empty() || !f || !(text << f.rdbuf())) {
        std::fprintf(stderr, "ds4: /read: cannot read '%s'\n", arg.c_str());
      } else {
        turn(text.str());
      }
    } else {
      std::fprintf(stderr, "ds4: unknown command: %s\nds4: type /help for commands\n", cmd.c_str());
    }
    std::fflush(stdout);
    return true;
  }

  void turn(const std::string& text) {
    // The transcript this turn extends: head (BOS, Max prefix, system) + body.
    std::vector<int32_t> want = engine::prompt_head(e_, o_.system, o_.thinking);
    want.insert(want.end(), body_.begin(), body_.end());
    const size_t committed = want.size();
    const auto user = engine::user_turn(e_, text, o_.thinking);
    want.insert(want.end(), user.begin(), user.end());
    // Reuse the live KV when it holds a prefix of the transcript.
    const auto& have = session_->tokens();
    if (have.size() > want.size() || !std::equal(have.begin(), have.end(), want.begin()))
      session_ = e_.new_session(o_.ctx);
    const std::span<const int32_t> suffix(want.data() + session_->tokens().size(), want.size() - session_->tokens().size());

    // Shows that history is reused: only the new turn should be prefilled.
    std::fprintf(stderr, "ds4: turn: %zu new tokens to prefill, %zu reused from the live session\n", suffix.size(),
                 session_->tokens().size());
    engine::GenerateOptions g = generate_options(o_);
    TextPrinter printer(isatty(STDOUT_FILENO));
    PrefillProgress progress(isatty(STDERR_FILENO));
    g.on_text = [&](std::string_view t, bool reasoning) {
      progress.finish();
      printer.print(t, reasoning);
    };
    g.on_prefill = [&](int64_t done, int64_t total) { progress.update(done, total); };
    g.interrupt = &g_interrupt;
    g_interrupt.store(false);
    engine::GenerateResult r;
    try {
      r = engine::generate(e_, *session_, suffix, g);
    } catch (const Error& err) {
      progress.finish();
      std::fprintf(stderr, "ds4: %s\n", err.what());
      return;
    }
    progress.finish();
    printer.finish();
    if (r.stop == engine::StopReason::interrupted && r.tokens.empty()) {
      // Nothing to keep: the turn is dropped; the session no longer matches the
      // transcript, so the next turn starts a fresh one.
      std::fprintf(stderr, "ds4: interrupted\n");
      return;
    }
    if (r.stop == engine::StopReason::interrupted) std::fprintf(stderr, "ds4: interrupted\n");
    print_stop(r, o_.tokens);
    // The turn joins the transcript with its sampled tokens verbatim
    // (reasoning included) and a closing EOS.
    body_.insert(body_.end(), want.begin() + static_cast<std::ptrdiff_t>(committed), want.end());
    body_.insert(body_.end(), r.tokens.begin(), r.tokens.end());
    body_.push_back(e_.specials().eos);
    print_timing(r);
  }

  const engine::Engine& e_;
  RunOptions o_;
  std::unique_ptr<engine::Session> session_;
  std::vector<int32_t> body_;  // every turn so far, without the head
};

}  // namespace

int run_repl(const engine::Engine& e, RunOptions o) { return Repl(e, std::move(o)).loop(); }

}  // namespace ds4::cli
