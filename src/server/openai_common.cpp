#include "server/openai_common.h"

#include <atomic>
#include <cmath>
#include <chrono>

#include <fmt/format.h>

namespace ds4::server {

std::string echo_name(const std::string& s) {
  if (s.size() <= 64) return s;
  size_t n = 64;
  while (n > 0 && (static_cast<unsigned char>(s[n]) & 0xC0) == 0x80) --n;  // not inside a UTF-8 character
  return s.substr(0, n) + "...";
}

void read_steering(const Json& body, Turn& t) {
  const Json* v = get_object(body, "ds4_steering", "");
  if (!v) return;
  for (auto it = v->begin(); it != v->end(); ++it) {
    const std::string& k = it.key();
    if (k == "vector" || k == "ffn" || k == "attn") continue;
    if (k.find("file") != std::string::npos || k.find("path") != std::string::npos)
      throw ApiError(400,
                     fmt::format("invalid JSON request: field 'ds4_steering.{}' is refused: a request cannot make the "
                                 "server read a file; name a direction set loaded at server start in "
                                 "'ds4_steering.vector' (ds4 serve --dir-steering-vector NAME=FILE)",
                                 echo_name(k)),
                     "ds4_steering." + echo_name(k));
    throw ApiError(400,
                   fmt::format("invalid JSON request: field 'ds4_steering.{}' is not supported (ds4_steering takes "
                               "'vector', 'ffn' and 'attn')",
                               echo_name(k)),
                   "ds4_steering." + echo_name(k));
  }
  SteeringAsk a;
  a.vector = get_string(*v, "vector", "ds4_steering");
  for (auto [key, dst] : {std::pair{"ffn", &a.ffn}, std::pair{"attn", &a.attn}}) {
    if (auto x = get_number(*v, key, "ds4_steering")) {
      if (!std::isfinite(*x) || std::fabs(*x) > 100)
        throw ApiError(400, fmt::format("invalid JSON request: field 'ds4_steering.{}' must be a number in [-100, 100]", key),
                       std::string("ds4_steering.") + key);
      *dst = static_cast<float>(*x);
    }
  }
  t.steering = a;
}

void read_sampling(const Json& body, Turn& t) {
  read_steering(body, t);
  if (auto v = get_number(body, "temperature", "")) {
    if (*v < 0 || *v > 100) throw ApiError(400, "invalid JSON request: field 'temperature' must be in [0, 100]", "temperature");
    t.sampling.temperature = static_cast<float>(*v);
  }
  if (auto v = get_number(body, "top_p", "")) {
    if (*v < 0 || *v > 1) throw ApiError(400, "invalid JSON request: field 'top_p' must be in [0, 1]", "top_p");
    t.sampling.top_p = static_cast<float>(*v);
  }
  if (auto v = get_number(body, "min_p", "")) {
    if (*v < 0 || *v > 1) throw ApiError(400, "invalid JSON request: field 'min_p' must be in [0, 1]", "min_p");
    t.sampling.min_p = static_cast<float>(*v);
  }
  if (auto v = get_int(body, "top_k", "", 0, 1 << 30)) t.sampling.top_k = static_cast<int>(*v);
  if (auto v = get_int(body, "seed", "", INT64_MIN, INT64_MAX)) t.sampling.seed = static_cast<uint64_t>(*v);
}

void read_thinking(const Json& body, Turn& t) {
  bool explicit_switch = false;
  bool enabled = true;
  if (const Json* v = field(body, "thinking")) {
    explicit_switch = true;
    if (v->is_boolean()) {
      enabled = v->get<bool>();
    } else if (v->is_object()) {
      const auto type = get_string(*v, "type", "thinking");
      if (!type || (*type != "enabled" && *type != "disabled" && *type != "adaptive"))
        throw ApiError(400, "invalid JSON request: field 'thinking.type' must be \"enabled\" or \"disabled\"", "thinking");
      enabled = *type != "disabled";
    } else {
      throw ApiError(400, fmt::format("invalid JSON request: field 'thinking' must be a boolean or an object, not {}",
                                      v->type_name()),
                     "thinking");
    }
  }
  if (auto v = get_bool(body, "think", "")) {
    explicit_switch = true;
    enabled = *v;
  }
  bool max = false;
  if (auto e = get_string(body, "reasoning_effort", "")) {
    if (*e == "max") max = true;
    else if (*e == "none") enabled = false;
    else if (*e != "xhigh" && *e != "high" && *e != "medium" && *e != "low" && *e != "minimal")
      throw ApiError(400, "invalid JSON request: field 'reasoning_effort' must be one of max, xhigh, high, medium, low, minimal, none",
                     "reasoning_effort");
  }
  if (!explicit_switch) {
    const std::string m = get_string(body, "model", "").value_or("");
    if (m == "deepseek-chat") enabled = false;
    if (m == "deepseek-reasoner") enabled = true;
  }
  t.think = !enabled ? chat::ThinkMode::None : max ? chat::ThinkMode::Max : chat::ThinkMode::High;
}

void read_stop(const Json& body, std::string_view key, Turn& t) {
  const Json* v = field(body, key);
  if (!v) return;
  const std::string k(key);
  if (v->is_string()) {
    if (!v->get<std::string>().empty()) t.stop.push_back(v->get<std::string>());
    return;
  }
  if (!v->is_array()) throw ApiError(400, "invalid JSON request: field '" + k + "' must be a string or an array of strings", k);
  for (size_t i = 0; i < v->size(); ++i) {
    const Json& s = (*v)[i];
    if (!s.is_string())
      throw ApiError(400, fmt::format("invalid JSON request: field '{}[{}]' must be a string, not {}", k, i, s.type_name()), k);
    if (!s.get<std::string>().empty()) t.stop.push_back(s.get<std::string>());
  }
}

void read_max_tokens(const Json& body, Turn& t, bool chat) {
  constexpr int64_t kBig = int64_t{1} << 53;
  if (auto v = get_int(body, "max_tokens", "", -kBig, kBig)) t.max_tokens = *v;
  if (chat)
    if (auto v = get_int(body, "max_completion_tokens", "", -kBig, kBig)) t.max_tokens = *v;
}

void reject_unsupported(const Json& body) {
  if (const Json* rf = field(body, "response_format")) {
    if (!rf->is_object()) throw ApiError(400, "invalid JSON request: field 'response_format' must be an object", "response_format");
    const auto type = get_string(*rf, "type", "response_format").value_or("text");
    if (type != "text")
      throw ApiError(400,
                     fmt::format("response_format type '{}' is not supported: ds4 has no constrained decoding yet, "
                                 "and unconstrained text would not be guaranteed to match",
                                 type),
                     "response_format");
  }
  if (auto n = get_int(body, "n", "", INT64_MIN, INT64_MAX); n && *n != 1)
    throw ApiError(400, "field 'n' must be 1: ds4 returns one choice per request", "n");
}

std::string model_of(const Json& body, const std::string& fallback) {
  return get_string(body, "model", "").value_or(fallback);
}

std::string finish_reason(TurnFinish f) {
  switch (f) {
    case TurnFinish::stop: return "stop";
    case TurnFinish::length: return "length";
    case TurnFinish::tool_calls: return "tool_calls";
    case TurnFinish::error:
    case TurnFinish::cancelled: return "error";
  }
  return "error";
}

Json steering_json(const backend::Steering& s, const std::string& vector) {
  if (!s.active()) return nullptr;
  return {{"vector", vector}, {"ffn", s.ffn}, {"attn", s.attn}};
}

Json usage_json(const TurnUsage& u) {
  return {{"prompt_tokens", u.prompt_tokens},
          {"completion_tokens", u.completion_tokens},
          {"total_tokens", u.prompt_tokens + u.completion_tokens},
          {"prompt_tokens_details",
           {{"cached_tokens", u.cached_tokens}, {"cache_write_tokens", u.prompt_tokens - u.cached_tokens}}}};
}

Json timings_json(const TurnUsage& u) {
  const double gen = static_cast<double>(u.completion_tokens);
  return {{"ttft_ms", u.ttft_seconds * 1e3},
          {"prompt_ms", u.prefill_seconds * 1e3},
          {"predicted_ms", u.decode_seconds * 1e3},
          {"predicted_per_second", u.decode_seconds > 0 && gen > 1 ? (gen - 1) / u.decode_seconds : 0.0}};
}

std::string token_text(const std::string& bytes) {
  // Round-trip through the replacing serializer: invalid UTF-8 becomes U+FFFD.
  return Json::parse(Json(bytes).dump(-1, ' ', false, Json::error_handler_t::replace)).get<std::string>();
}

namespace {
Json bytes_json(const std::string& b) {
  Json a = Json::array();
  for (unsigned char c : b) a.push_back(c);
  return a;
}
}  // namespace

Json chat_logprob(const TurnEvent& e) {
  Json top = Json::array();
  for (const auto& a : e.top)
    top.push_back({{"token", token_text(a.bytes)}, {"logprob", a.logprob}, {"bytes", bytes_json(a.bytes)}});
  return {{"token", token_text(e.token.bytes)},
          {"logprob", e.token.logprob},
          {"bytes", bytes_json(e.token.bytes)},
          {"top_logprobs", top}};
}

long long next_response_number() {
  static std::atomic<long long> n{0};
  return ++n;
}

long long unix_now() {
  return std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count();
}

}  // namespace ds4::server
