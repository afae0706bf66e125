// GET /health, GET /metrics, GET /v1/models, GET /v1/models/{id}
// (reference-behavior §3.5).
#include <ctime>

#include "server/context.h"
#include "server/http_io.h"

namespace ds4::server {

namespace {

Json model_object(const ServerContext& ctx) {
  const int64_t n_ctx = ctx.runner.ctx_size();
  return {{"id", ctx.opt.model_id},
          {"object", "model"},
          {"created", 1767225600},
          {"owned_by", "ds4"},
          {"name", ctx.opt.model_name},
          {"context_length", n_ctx},
          {"top_provider",
           {{"context_length", n_ctx},
            {"max_completion_tokens", std::min(ctx.runner.default_max_tokens(), n_ctx)},
            {"is_moderated", false}}},
          {"supported_parameters",
           {"tools", "tool_choice", "max_tokens", "temperature", "top_p", "top_k", "min_p", "stop", "seed", "stream",
            "reasoning_effort", "logprobs", "top_logprobs"}}};
}

}  // namespace

void add_basic_routes(httplib::Server& s, ServerContext& ctx) {
  s.Get("/health", [&ctx](const httplib::Request&, httplib::Response& res) {
    const auto st = ctx.sched.stats();
    send_json(res, 200,
              {{"status", "ok"}, {"slots", st.parallel}, {"active", st.active}, {"queue", st.queue_length}});
  });
  s.Get("/metrics", [&ctx](const httplib::Request&, httplib::Response& res) {
    res.set_content(ctx.metrics.render(ctx.sched.stats(), ctx.sched.cache_stats()), "text/plain; version=0.0.4");
  });
  s.Get("/v1/models", [&ctx](const httplib::Request&, httplib::Response& res) {
    send_json(res, 200, {{"object", "list"}, {"data", Json::array({model_object(ctx)})}});
  });
  s.Get(R"(/v1/models/(.+))", [&ctx](const httplib::Request& req, httplib::Response& res) {
    const std::string id = req.matches[1];
    if (id != ctx.opt.model_id) {
      send_json(res, 404, openai_error_body(ApiError(404, "model '" + id + "' not found", "model")));
      return;
    }
    send_json(res, 200, model_object(ctx));
  });
}

}  // namespace ds4::server
