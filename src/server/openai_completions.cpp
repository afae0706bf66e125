// POST /v1/completions (reference-behavior §3.8): the prompt is wrapped as a
// chat turn with the fixed system prompt; the text comes back raw (no
// reasoning split, no tool parsing), as text_completion objects or chunks.
#include <fmt/format.h>

#include "server/context.h"
#include "server/http_io.h"
#include "server/openai_common.h"

namespace ds4::server {

namespace {

std::string read_prompt(const Json& body) {
  const Json* v = field(body, "prompt");
  if (!v) throw ApiError(400, "missing prompt", "prompt");
  if (v->is_string()) return v->get<std::string>();
  if (v->is_array()) {
    // The first string element; a list of token ids or several prompts is not supported.
    if (v->empty() || !(*v)[0].is_string())
      throw ApiError(400, "invalid JSON request: field 'prompt' must be a string or an array whose first element is a string",
                     "prompt");
    return (*v)[0].get<std::string>();
  }
  throw ApiError(400, fmt::format("invalid JSON request: field 'prompt' must be a string, not {}", v->type_name()), "prompt");
}

// Legacy logprobs: {"tokens","token_logprobs","top_logprobs":[{tok: lp}],"text_offset"}.
Json legacy_logprobs(const std::vector<TurnEvent>& lps) {
  Json tokens = Json::array(), lp = Json::array(), top = Json::array(), off = Json::array();
  size_t pos = 0;
  for (const auto& e : lps) {
    const std::string t = token_text(e.token.bytes);
    tokens.push_back(t);
    lp.push_back(e.token.logprob);
    Json alts = Json::object();
    for (const auto& a : e.top) alts[token_text(a.bytes)] = a.logprob;
    top.push_back(alts);
    off.push_back(pos);
    pos += e.token.bytes.size();
  }
  return {{"tokens", tokens}, {"token_logprobs", lp}, {"top_logprobs", top}, {"text_offset", off}};
}

void handle(const httplib::Request& req, httplib::Response& res, ServerContext& ctx) {
  auto ticket = std::make_shared<GenerationTicket>(ctx);
  const Json body = parse_body(req.body);
  reject_unsupported(body);
  Turn t;
  t.kind = Turn::Kind::Completion;
  t.prompt = read_prompt(body);
  read_sampling(body, t);
  read_thinking(body, t);
  read_stop(body, "stop", t);
  read_max_tokens(body, t, false);
  if (auto n = get_int(body, "logprobs", "", 0, 20)) t.top_logprobs = static_cast<int>(*n);
  const std::string model = model_of(body, ctx.opt.model_id);
  const bool stream = get_bool(body, "stream", "").value_or(false);
  bool include_usage = false;
  if (const Json* so = get_object(body, "stream_options", ""))
    include_usage = get_bool(*so, "include_usage", "stream_options").value_or(false);

  const PreparedTurn prepared = ctx.runner.prepare(t, "prompt");
  std::shared_ptr<TurnStream> st = ctx.runner.start(t, prepared);
  const std::string id = fmt::format("cmpl-{}", next_response_number());
  const long long created = unix_now();

  if (!stream) {
    std::vector<TurnEvent> lps;
    TurnEvent done = wait_done(req, *st, t.top_logprobs >= 0 ? &lps : nullptr);
    if (done.finish == TurnFinish::error && done.usage.completion_tokens == 0)
      throw ApiError(500, done.error.empty() ? "generation failed" : done.error);
    Json choice = {{"text", done.parsed.content},
                   {"index", 0},
                   {"logprobs", t.top_logprobs >= 0 ? legacy_logprobs(lps) : Json(nullptr)},
                   {"finish_reason", finish_reason(done.finish)}};
    send_json(res, 200,
              {{"id", id},
               {"object", "text_completion"},
               {"created", created},
               {"model", model},
               {"choices", Json::array({choice})},
               {"usage", usage_json(done.usage)},
               {"timings", timings_json(done.usage)},
               {"ds4_steering", steering_json(done.usage)}});
    return;
  }

  auto chunk = [id, created, model](const std::string& text, Json finish = nullptr, Json logprobs = nullptr) {
    return Json{{"id", id},
                {"object", "text_completion"},
                {"created", created},
                {"model", model},
                {"choices", Json::array({{{"text", text}, {"index", 0}, {"logprobs", std::move(logprobs)},
                                          {"finish_reason", std::move(finish)}}})}};
  };
  stream_turn(res, st, {},
              [chunk, include_usage, id, created, model, ticket](SseWriter& w, const TurnEvent& e) {
                switch (e.kind) {
                  case TurnEvent::Kind::Progress: return true;
                  case TurnEvent::Kind::Logprob: return w.data(chunk("", nullptr, legacy_logprobs({e})));
                  case TurnEvent::Kind::Stream: return e.stream.text.empty() || w.data(chunk(e.stream.text));
                  case TurnEvent::Kind::Done: {
                    Json fin = chunk("", finish_reason(e.finish));
                    fin["ds4_steering"] = steering_json(e.usage);
                    if (!w.data(fin)) return false;
                    if (include_usage && !w.data({{"id", id}, {"object", "text_completion"}, {"created", created},
                                                  {"model", model}, {"choices", Json::array()},
                                                  {"usage", usage_json(e.usage)}}))
                      return false;
                    return w.raw("data: [DONE]\n\n");
                  }
                }
                return true;
              });
}

}  // namespace

void add_openai_completions_routes(httplib::Server& s, ServerContext& ctx) {
  s.Post("/v1/completions", [&ctx](const httplib::Request& req, httplib::Response& res) {
    guarded(res, openai_error_body, [&] { handle(req, res, ctx); });
  });
}

}  // namespace ds4::server
