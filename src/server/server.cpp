#include "server/server.h"

#include <csignal>
#include <cstdlib>
#include <cstdio>
#include <thread>

#include "server/anthropic_request.h"
#include "server/context.h"
#include "server/http_io.h"
#include "util/error.h"
#include "util/log.h"

namespace ds4::server {

namespace {

std::atomic<int> g_signals{0};
extern "C" void on_signal(int) { g_signals.fetch_add(1); }

// Threads for cheap endpoints that no number of generation requests can take.
constexpr int kReservedThreads = 4;
constexpr size_t kMaxBody = 64u << 20;  // reference-behavior §3.2

bool authorized(const httplib::Request& req, const std::string& key) {
  const std::string bearer = req.get_header_value("Authorization");
  if (bearer.size() > 7 && bearer.compare(0, 7, "Bearer ") == 0 && bearer.substr(7) == key) return true;
  return req.get_header_value("x-api-key") == key;
}

// Anthropic clients get their API's error shape also from the errors raised
// before a handler runs (auth, body too large, unknown method).
bool anthropic_path(const std::string& path) { return path.rfind("/v1/messages", 0) == 0; }

}  // namespace

GenerationTicket::GenerationTicket(ServerContext& ctx) : ctx_(ctx) {
  if (ctx_.generating.fetch_add(1) >= ctx_.max_generating) {
    ctx_.generating.fetch_sub(1);
    throw ApiError(503, "server busy: too many requests in flight; retry later");
  }
}
GenerationTicket::~GenerationTicket() { ctx_.generating.fetch_sub(1); }

void guarded(httplib::Response& res, const ErrorBody& error_body, const std::function<void()>& fn) {
  try {
    fn();
  } catch (const ApiError& e) {
    send_json(res, e.status, error_body(e));
  } catch (const Json::exception& e) {
    // A JSON value of an unexpected shape that slipped past the typed reads.
    send_json(res, 400, error_body(ApiError(400, std::string("invalid JSON request: ") + e.what())));
  } catch (const std::exception& e) {
    log::warn("ds4 serve: request failed: {}", e.what());
    send_json(res, 500, error_body(ApiError(500, e.what())));
  }
}

std::vector<int32_t> encode_script(const tokenizer::Tokenizer& tok, std::string_view text) {
  std::vector<int32_t> out;
  for (const auto& seg : chat::split_specials(text)) {
    if (seg.kind == chat::Segment::Kind::Special)
      out.push_back(tok.special_id(seg.text));
    else
      tok.encode_append(seg.text, out);
  }
  return out;
}

void serve(engine::Scheduler& sched, const RunnerOptions& runner_opt, const ServerOptions& opt) {
  set_keepalive_seconds(opt.keepalive_seconds);
  TurnRunner runner(sched, runner_opt);
  Metrics metrics;
  ResponseStore responses;
  ServerContext ctx{opt, sched, runner, metrics, responses};
  ctx.max_generating = sched.options().parallel + sched.options().max_queue;
  const int threads = ctx.max_generating + kReservedThreads;

  httplib::Server svr;
  svr.new_task_queue = [threads] { return new httplib::ThreadPool(static_cast<size_t>(threads)); };
  svr.set_keep_alive_max_count(1);  // one request per connection, as the reference: no idle thread holds
  svr.set_read_timeout(10, 0);
  svr.set_write_timeout(10, 0);
  svr.set_payload_max_length(kMaxBody);
  if (opt.cors)
    svr.set_default_headers({{"Access-Control-Allow-Origin", "*"},
                             {"Access-Control-Allow-Methods", "GET, POST, OPTIONS"},
                             {"Access-Control-Allow-Headers", "*"}});
  svr.Options(R"(.*)", [](const httplib::Request&, httplib::Response& res) { res.status = 204; });
  svr.set_pre_routing_handler([&](const httplib::Request& req, httplib::Response& res) {
    // The chat page (GET /) holds no data and asks the user for the key itself.
    if (opt.api_key.empty() || req.method == "OPTIONS" || req.path == "/health" || req.path == "/")
      return httplib::Server::HandlerResponse::Unhandled;
    if (authorized(req, opt.api_key)) return httplib::Server::HandlerResponse::Unhandled;
    const ApiError denied(401, "invalid or missing API key (send 'Authorization: Bearer KEY' or 'x-api-key: KEY')");
    send_json(res, 401, anthropic_path(req.path) ? anthropic_error_body(denied) : openai_error_body(denied));
    return httplib::Server::HandlerResponse::Handled;
  });
  svr.set_error_handler(httplib::Server::HandlerWithResponse([](const httplib::Request& req, httplib::Response& res) {
    if (!res.body.empty()) return httplib::Server::HandlerResponse::Unhandled;
    std::string msg = res.status == 404   ? "unknown endpoint"
                      : res.status == 413 ? "request body too large (limit 64 MiB)"
                                          : "bad HTTP request";
    const ApiError e(res.status, msg);
    send_json(res, res.status, anthropic_path(req.path) ? anthropic_error_body(e) : openai_error_body(e));
    return httplib::Server::HandlerResponse::Handled;
  }));
  svr.set_exception_handler([](const httplib::Request&, httplib::Response& res, std::exception_ptr ep) {
    std::string msg = "internal error";
    try {
      std::rethrow_exception(ep);
    } catch (const std::exception& e) {
      msg = e.what();
    } catch (...) {
    }
    send_json(res, 500, openai_error_body(ApiError(500, msg)));
  });
  svr.set_logger([&](const httplib::Request& req, const httplib::Response& res) {
    metrics.count_request(endpoint_label(req.path), res.status);
    log::debug("ds4 serve: {} {} -> {}", req.method, req.path, res.status);
  });

  add_basic_routes(svr, ctx);
  add_tokenize_routes(svr, ctx);
  add_openai_chat_routes(svr, ctx);
  add_openai_completions_routes(svr, ctx);
  add_anthropic_routes(svr, ctx);
  add_openai_responses_routes(svr, ctx);
  add_chat_page_route(svr);

  const std::string host = opt.host == "localhost" ? "127.0.0.1" : opt.host;
  int port = opt.port;
  if (port == 0) {
    port = svr.bind_to_any_port(host);
    if (port < 0) fail("cannot bind {}: no free port", host);
  } else if (!svr.bind_to_port(host, port)) {
    fail("cannot bind {}:{} (in use, or not a local address)", host, port);
  }

  g_signals = 0;
  std::signal(SIGINT, on_signal);
  std::signal(SIGTERM, on_signal);
  std::signal(SIGPIPE, SIG_IGN);  // a client gone mid-write is a failed write, not a dead server
  std::atomic<bool> stopped{false};
  std::thread watcher([&] {
    bool stopping = false;
    while (!stopped.load()) {
      const int n = g_signals.load();
      if (n > 1) std::_Exit(130);  // a second signal: no waiting
      if (n == 1 && !stopping) {
        stopping = true;
        log::info("ds4 serve: shutting down");
        sched.shutdown();  // every turn ends (cancelled), so no handler waits on the model
        svr.stop();
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
  });
  std::fprintf(stderr, "ds4 serve: listening on http://%s:%d\n", host.c_str(), port);
  std::fflush(stderr);
  svr.listen_after_bind();
  stopped = true;
  watcher.join();
  sched.shutdown();
}

}  // namespace ds4::server
