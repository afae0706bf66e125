#pragma once
// `ds4 serve`: the HTTP server in front of the scheduler (docs/server.md).
#include <cstdint>
#include <memory>
#include <string>

#include "engine/scheduler.h"
#include "server/turn_runner.h"
#include "tokenizer/tokenizer.h"

namespace ds4::server {

struct ServerOptions {
  std::string host = "127.0.0.1";
  int port = 8000;  // 0: any free port (the "listening on" line says which)
  std::string api_key;  // non-empty: every endpoint but /health needs it
  bool cors = false;
  std::string model_id = "deepseek-v4-flash";
  std::string model_name = "DeepSeek V4 Flash";
  double keepalive_seconds = 5.0;  // SSE comment while nothing else was written (reference-behavior §3.14)
};

// Serves until SIGINT/SIGTERM. Throws ds4::Error when the address cannot be bound.
void serve(engine::Scheduler& sched, const RunnerOptions& runner, const ServerOptions& opt);

// Tokens of a --test-script reply: special-token spellings (</think>, the
// end-of-sentence marker) become their ids, everything else plain BPE.
std::vector<int32_t> encode_script(const tokenizer::Tokenizer& tok, std::string_view text);

}  // namespace ds4::server
