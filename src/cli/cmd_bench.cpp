// `ds4 bench -m MODEL (--prompt-file F | --chat-prompt-file F) --ctx-start A
//  --ctx-max B (--step-incr N | --step-mul X) --gen-tokens G [--sequences S] [--csv FILE]`:
// prefill and decode throughput at growing context frontiers
// (docs/ARCHITECTURE.md; the CSV of antirez/ds4's ds4-bench plus columns). One
// fixed token sequence is fed incrementally; at each frontier the live state
// is snapshotted, G greedy tokens (never EOS) are generated, and the snapshot
// is restored before moving on. With --sequences S > 1, S copies of the
// frontier state then decode G steps together, one batched forward per step,
// each starting from a different token so their routing differs as separate
// conversations' would: the aggregate and per-sequence tok/s are extra columns.
#include <fmt/format.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>

#include "cli/commands.h"
#include "cli/engine_options.h"
#include "cli/placement_flags.h"
#include "cli/read_file.h"
#include "cli/steering_flags.h"
#include "engine/generate.h"
#include "model/placement.h"
#include "model/token_cost.h"
#include "engine/prompt.h"
#include "util/error.h"

namespace ds4::cli {
namespace {

struct BenchOpts {
  std::string model, prompt_file, chat_prompt_file, system = "You are a helpful assistant.", csv, backend = "cpu",
      numerics = "faithful";
  int64_t ctx_start = 2048, ctx_max = 32768, ctx_alloc = 0, step_incr = 2048, gen_tokens = 128, sequences = 1;
  double step_mul = 1;
  int threads = 0;
  ExpertFlags experts;
  bool profile = false;
  SteeringFlags steering;
};


// Weight bytes one decode step reads: every tensor once, except that only
// n_expert_used of the routed experts run and the embedding is one row.
double weight_bytes_per_token(const engine::Engine& e) {
  const auto& c = e.model().config;
  double total = 0;
  for (const auto& t : e.model().file->tensors()) {
    const double b = static_cast<double>(t.nbytes);
    if (t.name.find("_exps") != std::string::npos)
      total += b * c.n_expert_used / std::max(1u, c.n_expert);
    else if (t.name == "token_embd.weight" || t.name.find("tid2eid") != std::string::npos)
      total += b / static_cast<double>(t.ne.size() > 1 ? t.ne[1] : 1);
    else
      total += b;
  }
  return total;
}

// S sequences restored from the frontier snapshot decode G steps together
// (greedy, never EOS); returns the aggregate decode tok/s. Sequence i starts
// from the frontier token shifted by i so the sequences route differently.
double batched_decode_tps(const engine::Engine& e, const engine::Session::Snapshot& snap, int32_t last, int64_t S,
                          int64_t G, int64_t alloc) {
  const auto V = static_cast<int64_t>(e.model().config.n_vocab);
  const int32_t eos = e.specials().eos;
  std::vector<std::unique_ptr<engine::Session>> seqs;
  std::vector<int32_t> next(static_cast<size_t>(S));
  for (int64_t i = 0; i < S; ++i) {
    seqs.push_back(e.new_session(alloc));
    seqs.back()->restore(snap);
    int32_t t = static_cast<int32_t>((int64_t{last} + i * 7919) % V);
    if (t == eos) t = static_cast<int32_t>((t + 1) % V);
    next[static_cast<size_t>(i)] = t;
  }
  std::vector<float> logits(static_cast<size_t>(S * V));
  std::vector<backend::SeqStep> batch(static_cast<size_t>(S));
  const auto t0 = std::chrono::steady_clock::now();
  for (int64_t g = 0; g < G; ++g) {
    for (int64_t i = 0; i < S; ++i)
      batch[static_cast<size_t>(i)] = {&seqs[static_cast<size_t>(i)]->state(),
                                       std::span<const int32_t>(&next[static_cast<size_t>(i)], 1), backend::Logits::last,
                                       std::span<float>(logits.data() + i * V, static_cast<size_t>(V)),
                                       seqs[static_cast<size_t>(i)]->steering()};
    e.backend().forward(batch);
    for (int64_t i = 0; i < S; ++i) {
      const float* row = logits.data() + i * V;
      int64_t best = eos == 0 ? 1 : 0;
      for (int64_t v = 0; v < V; ++v)
        if (v != eos && row[v] > row[best]) best = v;
      next[static_cast<size_t>(i)] = static_cast<int32_t>(best);
    }
  }
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return s > 0 ? static_cast<double>(S * G) / s : 0;
}

void run(const BenchOpts& o) {
  if (o.prompt_file.empty() == o.chat_prompt_file.empty()) fail("give exactly one of --prompt-file and --chat-prompt-file");
  if (o.ctx_start <= 0) fail("invalid value for --ctx-start: {} (must be > 0)", o.ctx_start);
  if (o.ctx_max < o.ctx_start) fail("invalid value for --ctx-max: {} (must be >= --ctx-start {})", o.ctx_max, o.ctx_start);
  if (o.gen_tokens <= 0) fail("invalid value for --gen-tokens: {} (must be > 0)", o.gen_tokens);
  if (o.sequences <= 0 || o.sequences > 4096) fail("invalid value for --sequences: {} (must be 1..4096)", o.sequences);
  if (o.step_incr <= 0) fail("invalid value for --step-incr: {} (must be > 0)", o.step_incr);
  if (!std::isfinite(o.step_mul) || o.step_mul < 1) fail("invalid value for --step-mul: {} (must be >= 1)", o.step_mul);
  const int64_t alloc = o.ctx_alloc > 0 ? o.ctx_alloc : o.ctx_max + o.gen_tokens + 1;
  if (alloc <= o.ctx_max + o.gen_tokens)
    fail("invalid value for --ctx-alloc: {} (must exceed ctx-max + gen-tokens = {})", alloc, o.ctx_max + o.gen_tokens);

  engine::EngineOptions eo = engine_options(o.model, o.backend, o.threads, o.numerics, &o.steering);
  eo.profile = o.profile;
  eo.device_expert_layers = device_expert_layers(o.experts);
  std::FILE* out = stdout;
  std::unique_ptr<std::FILE, int (*)(std::FILE*)> csv_file(nullptr, &std::fclose);
  if (!o.csv.empty()) {
    csv_file.reset(std::fopen(o.csv.c_str(), "w"));
    if (!csv_file) fail("--csv {}: cannot open for writing", o.csv);
    out = csv_file.get();
  }
  const std::string text = read_file(o.prompt_file.empty() ? o.chat_prompt_file : o.prompt_file,
                                 o.prompt_file.empty() ? "--chat-prompt-file" : "--prompt-file");
  engine::Engine e(eo);
  // --profile: the backend's table of where the time went, per stage.
  auto profile = [&](const std::string& what) {
    if (!o.profile) return;
    const std::string t = e.backend().take_profile();
    if (t.empty()) std::fprintf(stderr, "ds4-bench: --profile: backend %s has no profile\n", o.backend.c_str());
    else std::fprintf(stderr, "ds4-bench: profile of %s\n%s", what.c_str(), t.c_str());
  };
  const std::vector<int32_t> toks = o.prompt_file.empty()
                                        ? engine::single_prompt(e, o.system, text, engine::Thinking::none)
                                        : e.tokenizer().encode(text);
  if (static_cast<int64_t>(toks.size()) < o.ctx_max)
    fail("the prompt has {} tokens; --ctx-max {} needs at least that many", toks.size(), o.ctx_max);
  const double wbytes = weight_bytes_per_token(e), macs = model::prefill_macs_per_token(e.model());
  std::fprintf(stderr,
               "ds4-bench: %s, %zu prompt tokens, %.1f MB of weights read per decoded token, %.3f GFLOP of weight "
               "products per prefill token\n",
               o.model.c_str(), toks.size(), wbytes / 1e6, 2 * macs / 1e9);

  // The bound a decode step cannot beat: its weight bytes at the read rates
  // of the places that hold them, measured now (issue 21's split bound).
  if (const auto rr = e.backend().measure_read_rates(); rr.device_gbps > 0) {
    const auto& c = e.model().config;
    double host = 0;  // routed-expert bytes a step reads from host memory
    if (rr.device_expert_layers >= 0)
      for (const auto& t : e.model().file->tensors())
        if (t.name.find("_exps") != std::string::npos && model::tensor_layer(t.name) >= rr.device_expert_layers)
          host += static_cast<double>(t.nbytes) * c.n_expert_used / std::max(1u, c.n_expert);
    const double dev = wbytes - host;
    const double sec = dev / (rr.device_gbps * 1e9) + (host > 0 && rr.host_gbps > 0 ? host / (rr.host_gbps * 1e9) : 0);
    if (host > 0)
      std::fprintf(stderr,
                   "ds4-bench: decode bound: %.1f MB a token from the device at %.0f GB/s + %.1f MB from host memory "
                   "at %.1f GB/s (both read rates measured now) = %.3f ms, %.1f tok/s\n",
                   dev / 1e6, rr.device_gbps, host / 1e6, rr.host_gbps, sec * 1e3, 1.0 / sec);
    else
      std::fprintf(stderr,
                   "ds4-bench: decode bound: %.1f MB a token at the %s backend's read rate of %.1f GB/s (measured now) "
                   "= %.3f ms, %.1f tok/s\n",
                   dev / 1e6, std::string(e.backend().name()).c_str(), rr.device_gbps, sec * 1e3, 1.0 / sec);
  }

  const bool multi = o.sequences > 1;
  std::fprintf(out, "ctx_tokens,prefill_tokens,prefill_tps,gen_tokens,gen_tps,kvcache_bytes,weight_gbps,prefill_tflops%s\n",
               multi ? ",sequences,agg_gen_tps,seq_gen_tps" : "");
  std::fflush(out);
  auto session = e.new_session(alloc);
  engine::GenerateOptions g;
  g.sampling.temperature = 0;
  g.thinking_sampling.temperature = 0;
  g.ban_eos = true;
  g.max_tokens = o.gen_tokens;
  g.ctx_size = alloc;
  for (int64_t frontier = o.ctx_start; frontier <= o.ctx_max;) {
    const int64_t from = session->position();
    // Prefill up to the frontier; its last token is fed by generate() so the
    // first generated token comes from its logits. Both parts are timed.
    const auto t0 = std::chrono::steady_clock::now();
    if (frontier - 1 > from) session->prefill(std::span<const int32_t>(toks.data() + from, static_cast<size_t>(frontier - 1 - from)));
    const double pre_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    profile(fmt::format("prefill {} -> {}", from, frontier - 1));
    // The snapshot is taken after the last prompt token, outside both timers.
    const int32_t last = toks[static_cast<size_t>(frontier - 1)];
    const engine::Session::Snapshot snap = session->snapshot();
    const engine::GenerateResult r = engine::generate(e, *session, std::span<const int32_t>(&last, 1), g);
    const double prefill_s = pre_s + r.prefill_seconds;
    profile(fmt::format("generation at {} (its first step feeds the frontier's last token)", frontier));
    const auto n_gen = static_cast<int64_t>(r.tokens.size());
    // The first token comes from the prefill's logits; each further one costs
    // one decode forward pass, which is what gen_tps measures.
    const double gen_tps = n_gen > 1 && r.gen_seconds > 0 ? static_cast<double>(n_gen - 1) / r.gen_seconds : 0;
    const double prefill_tps = prefill_s > 0 ? static_cast<double>(frontier - from) / prefill_s : 0;
    std::fprintf(out, "%lld,%lld,%.2f,%lld,%.2f,%zu,%.2f,%.5g", static_cast<long long>(frontier),
                 static_cast<long long>(frontier - from), prefill_tps, static_cast<long long>(n_gen), gen_tps,
                 snap.bytes(), wbytes * gen_tps / 1e9, 2 * macs * prefill_tps / 1e12);
    if (multi) {
      const double agg = batched_decode_tps(e, snap, last, o.sequences, o.gen_tokens, alloc);
      profile(fmt::format("{} sequences decoding together at {}", o.sequences, frontier));
      std::fprintf(out, ",%lld,%.2f,%.2f", static_cast<long long>(o.sequences), agg,
                   agg / static_cast<double>(o.sequences));
    }
    std::fprintf(out, "\n");
    std::fflush(out);
    // Back to the state before the generation; the frontier's last token is
    // fed again (untimed) so the next interval starts exactly at the frontier.
    session->restore(snap);
    session->prefill(std::span<const int32_t>(&last, 1));
    if (o.profile) (void)e.backend().take_profile();  // that untimed step is no stage's
    if (frontier == o.ctx_max) break;
    const int64_t next = o.step_mul > 1 ? static_cast<int64_t>(std::ceil(static_cast<double>(frontier) * o.step_mul))
                                        : frontier + o.step_incr;
    frontier = std::min(next, o.ctx_max);
  }
}

Registration reg("bench", 80, [](CLI::App& app) {
  auto o = std::make_shared<BenchOpts>();
  CLI::App* sub = app.add_subcommand("bench", "Prefill/decode throughput at growing context sizes (CSV)");
  sub->add_option("-m,--model", o->model, "Model .gguf")->required();
  sub->add_option("--prompt-file", o->prompt_file, "Raw text, tokenized as is");
  sub->add_option("--chat-prompt-file", o->chat_prompt_file, "Text rendered as one non-thinking chat message");
  sub->add_option("--system", o->system, "System text for --chat-prompt-file");
  sub->add_option("--ctx-start", o->ctx_start, "First frontier")->capture_default_str();
  sub->add_option("--ctx-max", o->ctx_max, "Last frontier")->capture_default_str();
  sub->add_option("--ctx-alloc", o->ctx_alloc, "Context size (default ctx-max + gen-tokens + 1)");
  sub->add_option("--step-incr", o->step_incr, "Frontier step when --step-mul is 1")->capture_default_str();
  sub->add_option("--step-mul", o->step_mul, "Frontier multiplier (>= 1)")->capture_default_str();
  sub->add_option("--gen-tokens,-n", o->gen_tokens, "Tokens generated at each frontier")->capture_default_str();
  sub->add_option("--sequences", o->sequences,
                  "Also decode this many sequences together at each frontier (aggregate and per-sequence tok/s)")
      ->capture_default_str();
  sub->add_option("--csv", o->csv, "Write the CSV here instead of stdout");
  sub->add_option("-t,--threads", o->threads, "CPU threads (0: all)");
  sub->add_option("--backend", o->backend, "cpu (default) or cuda (builds with CUDA)");
  add_expert_flags(sub, o->experts);
  sub->add_flag("--profile", o->profile,
                "Print where the backend's time went, per phase and layer kind, for each prefill and generation "
                "(CUDA: GPU time between events, one sync per pass)");
  sub->add_option("--numerics", o->numerics, "faithful (default) or exact");
  add_steering_flags(sub, o->steering);
  sub->callback([o] { run(*o); });
});

}  // namespace
}  // namespace ds4::cli
