// `ds4 run -m MODEL.gguf [-p TEXT | --prompt-file F] [flags]`: one-shot
// generation streamed to stdout, or the interactive REPL when no prompt is
// given (reference-behavior §6.1-6.5).
#include <unistd.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <memory>
#include <sstream>

#include "cli/commands.h"
#include "cli/engine_options.h"
#include "cli/read_file.h"
#include "cli/progress.h"
#include "cli/repl.h"
#include "cli/session_file.h"
#include "util/default_model.h"
#include "util/error.h"

namespace ds4::cli {
namespace {


void check_range(std::string_view flag, double v, double lo, double hi) {
  if (!std::isfinite(v) || v < lo || v > hi) fail("invalid value for {}: {} (must be in [{}, {}])", flag, v, lo, hi);
}

void validate(RunOptions& o, const CLI::App& sub) {
  if (o.ctx <= 0) fail("invalid value for --ctx: {} (must be > 0)", o.ctx);
  if (o.tokens <= 0) fail("invalid value for -n/--tokens: {} (must be > 0)", o.tokens);
  check_range("--temp", o.temp, 0, 100);
  check_range("--top-p", o.top_p, 0, 1);
  check_range("--min-p", o.min_p, 0, 1);
  if (sub.count("--seed") && o.seed == 0) fail("invalid value for --seed: 0 (must be > 0)");
  if (o.logprobs_top_k < 1 || o.logprobs_top_k > 128)
    fail("invalid value for --logprobs-top-k: {} (must be in [1, 128])", o.logprobs_top_k);
  if (o.threads < 0) fail("invalid value for --threads: {} (must be >= 0)", o.threads);
  if (!o.prompt.empty() && !o.prompt_file.empty()) fail("give either -p or --prompt-file, not both");
  if (o.nothink + o.think + o.think_max > 1) fail("--think, --think-max and --nothink exclude each other");
  if ((o.dump_tokens || !o.dump_logprobs.empty()) && o.prompt.empty() && o.prompt_file.empty())
    fail("--dump-tokens and --dump-logprobs need a prompt (-p or --prompt-file)");
  const engine::Thinking asked =
      o.nothink ? engine::Thinking::none : o.think_max ? engine::Thinking::max : engine::Thinking::high;
  o.thinking = resolve_thinking(asked, o.ctx, "--think-max");
}

// A token for --dump-logprobs: id, text and the authoritative raw bytes. Bytes
// that are not valid UTF-8 appear in `text` as the code point U+00XX.
nlohmann::json token_json(const tokenizer::Tokenizer& tok, int32_t id) {
  const std::string& b = tok.token_bytes(id);
  std::string text;
  nlohmann::json bytes = nlohmann::json::array();
  for (unsigned char c : b) bytes.push_back(c);
  for (size_t i = 0; i < b.size();) {
    const auto c = static_cast<unsigned char>(b[i]);
    size_t n = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
    bool ok = n > 0 && i + n <= b.size();
    for (size_t k = 1; ok && k < n; ++k) ok = (static_cast<unsigned char>(b[i + k]) & 0xC0) == 0x80;
    if (ok) {
      text.append(b, i, n);
      i += n;
    } else {
      text += static_cast<char>(0xC0 | (c >> 6));
      text += static_cast<char>(0x80 | (c & 0x3F));
      ++i;
    }
  }
  return {{"id", id}, {"text", text}, {"bytes", bytes}};
}

nlohmann::json logprob_step(const tokenizer::Tokenizer& tok, std::span<const float> logits, int32_t selected,
                            int64_t step, int k) {
  double mx = -INFINITY;
  for (float x : logits) mx = std::max(mx, static_cast<double>(x));
  double sum = 0;
  for (float x : logits) sum += std::exp(static_cast<double>(x) - mx);
  const double lse = mx + std::log(sum);
  std::vector<int32_t> ids(logits.size());
  for (size_t i = 0; i < ids.size(); ++i) ids[i] = static_cast<int32_t>(i);
  const size_t kk = std::min(ids.size(), static_cast<size_t>(k));
  // Ties go to the lower id, as in the sampler's argmax.
  std::partial_sort(ids.begin(), ids.begin() + static_cast<std::ptrdiff_t>(kk), ids.end(), [&](int32_t a, int32_t b) {
    const float la = logits[static_cast<size_t>(a)], lb = logits[static_cast<size_t>(b)];
    return la != lb ? la > lb : a < b;
  });
  nlohmann::json top = nlohmann::json::array();
  for (size_t i = 0; i < kk; ++i) {
    const float l = logits[static_cast<size_t>(ids[i])];
    top.push_back({{"token", token_json(tok, ids[i])}, {"logit", l}, {"logprob", static_cast<double>(l) - lse}});
  }
  return {{"step", step}, {"selected", token_json(tok, selected)}, {"top_logprobs", top}};
}

void dump_tokens(const engine::Engine& e, const std::string& text) {
  const auto ids = e.tokenizer().encode(text, /*parse_special=*/true);
  std::string line = "[";
  for (size_t i = 0; i < ids.size(); ++i) line += (i ? ", " : "") + std::to_string(ids[i]);
  std::printf("%s]\n", line.c_str());
  for (int32_t id : ids) std::printf("%6d  %s\n", id, e.tokenizer().token_text(id).c_str());
}

void note_random_weights(const engine::Engine& e, const std::string& path) {
  const gguf::Value* name = e.model().file->find("general.name");
  if (name && name->s.starts_with("synth-"))
    std::fprintf(stderr,
                 "ds4: note: %s has random weights (made by ds4 synth): its output is gibberish; "
                 "for a real model: ds4 pull q2-imatrix\n",
                 path.c_str());
}

int one_shot(const engine::Engine& e, const RunOptions& o, const SessionFileFlags& sf, const std::string& prompt) {
  const auto toks = engine::single_prompt(e, o.system, prompt, o.thinking);
  auto session = e.new_session(o.ctx);
  const size_t loaded = load_session_file(e, sf, toks, *session);
  engine::GenerateOptions g = generate_options(o);
  const bool dumping = !o.dump_logprobs.empty();
  // Open outputs before the (long) generation so a bad path fails at once.
  std::ofstream dump;
  if (dumping) {
    dump.open(o.dump_logprobs, std::ios::binary | std::ios::trunc);
    if (!dump) fail("--dump-logprobs {}: cannot open for writing", o.dump_logprobs);
  }
  std::FILE* trace = nullptr;
  if (!o.trace.empty() && !(trace = std::fopen(o.trace.c_str(), "w")))
    fail("--trace {}: cannot open for writing", o.trace);
  std::unique_ptr<std::FILE, int (*)(std::FILE*)> trace_guard(trace, trace ? &std::fclose : nullptr);
  if (trace) {
    std::setvbuf(trace, nullptr, _IONBF, 0);
    std::fprintf(trace, "prompt %zu tokens:", toks.size());
    for (int32_t t : toks) std::fprintf(trace, " %d", t);
    std::fprintf(trace, "\nthinking %s ctx %lld\n", std::string(engine::thinking_name(o.thinking)).c_str(),
                 static_cast<long long>(o.ctx));
  }

  nlohmann::json steps = nlohmann::json::array();
  TextPrinter printer(isatty(STDOUT_FILENO));
  PrefillProgress progress(isatty(STDERR_FILENO));
  if (dumping) {
    // A greedy continuation, also while thinking.
    g.sampling.temperature = 0;
    g.thinking_sampling.temperature = 0;
  } else {
    g.on_text = [&](std::string_view t, bool reasoning) { printer.print(t, reasoning); };
  }
  g.on_prefill = [&](int64_t done, int64_t total) { progress.update(done, total); };
  g.on_token = [&](std::span<const float> logits, int32_t tok) {
    progress.finish();
    if (dumping)
      steps.push_back(logprob_step(e.tokenizer(), logits, tok, static_cast<int64_t>(steps.size()), o.logprobs_top_k));
    if (trace) {
      const std::string bytes = e.tokenizer().token_bytes(tok);
      std::fprintf(trace, "token %d %s\n", tok, nlohmann::json(bytes).dump(-1, ' ', false,
                                                                          nlohmann::json::error_handler_t::replace).c_str());
    }
  };
  const engine::GenerateResult r = engine::generate(e, *session, std::span(toks).subspan(loaded), g);
  progress.finish();
  save_session_file(e, sf, *session);
  if (!dumping) printer.finish();
  if (trace) std::fprintf(trace, "stop %s\n", std::string(engine::stop_reason_name(r.stop)).c_str());
  if (dumping) {
    const nlohmann::json doc = {{"source", "ds4"},       {"prompt_tokens", toks.size()}, {"ctx", o.ctx},
                                {"top_k", o.logprobs_top_k}, {"steps", steps}};
    dump << doc.dump() << "\n";
    if (!dump.flush()) fail("--dump-logprobs {}: write failed", o.dump_logprobs);
  }
  print_stop(r, o.tokens);
  print_timing(r);
  return 0;
}

void run(RunOptions& o, const CLI::App& sub, const SessionFileFlags& sf) {
  validate(o, sub);
  o.model = resolve_model_path(o.model);
  if (sf.any() && o.prompt.empty() && o.prompt_file.empty())
    fail("--save-session and --load-session need a prompt (-p or --prompt-file)");
  check_session_file_flags(sf);
  std::string prompt = o.prompt;
  if (!o.prompt_file.empty()) prompt = read_file(o.prompt_file, "--prompt-file");
  engine::Engine e(
      engine_options(o.model, o.backend, o.threads, o.numerics, &o.steering, device_expert_layers(o.experts)));
  if (o.dump_tokens) return dump_tokens(e, prompt);
  note_random_weights(e, o.model);
  const bool have_prompt = !o.prompt.empty() || !o.prompt_file.empty();
  const int rc = have_prompt ? one_shot(e, o, sf, prompt) : run_repl(e, o);
  std::fflush(stdout);
  if (rc != 0) std::exit(rc);
}

Registration reg("run", 10, [](CLI::App& app) {
  auto o = std::make_shared<RunOptions>();
  CLI::App* sub = app.add_subcommand("run", "Generate text: one-shot with -p, otherwise an interactive chat");
  sub->add_option("-m,--model", o->model, "Model .gguf (default: the one `ds4 pull` fetched last)");
  sub->add_option("-p,--prompt", o->prompt, "Prompt text (one-shot mode)");
  sub->add_option("--prompt-file", o->prompt_file, "Read the prompt from a file (one-shot mode)");
  sub->add_option("--system", o->system, "System text (also -sys; \"\" disables)");
  sub->add_option("-c,--ctx", o->ctx, "Context size in tokens")->capture_default_str();
  sub->add_option("-n,--tokens", o->tokens, "Maximum tokens to generate")->capture_default_str();
  sub->add_option("--temp", o->temp, "Temperature, 0 = greedy")->capture_default_str();
  sub->add_option("--top-p", o->top_p, "Top-p")->capture_default_str();
  sub->add_option("--min-p", o->min_p, "Min-p")->capture_default_str();
  sub->add_option("--seed", o->seed, "Sampling seed (> 0; default: time-based)");
  sub->add_flag("--think", o->think, "Thinking mode (default)");
  sub->add_flag("--nothink", o->nothink, "Answer without thinking");
  sub->add_flag("--think-max", o->think_max, "Maximum thinking effort (needs --ctx >= 393216)");
  sub->add_flag("--dump-tokens", o->dump_tokens, "Print the prompt's token ids and exit");
  sub->add_option("--dump-logprobs", o->dump_logprobs, "Write a greedy continuation's top logprobs as JSON");
  sub->add_option("--logprobs-top-k", o->logprobs_top_k, "Candidates per step in --dump-logprobs")->capture_default_str();
  sub->add_option("--trace", o->trace, "Write prompt tokens, sampled tokens and the stop reason to a file");
  sub->add_option("-t,--threads", o->threads, "CPU threads (0: all)");
  sub->add_option("--backend", o->backend, "cpu (default) or cuda (builds with CUDA)");
  add_expert_flags(sub, o->experts);
  sub->add_option("--numerics", o->numerics, "faithful (default) or exact");
  add_steering_flags(sub, o->steering);
  auto sf = std::make_shared<SessionFileFlags>();
  add_session_file_flags(sub, *sf);
  sub->callback([o, sub, sf] { run(*o, *sub, *sf); });
});

}  // namespace
}  // namespace ds4::cli
