#pragma once
// Runs Turns on the scheduler: renders and tokenizes a Turn (on the calling
// HTTP thread: the tokenizer is read-only and shared), submits it, and hands
// back a TurnStream of TurnEvents. The request's sink, on the scheduler
// thread, runs the DSML stream parser (chat::StreamParser) over the decoded
// text and asks the scheduler to stop at a tool block's end marker.
#include <chrono>
#include <memory>
#include <optional>
#include <vector>

#include "engine/scheduler.h"
#include "server/event_queue.h"
#include "server/tool_memory.h"
#include "server/turn.h"

namespace ds4::server {

struct RunnerOptions {
  int64_t default_max_tokens = 32768;
  // Test hook (--test-script): every turn's reply is these tokens.
  std::vector<int32_t> scripted_reply;
};

class TurnStream {
 public:
  TurnStream(std::shared_ptr<EventQueue<TurnEvent>> q, std::shared_ptr<engine::RequestHandle> h)
      : q_(std::move(q)), h_(std::move(h)) {}
  ~TurnStream() { cancel(); }  // a stream nobody reads frees its slot
  TurnStream(const TurnStream&) = delete;
  TurnStream& operator=(const TurnStream&) = delete;

  // The next event, or nothing after `timeout`. After Done, nothing more comes.
  std::optional<TurnEvent> next(std::chrono::milliseconds timeout) {
    if (done_) return std::nullopt;
    auto e = q_->pop(timeout);
    if (e && e->kind == TurnEvent::Kind::Done) done_ = true;
    return e;
  }
  bool done() const { return done_; }
  void cancel() {
    if (!done_) h_->cancel();
  }

 private:
  std::shared_ptr<EventQueue<TurnEvent>> q_;
  std::shared_ptr<engine::RequestHandle> h_;
  bool done_ = false;
};

class TurnRunner {
 public:
  TurnRunner(engine::Scheduler& sched, RunnerOptions opt);
  // Throws ApiError: 400 context_length_exceeded when the prompt does not fit,
  // 400 for a `ds4_steering` naming an unknown set or scales without a set.
  // `param` names the request field holding the prompt ("messages", "prompt", "input").
  PreparedTurn prepare(const Turn& t, std::string_view param) const;
  // Rendering and tokenizing alone (no context check, no token limit): what
  // prepare() runs, for counting a prompt (Anthropic count_tokens).
  PreparedTurn render(const Turn& t) const;
  // Throws ApiError 503 when the queue is full or the server is stopping.
  std::unique_ptr<TurnStream> start(const Turn& t, const PreparedTurn& p);

  const tokenizer::Tokenizer& tokenizer() const { return sched_.tokenizer(); }
  int64_t ctx_size() const { return sched_.options().ctx_size; }
  int64_t default_max_tokens() const { return opt_.default_max_tokens; }
  // Rendered segments to ids: specials by id, text as plain BPE (user text
  // never becomes control tokens).
  std::vector<int32_t> encode(const chat::Segments& segs) const;

 private:
  // The turn's ds4_steering against the server's direction sets
  // (docs/steering.md), into p.steering and p.steering_vector.
  void resolve_steering(const Turn& t, PreparedTurn& p) const;
  std::string steering_names() const;
  const engine::SteeringSet* steering_set(std::string_view name) const;

  engine::Scheduler& sched_;
  RunnerOptions opt_;
  // Tool call id -> the DSML block the model sampled; shared with the sinks,
  // which may outlive a request's handler.
  std::shared_ptr<ToolMemory> tools_ = std::make_shared<ToolMemory>();
};

}  // namespace ds4::server
