#pragma once
// Shared HTTP pieces every adapter uses: JSON and error responses, the SSE
// writer (every sink.write checked: a failed write ends the stream and
// cancels the turn), and the loop that drives a TurnStream into a response.
#include <httplib.h>

#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include "server/api_error.h"
#include "server/json_fields.h"
#include "server/turn_runner.h"

namespace ds4::server {

// Serializes for the wire. Generated text can hold bytes that are not UTF-8
// (a random model, a token cut mid-character); those become U+FFFD instead of
// an exception.
std::string dump(const Json& j);

void send_json(httplib::Response& res, int status, const Json& body);
// {"error":{"message","type","param","code",...}} (reference-behavior §3.13).
Json openai_error_body(const ApiError& e);

class SseWriter {
 public:
  explicit SseWriter(httplib::DataSink& sink) : sink_(sink) {}
  bool data(const Json& j) { return raw("data: " + dump(j) + "\n\n"); }
  bool event(std::string_view name, const Json& j) {
    return raw("event: " + std::string(name) + "\ndata: " + dump(j) + "\n\n");
  }
  bool comment(std::string_view text) { return raw(": " + std::string(text) + "\n\n"); }
  bool raw(const std::string& s);
  bool ok() const { return ok_; }
  size_t written() const { return written_; }  // bytes so far

 private:
  httplib::DataSink& sink_;
  bool ok_ = true;
  size_t written_ = 0;
};

// Per-event callback of a streamed turn: writes what the event means in the
// adapter's API; returns false to end the stream early.
using StreamHandler = std::function<bool(SseWriter&, const TurnEvent&)>;

// Starts the SSE response. `begin` runs before the first event (e.g. the role
// chunk). While nothing else is written for kKeepaliveSeconds (queue wait,
// long prefill) a comment line keeps the connection alive (§3.14). A client
// that goes away cancels the turn, freeing its slot within one step.
inline constexpr double kKeepaliveSeconds = 5.0;
// The period actually used (--sse-keepalive; kKeepaliveSeconds by default).
void set_keepalive_seconds(double s);
void stream_turn(httplib::Response& res, std::shared_ptr<TurnStream> stream,
                 std::function<bool(SseWriter&)> begin, StreamHandler on_event);

// Blocks until the turn is done; Logprob events are appended to `logprobs`
// when given. Returns the Done event. The turn is cancelled (its slot freed
// within a second) when the client that sent `req` hangs up meanwhile.
TurnEvent wait_done(const httplib::Request& req, TurnStream& s, std::vector<TurnEvent>* logprobs);

}  // namespace ds4::server
