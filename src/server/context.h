#pragma once
// What every endpoint handler may use, and the route tables each adapter
// file registers (docs/server.md: adding an API is one more add_*_routes).
#include <httplib.h>

#include <atomic>
#include <functional>

#include "engine/scheduler.h"
#include "server/api_error.h"
#include "server/metrics.h"
#include "server/response_store.h"
#include "server/server.h"
#include "server/turn_runner.h"

namespace ds4::server {

struct ServerContext {
  const ServerOptions& opt;
  engine::Scheduler& sched;
  TurnRunner& runner;
  Metrics& metrics;
  ResponseStore& responses;  // previous_response_id
  // Generation requests inside handlers now; beyond parallel + queue limit a
  // request gets 503 at once, so the HTTP pool keeps threads for /health.
  std::atomic<int> generating{0};
  int max_generating = 0;
};

// Holds one unit of ServerContext::generating for a handler's lifetime;
// throws ApiError 503 when the server is saturated.
class GenerationTicket {
 public:
  explicit GenerationTicket(ServerContext& ctx);
  ~GenerationTicket();
  GenerationTicket(const GenerationTicket&) = delete;
  GenerationTicket& operator=(const GenerationTicket&) = delete;

 private:
  ServerContext& ctx_;
};

// Runs a JSON handler: ApiError becomes its status with `error_body(e)`, any
// other exception a 500 with its message; the server never dies of a request.
using ErrorBody = std::function<chat::Json(const ApiError&)>;
void guarded(httplib::Response& res, const ErrorBody& error_body, const std::function<void()>& fn);

void add_basic_routes(httplib::Server& s, ServerContext& ctx);        // /health, /metrics, /v1/models
void add_tokenize_routes(httplib::Server& s, ServerContext& ctx);     // /tokenize, /detokenize
void add_openai_chat_routes(httplib::Server& s, ServerContext& ctx);  // /v1/chat/completions
void add_openai_completions_routes(httplib::Server& s, ServerContext& ctx);  // /v1/completions
void add_anthropic_routes(httplib::Server& s, ServerContext& ctx);         // /v1/messages, /v1/messages/count_tokens
void add_openai_responses_routes(httplib::Server& s, ServerContext& ctx);  // /v1/responses
void add_chat_page_route(httplib::Server& s);                                // GET /: the browser chat page

}  // namespace ds4::server
