#include "server/turn_runner.h"

#include "util/log.h"

#include <fmt/format.h>

#include "server/api_error.h"
#include "server/dsml_greedy.h"
#include "server/openai_common.h"
#include "util/error.h"

namespace ds4::server {

namespace {

TurnUsage usage_of(const engine::Usage& u) {
  TurnUsage t;
  t.prompt_tokens = u.prompt_tokens;
  t.cached_tokens = u.cached_tokens;
  t.completion_tokens = u.completion_tokens;
  t.prefill_seconds = u.prefill_seconds;
  t.decode_seconds = u.decode_seconds;
  t.ttft_seconds = u.ttft_seconds;
  return t;
}

// The scheduler-thread side of one turn.
class TurnSink : public engine::RequestSink {
 public:
  TurnSink(std::shared_ptr<EventQueue<TurnEvent>> q, const tokenizer::Tokenizer& tok, const Turn& t,
           const PreparedTurn& p, std::shared_ptr<ToolMemory> memory)
      : q_(std::move(q)),
        memory_(std::move(memory)),
        tok_(tok),
        raw_(t.kind == Turn::Kind::Completion),
        logprobs_(t.top_logprobs >= 0),
        tools_(p.parse_tools),
        steering_(p.steering),
        steering_vector_(p.steering_vector) {
    if (!raw_) parser_.emplace(chat::StreamOptions{p.thinking, p.parse_tools}, chat::IdGenerator(t.id_style));
    if (tools_) greedy_.emplace(p.thinking);
  }

  void on_prefill(int64_t done, int64_t total) override {
    TurnEvent e;
    e.kind = TurnEvent::Kind::Progress;
    e.done = done;
    e.total = total;
    q_->push(std::move(e));
  }

  engine::Verdict on_token(const engine::TokenOut& t) override {
    if (logprobs_) {
      TurnEvent e;
      e.kind = TurnEvent::Kind::Logprob;
      e.token = {tok_.token_bytes(t.id), t.logprob};
      for (const auto& a : t.top) e.top.push_back({tok_.token_bytes(a.id), a.logprob});
      q_->push(std::move(e));
    }
    feed(t.text);
    if (greedy_) greedy_->feed(t.text);
    return {parser_ && parser_->done(), greedy_ && greedy_->greedy()};
  }

  void on_finish(const engine::FinishInfo& f) override {
    feed(f.tail);
    TurnEvent done;
    done.kind = TurnEvent::Kind::Done;
    done.usage = usage_of(f.usage);
    done.usage.steering = steering_;
    done.usage.steering_vector = steering_vector_;
    if (parser_) {
      for (auto& ev : parser_->finish()) push_stream(std::move(ev));
      done.parsed = parser_->result();
      if (!tools_ && !done.parsed.calls.empty()) {
        // Tools are off (none given, or tool_choice "none"): a DSML block the
        // model wrote anyway is text, exactly as it was streamed.
        done.parsed.calls.clear();
        done.parsed.raw_dsml.clear();
        done.parsed.content = shown_text_;
      }
    } else {
      done.parsed.content = raw_text_;
    }
    using F = engine::Finish;
    switch (f.reason) {
      case F::eos:
      case F::stop_string:
      case F::sink: done.finish = TurnFinish::stop; break;
      case F::length:
      case F::context_full: done.finish = TurnFinish::length; break;
      case F::cancelled: done.finish = TurnFinish::cancelled; break;
      case F::error: done.finish = TurnFinish::error; break;
    }
    done.error = f.message;
    done.stop_sequence = f.stop_string;
    if (parser_ && done.finish != TurnFinish::error && done.finish != TurnFinish::cancelled) {
      // §4.8: a tool block that never closed cannot be retracted; the turn fails.
      if (parser_->unterminated()) {
        done.finish = TurnFinish::error;
        done.error = "unterminated tool call";
      } else if (done.parsed.ok && !done.parsed.calls.empty()) {
        done.finish = TurnFinish::tool_calls;
        std::vector<std::string> ids;
        for (const auto& c : done.parsed.calls) ids.push_back(c.id);
        memory_->remember(ids, done.parsed.raw_dsml);
      }
    }
    q_->push(std::move(done));
  }

 private:
  void feed(const std::string& text) {
    if (text.empty()) return;
    if (!parser_) {
      raw_text_ += text;
      chat::StreamEvent ev;
      ev.kind = chat::StreamEvent::Kind::Text;
      ev.text = text;
      push_stream(std::move(ev));
      return;
    }
    for (auto& ev : parser_->feed(text)) push_stream(std::move(ev));
  }
  void push_stream(chat::StreamEvent ev) {
    if (ev.kind == chat::StreamEvent::Kind::Text) shown_text_ += ev.text;
    TurnEvent e;
    e.kind = TurnEvent::Kind::Stream;
    e.stream = std::move(ev);
    q_->push(std::move(e));
  }

  std::shared_ptr<EventQueue<TurnEvent>> q_;
  std::shared_ptr<ToolMemory> memory_;
  tokenizer::Tokenizer tok_;
  bool raw_, logprobs_, tools_;
  std::string shown_text_;  // every Text event so far
  std::optional<chat::StreamParser> parser_;
  std::optional<DsmlGreedyTracker> greedy_;  // with tools: DSML structure sampled greedily
  std::string raw_text_;
  backend::Steering steering_;
  std::string steering_vector_;
};

}  // namespace

TurnRunner::TurnRunner(engine::Scheduler& sched, RunnerOptions opt) : sched_(sched), opt_(std::move(opt)) {
  // The tool-id replay map travels with prefix-cache checkpoints
  // (docs/prefix-cache.md): what the checkpoints on disk carried is known
  // again after a restart, so their conversations render byte for byte.
  if (auto* cache = sched.cache()) {
    size_t loaded = 0;
    for (const auto& e : cache->take_scanned_extras()) loaded += tools_->import(e) ? 1 : 0;
    if (loaded > 0) log::info("ds4 serve: tool-call replay map loaded from {} cached checkpoints", loaded);
    auto tools = tools_;
    const tokenizer::Tokenizer& tok = sched.tokenizer();
    sched.set_cache_extra_hooks({[tools, &tok](std::span<const int32_t> t) { return tools->export_for(tok.decode(t)); },
                                 [tools](const std::string& e) { tools->import(e); }});
  }
}

std::vector<int32_t> TurnRunner::encode(const chat::Segments& segs) const {
  std::vector<int32_t> out;
  const auto& tok = sched_.tokenizer();
  for (const auto& s : segs) {
    if (s.kind == chat::Segment::Kind::Special)
      out.push_back(tok.special_id(s.text));
    else
      tok.encode_append(s.text, out);
  }
  return out;
}

PreparedTurn TurnRunner::render(const Turn& t) const {
  PreparedTurn p;
  const chat::ThinkMode think = chat::effective_think_mode(t.think, ctx_size());
  p.thinking = think != chat::ThinkMode::None;
  chat::Segments segs;
  if (t.kind == Turn::Kind::Completion) {
    segs = chat::render_completion(t.prompt, think);
  } else {
    chat::RenderOptions ro;
    ro.think = think;
    if (t.tools_active) ro.tools = t.tools;
    p.parse_tools = t.tools_active && !t.tools.empty();
    // Calls the client sends back are rendered as the model wrote them when
    // this server handed them out (§4.5); others canonically.
    std::vector<chat::Message> messages = t.messages;
    tools_->apply(messages);
    segs = chat::render_chat(messages, ro);
  }
  p.tokens = encode(segs);
  p.segments = std::make_shared<const chat::Segments>(std::move(segs));
  return p;
}

// "default, a, b": the names a request may give, in the order they were loaded.
std::string TurnRunner::steering_names() const {
  std::string out;
  for (const auto& set : sched_.steering_sets()) out += (out.empty() ? "" : ", ") + set.name;
  return out;
}

const engine::SteeringSet* TurnRunner::steering_set(std::string_view name) const {
  for (const auto& set : sched_.steering_sets())
    if (set.name == name) return &set;
  return nullptr;
}

void TurnRunner::resolve_steering(const Turn& t, PreparedTurn& p) const {
  const engine::SteeringSet* def = steering_set("default");
  if (!t.steering) {
    p.steering = sched_.default_steering();
    p.steering_vector = def ? def->name : "";
  } else if (const SteeringAsk& a = *t.steering; a.vector) {
    const engine::SteeringSet* set = steering_set(*a.vector);
    if (!set && sched_.steering_sets().empty())
      throw ApiError(400,
                     "invalid JSON request: field 'ds4_steering.vector': this server has no steering vectors (start it "
                     "with --dir-steering-vector NAME=FILE or --dir-steering-file FILE)",
                     "ds4_steering.vector");
    if (!set)
      throw ApiError(400,
                     fmt::format("invalid JSON request: field 'ds4_steering.vector': unknown steering vector '{}' "
                                 "(known: {})",
                                 echo_name(*a.vector), steering_names()),
                     "ds4_steering.vector");
    if (!a.ffn && !a.attn) {
      if (!set->scales)
        throw ApiError(400,
                       fmt::format("invalid JSON request: field 'ds4_steering': steering vector '{}' records no "
                                   "recommended scales (recommended_scales in its .json); send 'ffn' and/or 'attn'",
                                   set->name),
                       "ds4_steering");
      p.steering = *set->scales;
    } else {
      p.steering = backend::Steering{a.attn.value_or(0), a.ffn.value_or(0), set->dirs.get()};
    }
    p.steering_vector = set->name;
  } else {
    // Scales alone: the default set, the server's --dir-steering-file.
    p.steering = backend::Steering{a.attn.value_or(0), a.ffn.value_or(0), def ? def->dirs.get() : nullptr};
    if (p.steering.active() && !def)
      throw ApiError(400,
                     sched_.steering_sets().empty()
                         ? std::string("invalid JSON request: 'ds4_steering' needs the server started with "
                                       "--dir-steering-file")
                         : fmt::format("invalid JSON request: 'ds4_steering' without 'vector' uses the server's "
                                       "--dir-steering-file, and none was given; name one of: {}",
                                       steering_names()),
                     "ds4_steering");
    p.steering_vector = "default";
  }
  if (!p.steering.active()) p.steering_vector.clear();
}

PreparedTurn TurnRunner::prepare(const Turn& t, std::string_view param) const {
  PreparedTurn p = render(t);
  const int64_t ctx = ctx_size();
  const auto n = static_cast<int64_t>(p.tokens.size());
  if (n >= ctx) {
    ApiError e(400, fmt::format("Prompt has {} tokens, but the configured context size is {} tokens", n, ctx),
               std::string(param));
    e.code = "context_length_exceeded";
    e.extra = {{"n_prompt_tokens", n}, {"n_ctx", ctx}};
    throw e;
  }
  resolve_steering(t, p);
  const int64_t asked = t.max_tokens ? std::max<int64_t>(0, *t.max_tokens) : opt_.default_max_tokens;
  p.max_tokens = std::min(asked, ctx - n);
  return p;
}

std::unique_ptr<TurnStream> TurnRunner::start(const Turn& t, const PreparedTurn& p) {
  auto q = std::make_shared<EventQueue<TurnEvent>>();
  engine::GenRequest r;
  r.prompt = p.tokens;
  r.sampling = t.sampling;
  // §3.6: in thinking mode the client's sampling knobs are ignored.
  if (p.thinking) r.sampling = engine::SamplingParams{};
  r.max_tokens = p.max_tokens;
  r.stop = t.stop;
  r.top_logprobs = t.top_logprobs;
  r.forced = opt_.scripted_reply;
  r.segments = p.segments;
  r.steering = p.steering;
  r.sink = std::make_shared<TurnSink>(q, sched_.tokenizer(), t, p, tools_);
  std::shared_ptr<engine::RequestHandle> h;
  try {
    h = sched_.submit(std::move(r));
  } catch (const Error& e) {
    throw ApiError(503, e.what());
  }
  return std::make_unique<TurnStream>(std::move(q), std::move(h));
}

}  // namespace ds4::server
