#include "server/http_io.h"

#include <algorithm>
#include <atomic>
#include <chrono>

#include "server/peer_watch.h"

namespace ds4::server {

namespace {
std::atomic<double> g_keepalive{kKeepaliveSeconds};
}  // namespace

void set_keepalive_seconds(double s) { g_keepalive.store(s); }

std::string dump(const Json& j) { return j.dump(-1, ' ', false, Json::error_handler_t::replace); }

void send_json(httplib::Response& res, int status, const Json& body) {
  res.status = status;
  res.set_content(dump(body) + "\n", "application/json");
}

Json openai_error_body(const ApiError& e) {
  Json err = {{"message", e.what()}, {"type", e.type()}};
  err["param"] = e.param.empty() ? Json(nullptr) : Json(e.param);
  err["code"] = e.code.empty() ? Json(nullptr) : Json(e.code);
  for (auto it = e.extra.begin(); it != e.extra.end(); ++it) err[it.key()] = it.value();
  return {{"error", err}};
}

bool SseWriter::raw(const std::string& s) {
  if (!ok_) return false;
  if (!sink_.write(s.data(), s.size())) ok_ = false;
  written_ += s.size();
  return ok_;
}

void stream_turn(httplib::Response& res, std::shared_ptr<TurnStream> stream, std::function<bool(SseWriter&)> begin,
                 StreamHandler on_event) {
  res.set_header("Cache-Control", "no-cache");
  res.set_chunked_content_provider(
      "text/event-stream",
      [stream, begin = std::move(begin), on_event = std::move(on_event)](size_t, httplib::DataSink& sink) {
        using Clock = std::chrono::steady_clock;
        SseWriter w(sink);
        if (begin && !begin(w)) {
          stream->cancel();
          return false;
        }
        auto last_write = Clock::now();
        while (!stream->done()) {
          // Events that write nothing (prefill progress) do not count as
          // activity: the client needs bytes to know the server is alive.
          if (std::chrono::duration<double>(Clock::now() - last_write).count() >= g_keepalive.load()) {
            if (!w.comment("prefill")) break;
            last_write = Clock::now();
          }
          auto ev = stream->next(std::chrono::milliseconds(std::clamp<int64_t>(
              static_cast<int64_t>(g_keepalive.load() * 250.0), 10, 250)));
          if (!ev) {
            continue;
          }
          const size_t before = w.written();
          const bool go_on = on_event(w, *ev);
          if (!w.ok()) break;
          if (w.written() != before) last_write = Clock::now();
          if (!go_on) break;
        }
        if (!stream->done() || !w.ok()) {
          stream->cancel();  // the client went away or the adapter gave up
          return false;
        }
        sink.done();
        return true;
      });
}

TurnEvent wait_done(const httplib::Request& req, TurnStream& s, std::vector<TurnEvent>* logprobs) {
  using Clock = std::chrono::steady_clock;
  const PeerWatch peer(req);
  auto checked = Clock::now();
  for (;;) {
    auto ev = s.next(std::chrono::milliseconds(250));
    // Tokens may arrive without pause, so the check goes by the clock.
    if (Clock::now() - checked >= std::chrono::milliseconds(250)) {
      checked = Clock::now();
      if (peer.gone()) s.cancel();  // Done (cancelled) follows within a step
    }
    if (!ev) continue;
    if (ev->kind == TurnEvent::Kind::Logprob && logprobs) logprobs->push_back(std::move(*ev));
    if (ev->kind == TurnEvent::Kind::Done) return std::move(*ev);
  }
}

}  // namespace ds4::server
