// `ds4 serve [-m MODEL.gguf] [flags]`: the OpenAI-compatible HTTP server
// (docs/server.md). The CLI only parses flags, loads the engine and hands it
// to server::serve. Without -m it serves the demo model (random weights, real
// tokenizer) that scripts/demo-model builds and caches.
#include <cstdio>
#include <fstream>
#include <memory>
#include <sstream>

#include "cli/placement_flags.h"
#include "cli/cache_flags.h"
#include "cli/commands.h"
#include "cli/engine_options.h"
#include "cli/read_file.h"
#include "cli/steering_flags.h"
#include "engine/scheduler.h"
#include "server/server.h"
#include "util/error.h"
#include "util/log.h"

namespace ds4::cli {
namespace {

struct ServeOptions {
  std::string model, backend = "cpu", numerics = "faithful", test_script;
  ExpertFlags experts;
  server::ServerOptions http;
  int64_t ctx = 32768, tokens = 393216, batch_tokens = 512;
  int parallel = 4, queue = 64, threads = 0;
  SteeringFlags steering;
  CacheFlags cache;
};

// Path of the cached demo model, built on first use by scripts/demo-model.
std::string demo_model_path() {
  const std::string script = std::string(DS4_SOURCE_DIR) + "/scripts/demo-model";
  char self[4096];
  const ssize_t n = ::readlink("/proc/self/exe", self, sizeof(self) - 1);
  if (n <= 0) fail("no -m given and the ds4 binary's own path is unknown; pass -m MODEL.gguf");
  self[n] = '\0';
  const std::string cmd = "'" + script + "' '" + std::string(self) + "' --print-path";
  FILE* p = ::popen(cmd.c_str(), "r");
  if (!p) fail("no -m given and {} could not be started; pass -m MODEL.gguf", script);
  std::string out;
  char buf[512];
  while (std::fgets(buf, sizeof(buf), p)) out += buf;
  const int rc = ::pclose(p);
  while (!out.empty() && (out.back() == '\n' || out.back() == '\r')) out.pop_back();
  if (rc != 0 || out.empty()) fail("no -m given and the demo model could not be built by {}; pass -m MODEL.gguf", script);
  log::info("ds4 serve: no -m given: serving the demo model with RANDOM weights ({}); answers are gibberish", out);
  return out;
}


void run_serve(ServeOptions o) {
  if (o.ctx < 2) fail("invalid value for --ctx: {} (must be >= 2)", o.ctx);
  if (o.tokens < 0) fail("invalid value for -n/--tokens: {} (must be >= 0)", o.tokens);
  if (o.parallel < 1 || o.parallel > 256) fail("invalid value for --parallel: {} (must be in [1, 256])", o.parallel);
  if (o.queue < 0 || o.queue > 4096) fail("invalid value for --queue: {} (must be in [0, 4096])", o.queue);
  if (o.batch_tokens < 1) fail("invalid value for --batch-tokens: {} (must be >= 1)", o.batch_tokens);
  if (o.http.port < 0 || o.http.port > 65535) fail("invalid value for --port: {} (must be in [0, 65535])", o.http.port);
  if (o.threads < 0) fail("invalid value for --threads: {} (must be >= 0)", o.threads);
  if (!(o.http.keepalive_seconds >= 0.05 && o.http.keepalive_seconds <= 3600))
    fail("invalid value for --sse-keepalive: {} (must be in [0.05, 3600] seconds)", o.http.keepalive_seconds);
  if (o.model.empty()) o.model = demo_model_path();

  auto eng = std::make_unique<engine::Engine>(
      engine_options(o.model, o.backend, o.threads, o.numerics, &o.steering, device_expert_layers(o.experts)));
  const auto mem = eng->backend().session_memory(backend::SessionOptions{eng->numerics(), o.ctx});
  log::info("ds4 serve: each slot's session takes {:.1f} MiB at {} tokens of context ({} slots: {:.1f} MiB when all are used)",
            static_cast<double>(mem.total()) / 1048576.0, o.ctx, o.parallel,
            static_cast<double>(mem.total()) * o.parallel / 1048576.0);
  engine::SchedulerOptions so;
  so.parallel = o.parallel;
  so.ctx_size = o.ctx;
  so.batch_tokens = o.batch_tokens;
  so.max_queue = o.queue;
  so.cache = make_prefix_cache(o.cache, *eng);
  if (so.cache) {
    const auto& co = so.cache->options();
    log::info("ds4 serve: prefix cache: ram {} MiB, disk {} ({} MiB), checkpoints of >= {} tokens, block {} tokens",
              co.ram_bytes >> 20, co.disk_dir.empty() ? "off" : co.disk_dir, co.disk_bytes >> 20, co.min_tokens,
              co.block_tokens);
  } else {
    log::info("ds4 serve: prefix cache off (--cache-ram-mb 0 and no --kv-disk-dir): only live slots are reused");
  }
  engine::Scheduler sched(std::move(eng), so);

  server::RunnerOptions ro;
  ro.default_max_tokens = o.tokens;
  if (!o.test_script.empty()) {
    ro.scripted_reply = server::encode_script(sched.tokenizer(), read_file(o.test_script, "--test-script"));
    log::warn("ds4 serve: --test-script: every reply is the {} tokens of {} (test hook)", ro.scripted_reply.size(),
              o.test_script);
  }
  log::info("ds4 serve: {} slots x {} tokens of context, batch budget {} tokens", o.parallel, o.ctx, o.batch_tokens);
  server::serve(sched, ro, o.http);
}

Registration reg("serve", 20, [](CLI::App& app) {
  auto o = std::make_shared<ServeOptions>();
  auto* sub = app.add_subcommand("serve", "HTTP server: OpenAI-compatible APIs (chat, completions, models, tokenize, metrics)");
  sub->add_option("-m,--model", o->model, "Model .gguf (default: the built-in demo model with random weights)");
  sub->add_option("--host", o->http.host, "Address to bind (127.0.0.1; 0.0.0.0 for the LAN)")->capture_default_str();
  sub->add_option("--port", o->http.port, "Port (0: any free port, printed at start)")->capture_default_str();
  sub->add_option("-c,--ctx", o->ctx, "Context size of every slot, in tokens")->capture_default_str();
  sub->add_option("-n,--tokens", o->tokens, "Default max output tokens when a request sets none")->capture_default_str();
  sub->add_option("--parallel", o->parallel, "Slots: requests generated together, each keeping its KV state for prefix reuse")
      ->capture_default_str();
  sub->add_option("--queue", o->queue, "Requests that may wait for a slot; more get 503")->capture_default_str();
  sub->add_option("--batch-tokens", o->batch_tokens, "Most tokens in one batched forward step (decode + prompt chunks)")
      ->capture_default_str();
  sub->add_option("--api-key", o->http.api_key, "Require this key (Authorization: Bearer KEY or x-api-key: KEY)");
  sub->add_flag("--cors", o->http.cors, "Send Access-Control-Allow-* headers");
  sub->add_option("--sse-keepalive", o->http.keepalive_seconds,
                  "Seconds without output (queue wait, long prefill) before a ': prefill' SSE comment")
      ->capture_default_str();
  sub->add_option("--model-id", o->http.model_id, "Model id in /v1/models")->capture_default_str();
  sub->add_option("-t,--threads", o->threads, "CPU threads (0: all)");
  sub->add_option("--backend", o->backend, "cpu (default) or cuda (builds with CUDA)");
  add_expert_flags(sub, o->experts);
  sub->add_option("--numerics", o->numerics, "faithful (default) or exact");
  add_steering_flags(sub, o->steering);
  add_steering_vector_flag(sub, o->steering);
  add_cache_flags(sub, o->cache);
  sub->add_option("--test-script", o->test_script,
                  "TEST HOOK: every reply is forced to spell this file's text (the forward still runs); for tests only");
  sub->callback([o] { run_serve(*o); });
});

}  // namespace
}  // namespace ds4::cli
