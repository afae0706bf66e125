#include "engine/scheduler.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>

#include <xxhash.h>

#include "engine/prefix_match.h"
#include "engine/stop_matcher.h"
#include "tokenizer/tokenizer.h"
#include "util/error.h"
#include "util/log.h"

namespace ds4::engine {

std::string_view finish_name(Finish f) {
  switch (f) {
    case Finish::eos: return "eos";
    case Finish::stop_string: return "stop";
    case Finish::sink: return "sink";
    case Finish::length: return "length";
    case Finish::context_full: return "context_full";
    case Finish::cancelled: return "cancelled";
    case Finish::error: return "error";
  }
  return "error";
}

namespace {
using Clock = std::chrono::steady_clock;
double secs(Clock::time_point a, Clock::time_point b) { return std::chrono::duration<double>(b - a).count(); }
}  // namespace

struct Scheduler::Job {
  GenRequest req;
  std::shared_ptr<RequestHandle> handle;
  uint64_t seq = 0;
  Clock::time_point submitted;
};

// A slot: one session kept across requests, plus the run state of the request
// it currently serves (if any).
struct Scheduler::Slot {
  std::unique_ptr<backend::SessionState> state;
  std::vector<int32_t> history;  // the tokens `state` holds, in order
  backend::Steering steer;       // the steering `history` was computed with
  uint64_t variant = 0;          // its prefix cache variant (Scheduler::cache_variant)
  uint64_t last_used = 0;

  std::unique_ptr<Job> job;  // null: idle
  size_t prefill_pos = 0;    // next prompt token to feed
  int64_t cached = 0;        // prompt tokens found in `history` when the job came
  std::string cache_source;  // slot, ram, disk or none
  std::string cache_explain; // for the request's log line: where its prefix came from, or why it missed
  int64_t cold_at = -1;      // where this prefill stops to store a cold checkpoint (-1: none)
  std::optional<int32_t> unfed;
  std::optional<Sampler> sampler;
  std::optional<tokenizer::StreamDecoder> dec;
  std::optional<StopMatcher> stop;
  int64_t generated = 0;
  size_t forced_pos = 0;
  bool greedy_next = false;
  Clock::time_point taken, first_token;
  bool have_first = false;
  std::vector<float> logits;

  bool prefilling() const { return job && prefill_pos < job->req.prompt.size(); }
};

Scheduler::Scheduler(std::unique_ptr<Engine> engine, const SchedulerOptions& opt)
    : engine_(std::move(engine)), opt_(opt) {
  if (opt_.parallel < 1) fail("invalid parallel slot count {} (must be >= 1)", opt_.parallel);
  if (opt_.ctx_size < 2) fail("invalid context size {} (must be >= 2)", opt_.ctx_size);
  if (opt_.batch_tokens < 1) fail("invalid batch token budget {} (must be >= 1)", opt_.batch_tokens);
  if (opt_.max_queue < 0) fail("invalid queue limit {} (must be >= 0)", opt_.max_queue);
  for (int i = 0; i < opt_.parallel; ++i) slots_.push_back(std::make_unique<Slot>());
  stats_.parallel = opt_.parallel;
  thread_ = std::thread([this] { loop(); });
}

Scheduler::~Scheduler() { shutdown(); }

std::shared_ptr<RequestHandle> Scheduler::submit(GenRequest req) {
  if (req.prompt.empty()) fail("empty prompt");
  const auto n = static_cast<int64_t>(req.prompt.size());
  // One position must stay free for the first generated token.
  if (n >= opt_.ctx_size) fail("Prompt has {} tokens, but the configured context size is {} tokens", n, opt_.ctx_size);
  const auto vocab = static_cast<int64_t>(engine_->model().config.n_vocab);
  for (int32_t t : req.prompt)
    if (t < 0 || t >= vocab) fail("prompt token id {} is outside the vocabulary (0..{})", t, vocab - 1);
  if (!req.sink) fail("request without a sink");
  auto job = std::make_unique<Job>();
  job->req = std::move(req);
  job->handle = std::make_shared<RequestHandle>();
  job->submitted = Clock::now();
  auto handle = job->handle;
  {
    std::lock_guard lk(mu_);
    if (stop_) fail("server shutting down");
    const int64_t queued = stats_.queue_length + static_cast<int64_t>(incoming_.size());
    const int64_t free_slots = opt_.parallel - stats_.active;
    if (queued - free_slots >= opt_.max_queue) fail("server busy: {} requests are already waiting", queued);
    incoming_.push_back(std::move(job));
  }
  cv_.notify_one();
  return handle;
}

SchedulerStats Scheduler::stats() const {
  std::lock_guard lk(mu_);
  SchedulerStats s = stats_;
  s.queue_length += static_cast<int64_t>(incoming_.size());
  return s;
}

void Scheduler::shutdown() {
  {
    std::lock_guard lk(mu_);
    if (stop_ && !thread_.joinable()) return;
    stop_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void Scheduler::loop() {
  bool busy = false;
  for (;;) {
    std::vector<std::unique_ptr<Job>> incoming;
    bool stopping;
    {
      std::unique_lock lk(mu_);
      if (!busy) cv_.wait(lk, [&] { return stop_ || !incoming_.empty(); });
      incoming.swap(incoming_);
      stopping = stop_;
    }
    for (auto& j : incoming) {
      j->seq = ++next_seq_;
      waiting_.push_back(std::move(j));
    }
    if (stopping) break;
    busy = step();
  }
  // Shutdown: nobody is left waiting forever.
  for (auto& s : slots_)
    if (s->job) finish(*s, Finish::cancelled, "server shutting down");
  // Live sessions go to the prefix cache, then RAM-only entries to disk, so a
  // restarted server resumes them.
  if (opt_.cache) {
    for (auto& s : slots_) checkpoint(*s, SaveReason::shutdown);
    opt_.cache->flush();
  }
  for (auto& j : waiting_) {
    FinishInfo f;
    f.reason = Finish::cancelled;
    f.message = "server shutting down";
    f.usage.prompt_tokens = static_cast<int64_t>(j->req.prompt.size());
    j->req.sink->on_finish(f);
  }
  waiting_.clear();
  std::lock_guard lk(mu_);
  stats_.queue_length = 0;
  stats_.active = 0;
}

bool Scheduler::step() {
  // Cancelled requests leave first, waiting or running.
  for (auto& s : slots_)
    if (s->job && s->job->handle->cancelled()) finish(*s, Finish::cancelled, "cancelled");
  for (auto it = waiting_.begin(); it != waiting_.end();) {
    if ((*it)->handle->cancelled()) {
      FinishInfo f;
      f.reason = Finish::cancelled;
      f.message = "cancelled";
      f.usage.prompt_tokens = static_cast<int64_t>((*it)->req.prompt.size());
      (*it)->req.sink->on_finish(f);
      it = waiting_.erase(it);
    } else {
      ++it;
    }
  }

  // Waiting requests take idle slots: the slot whose history is the longest
  // prefix of the prompt (and shorter than it, since the last prompt token
  // must be fed to get logits), else one whose history spells the prompt's
  // start (prefix_match.h), else the least recently used one. A session
  // cannot be rewound (its compressed KV rows summarize the past), so only a
  // whole history can be reused (docs/server.md).
  while (!waiting_.empty()) {
    Job& job = *waiting_.front();
    const auto& prompt = job.req.prompt;
    Slot* best = nullptr;
    Slot* lru = nullptr;
    for (auto& sp : slots_) {
      Slot& s = *sp;
      if (s.job) continue;
      if (!lru || s.last_used < lru->last_used) lru = &s;
      if (s.state && !s.history.empty() && s.history.size() < prompt.size() && s.steer == job.req.steering &&
          std::equal(s.history.begin(), s.history.end(), prompt.begin()) &&
          (!best || s.history.size() > best->history.size()))
        best = &s;
    }
    if (!lru) break;  // every slot is busy
    // The prefix cache may hold a longer prefix than any live slot (among the
    // states computed with this request's steering).
    PrefixCache::Lookup hit;
    std::string explain;
    const uint64_t variant = cache_variant(job.req.steering);
    if (opt_.cache) {
      hit = opt_.cache->lookup(prompt, static_cast<int64_t>(prompt.size()) - 1, variant);
      explain = "cache " + hit.explain;
      if (hit.matched <= (best ? static_cast<int64_t>(best->history.size()) : 0)) {
        hit.handle.release();
        hit.matched = 0;
      } else {
        best = nullptr;  // the cache's prefix is longer: restore it; the live slot keeps its own conversation
      }
    } else {
      explain = "prefix cache off";
    }
    bool by_text = false;
    if (!best && hit.matched == 0 && job.req.segments) {
      // No slot holds a token prefix; one may still spell the prompt's start.
      std::optional<std::vector<int32_t>> extended;
      for (auto& sp : slots_) {
        Slot& s = *sp;
        if (s.job || !s.state || s.history.empty() || (best && s.history.size() <= best->history.size()) ||
            !(s.steer == job.req.steering))
          continue;
        auto e = extend_by_text(engine_->tokenizer(), s.history, *job.req.segments);
        if (e && static_cast<int64_t>(e->size()) < opt_.ctx_size) {
          best = &s;
          extended = std::move(e);
        }
      }
      if (best) {
        job.req.prompt = std::move(*extended);
        by_text = true;
      }
    }
    Slot& s = best ? *best : *lru;
    s.job = std::move(waiting_.front());
    waiting_.pop_front();
    s.cached = 0;  // until known (an error below reports this request, not the last one)
    s.generated = 0;
    s.have_first = false;
    s.taken = Clock::now();
    s.cache_source = best ? "slot" : "none";
    s.cache_explain = best ? fmt::format("live slot holds {} prompt tokens{}", best->history.size(),
                                         by_text ? " (matched by text: the client re-tokenized the history)" : "")
                           : explain;
    if (!best) {
      checkpoint(s, SaveReason::evict);  // the slot's conversation may come back
      s.state.reset();  // free the old session's memory before taking the new one
      s.history.clear();
      try {
        s.state = engine_->backend().new_session(backend::SessionOptions{engine_->numerics(), opt_.ctx_size});
        if (hit.matched > 0) {
          std::string extra, why;
          if (opt_.cache->restore(hit.handle, *s.state, &s.history, &extra, &why)) {
            s.cache_source = std::string(tier_name(hit.tier));
            if (!extra.empty() && extra_hooks_.restored) extra_hooks_.restored(extra);
          } else {
            // A half-loaded state is unusable: start over from nothing.
            log::warn("ds4 serve: prefix cache restore failed, prefilling from the start: {}", why);
            s.cache_explain += "; restore failed: " + why;
            s.history.clear();
            s.state.reset();
            s.state = engine_->backend().new_session(backend::SessionOptions{engine_->numerics(), opt_.ctx_size});
            std::lock_guard lk(mu_);
            ++stats_.cache_restore_failures;
          }
        }
      } catch (const std::exception& e) {
        hit.handle.release();
        s.history.clear();
        finish(s, Finish::error, e.what());
        continue;
      }
      hit.handle.release();
    }
    const GenRequest& r = s.job->req;
    s.steer = r.steering;
    s.variant = variant;
    s.cached = static_cast<int64_t>(s.history.size());
    s.prefill_pos = s.history.size();
    // A prompt prefilled from nothing stores a checkpoint on the way (at the
    // chat anchor: system prompt and tools, shared by an agent's sessions).
    s.cold_at = opt_.cache && s.cached == 0
                    ? opt_.cache->cold_checkpoint(static_cast<int64_t>(r.prompt.size()), chat_anchor(r.prompt))
                    : -1;
    s.unfed.reset();
    s.sampler.emplace(r.sampling);
    s.dec.emplace(engine_->tokenizer());
    s.stop.emplace(r.stop);
    s.generated = 0;
    s.forced_pos = 0;
    s.greedy_next = false;
    s.have_first = false;
    s.taken = Clock::now();
    s.logits.assign(engine_->model().config.n_vocab, 0.0f);
    if (best) {
      std::lock_guard lk(mu_);
      ++stats_.prefix_hits;
    }
  }

  // Build the batch: every decoding slot's token, then prompt chunks in
  // arrival order while the budget lasts.
  std::vector<backend::SeqStep> batch;
  std::vector<Slot*> owners;
  std::vector<int32_t> decode_tokens(slots_.size());
  int64_t n_decode = 0, n_prefill = 0;
  for (size_t i = 0; i < slots_.size(); ++i) {
    Slot& s = *slots_[i];
    if (!s.job || !s.unfed) continue;
    decode_tokens[i] = *s.unfed;
    batch.push_back(
        {s.state.get(), std::span<const int32_t>(&decode_tokens[i], 1), backend::Logits::last, s.logits, s.steer});
    owners.push_back(&s);
    ++n_decode;
  }
  std::vector<Slot*> pre;
  for (auto& sp : slots_)
    if (sp->prefilling()) pre.push_back(sp.get());
  std::sort(pre.begin(), pre.end(), [](const Slot* a, const Slot* b) { return a->job->seq < b->job->seq; });
  // At least one prompt token per step, so prompts move even when decoding
  // fills the budget.
  int64_t budget = std::max<int64_t>(1, opt_.batch_tokens - n_decode);
  for (Slot* s : pre) {
    if (budget <= 0) break;
    const auto& prompt = s->job->req.prompt;
    auto n = std::min<int64_t>(budget, static_cast<int64_t>(prompt.size() - s->prefill_pos));
    // Chunks end where a checkpoint is due, so the state there can be stored.
    const auto pos = static_cast<int64_t>(s->prefill_pos);
    if (s->cold_at > pos) n = std::min(n, s->cold_at - pos);
    if (opt_.cache)
      if (const int64_t at = opt_.cache->next_checkpoint(pos, pos + n); at > 0) n = at - pos;
    const bool last = s->prefill_pos + static_cast<size_t>(n) == prompt.size();
    batch.push_back({s->state.get(), std::span<const int32_t>(prompt).subspan(s->prefill_pos, static_cast<size_t>(n)),
                     last ? backend::Logits::last : backend::Logits::none,
                     last ? std::span<float>(s->logits) : std::span<float>(), s->steer});
    owners.push_back(s);
    budget -= n;
    n_prefill += n;
  }
  if (batch.empty()) {
    std::lock_guard lk(mu_);
    stats_.queue_length = static_cast<int64_t>(waiting_.size());
    stats_.active = 0;
    return !waiting_.empty();
  }

  const auto t0 = Clock::now();
  try {
    engine_->backend().forward(batch);
  } catch (const std::exception& e) {
    log::warn("ds4 serve: forward failed for a batch of {} sequences: {}", batch.size(), e.what());
    for (Slot* s : owners) {
      finish(*s, Finish::error, e.what());
      s->state.reset();  // its state is unknown now
      s->history.clear();
    }
    return true;
  }
  const double dt = secs(t0, Clock::now());
  {
    std::lock_guard lk(mu_);
    const double total = static_cast<double>(n_decode + n_prefill);
    stats_.prefill_seconds += dt * static_cast<double>(n_prefill) / total;
    stats_.decode_seconds += dt * static_cast<double>(n_decode) / total;
    stats_.prompt_tokens += n_prefill;
    ++stats_.steps;
    stats_.last_batch_seqs = static_cast<int64_t>(batch.size());
    stats_.max_batch_seqs = std::max(stats_.max_batch_seqs, stats_.last_batch_seqs);
  }

  for (size_t i = 0; i < batch.size(); ++i) {
    Slot& s = *owners[i];
    s.history.insert(s.history.end(), batch[i].tokens.begin(), batch[i].tokens.end());
    if (static_cast<int64_t>(i) < n_decode) {
      s.unfed.reset();
    } else {
      s.prefill_pos += batch[i].tokens.size();
      const auto total = static_cast<int64_t>(s.job->req.prompt.size()) - s.cached;
      s.job->req.sink->on_prefill(static_cast<int64_t>(s.prefill_pos) - s.cached, total);
    }
    // Cold and periodic checkpoints (docs/prefix-cache.md), before sampling
    // may end the request; the state is exactly `history` here.
    if (opt_.cache) {
      const auto at = static_cast<int64_t>(s.history.size());
      if (at == s.cold_at)
        checkpoint(s, SaveReason::cold);
      else if (opt_.cache->should_checkpoint(at))
        checkpoint(s, SaveReason::continued);
    }
    if (batch[i].want == backend::Logits::last) sample_into(s, s.logits);
  }

  std::lock_guard lk(mu_);
  stats_.queue_length = static_cast<int64_t>(waiting_.size());
  stats_.active = 0;
  for (auto& s : slots_) stats_.active += s->job ? 1 : 0;
  return true;
}

void Scheduler::sample_into(Slot& s, std::span<float> logits) {
  const GenRequest& r = s.job->req;
  if (s.job->handle->cancelled()) return finish(s, Finish::cancelled, "cancelled");
  if (s.generated >= r.max_tokens) return finish(s, Finish::length);
  // Ids past the tokenizer's vocabulary (padding rows) cannot be decoded.
  const size_t tok_vocab = engine_->tokenizer().vocab_size();
  for (size_t i = tok_vocab; i < logits.size(); ++i) logits[i] = -std::numeric_limits<float>::infinity();
  const int32_t eos = engine_->specials().eos;

  int32_t tok;
  if (!r.forced.empty())
    tok = s.forced_pos < r.forced.size() ? r.forced[s.forced_pos++] : eos;
  else if (s.greedy_next)
    tok = Sampler::argmax(logits);
  else
    tok = s.sampler->sample(logits);

  const auto now = Clock::now();
  if (!s.have_first) {
    s.have_first = true;
    s.first_token = now;
    std::lock_guard lk(mu_);
    stats_.ttft_seconds_sum += secs(s.job->submitted, now);
    ++stats_.ttft_count;
  }
  if (tok == eos) return finish(s, Finish::eos);

  TokenOut out;
  out.id = tok;
  if (r.top_logprobs >= 0) {
    // log-softmax of the model's own distribution (temperature 1), as OpenAI reports it.
    const float mx = *std::max_element(logits.begin(), logits.end());
    double sum = 0;
    for (float l : logits) sum += std::exp(static_cast<double>(l - mx));
    const auto lse = static_cast<float>(static_cast<double>(mx) + std::log(sum));
    out.logprob = logits[static_cast<size_t>(tok)] - lse;
    const size_t k = std::min<size_t>(static_cast<size_t>(r.top_logprobs), tok_vocab);
    if (k > 0) {
      std::vector<int32_t> idx(tok_vocab);
      std::iota(idx.begin(), idx.end(), 0);
      std::partial_sort(idx.begin(), idx.begin() + static_cast<std::ptrdiff_t>(k), idx.end(), [&](int32_t a, int32_t b) {
        const float la = logits[static_cast<size_t>(a)], lb = logits[static_cast<size_t>(b)];
        return la > lb || (la == lb && a < b);
      });
      for (size_t j = 0; j < k; ++j) out.top.push_back({idx[j], logits[static_cast<size_t>(idx[j])] - lse});
    }
  }
  ++s.generated;
  out.text = s.stop->push(s.dec->push(tok));
  const bool hit = s.stop->hit();
  const Verdict v = s.job->req.sink->on_token(out);
  s.greedy_next = v.greedy_next;
  if (hit) return finish(s, Finish::stop_string);
  if (v.stop) return finish(s, Finish::sink);
  if (s.generated >= r.max_tokens) return finish(s, Finish::length);
  // The sequence (history + this token) may not outgrow the context, so a
  // reply never holds more than ctx - prompt tokens (reference-behavior §3.6).
  if (static_cast<int64_t>(s.history.size()) + 1 >= opt_.ctx_size)
    return finish(s, Finish::context_full, fmt::format("context full ({} tokens): generation stopped", opt_.ctx_size));
  s.unfed = tok;
}

void Scheduler::finish(Slot& s, Finish why, std::string message) {
  FinishInfo f;
  f.reason = why;
  f.message = std::move(message);
  const GenRequest& r = s.job->req;
  // Release held-back text, except after a stop string (the rest is cut) or
  // when nobody listens any more.
  if (why != Finish::stop_string && why != Finish::cancelled && why != Finish::error && s.dec && s.stop) {
    f.tail = s.stop->push(s.dec->flush());
    if (s.stop->hit()) {
      f.reason = Finish::stop_string;
    } else {
      f.tail += s.stop->flush();
    }
  }
  if (f.reason == Finish::stop_string && s.stop) f.stop_string = s.stop->matched();
  const auto now = Clock::now();
  Usage& u = f.usage;
  u.prompt_tokens = static_cast<int64_t>(r.prompt.size());
  u.cached_tokens = s.cached;
  u.cache_source = s.cached > 0 ? s.cache_source : "none";
  u.completion_tokens = s.generated;
  u.queue_seconds = secs(s.job->submitted, s.taken);
  u.prefill_seconds = secs(s.taken, s.have_first ? s.first_token : now);
  u.decode_seconds = s.have_first ? secs(s.first_token, now) : 0.0;
  u.ttft_seconds = s.have_first ? secs(s.job->submitted, s.first_token) : 0.0;
  // One line per request (reference-behavior §3.15 keeps one too).
  log::info("ds4 serve: request done: prompt={} cached={} from={} gen={} finish={}{}{} queue={:.3f}s ttft={:.3f}s prefill={:.1f} t/s decode={:.1f} t/s ({})",
            u.prompt_tokens, u.cached_tokens, u.cache_source, u.completion_tokens, finish_name(f.reason),
            f.message.empty() ? "" : " msg=", f.message, u.queue_seconds, u.ttft_seconds,
            u.prefill_seconds > 0 ? static_cast<double>(u.prompt_tokens - u.cached_tokens) / u.prefill_seconds : 0.0,
            u.decode_seconds > 0 && u.completion_tokens > 1 ? static_cast<double>(u.completion_tokens - 1) / u.decode_seconds
                                                            : 0.0,
            s.cache_explain);
  const std::shared_ptr<RequestSink> sink = r.sink;
  s.job.reset();
  s.unfed.reset();
  s.last_used = ++lru_clock_;
  {
    // Counted before the sink hears of it, so a client that reads /metrics
    // right after its response sees its own request.
    std::lock_guard lk(mu_);
    ++stats_.requests_done;
    stats_.generated_tokens += u.completion_tokens;
    stats_.cached_tokens += u.cached_tokens;
    if (u.cache_source == "slot") stats_.cached_tokens_slot += u.cached_tokens;
    if (u.cache_source == "ram") stats_.cached_tokens_ram += u.cached_tokens;
    if (u.cache_source == "disk") stats_.cached_tokens_disk += u.cached_tokens;
    stats_.active = 0;
    for (auto& sl : slots_) stats_.active += sl->job ? 1 : 0;
  }
  sink->on_finish(f);
}

std::optional<PrefixCacheStats> Scheduler::cache_stats() const {
  if (!opt_.cache) return std::nullopt;
  return opt_.cache->stats();
}

// Stores a slot's whole state in the prefix cache when it is worth keeping:
// the cache decides (too short, already cached, over budget), and a failed
// write is its problem, not the request's.
void Scheduler::checkpoint(Slot& s, SaveReason why) {
  if (!opt_.cache || !s.state || s.history.empty() ||
      static_cast<int64_t>(s.history.size()) < opt_.cache->options().min_tokens)
    return;
  std::string extra;
  if (extra_hooks_.make) extra = extra_hooks_.make(s.history);
  try {
    opt_.cache->store(*s.state, s.history, why, std::move(extra), s.variant);
  } catch (const std::exception& e) {
    log::warn("ds4 serve: prefix cache store failed: {}", e.what());
  }
}

uint64_t Scheduler::cache_variant(const backend::Steering& st) {
  if (!st.active()) return 0;
  const model::SteeringVectors* v = engine_->backend().steering_for(st);
  uint64_t& dirs = dir_hash_[v];
  if (dirs == 0 && v) dirs = XXH3_64bits(v->dirs.data(), v->dirs.size() * sizeof(float)) | 1;
  // +0.0f: a zero scale of either sign computes the same thing.
  const float scales[2] = {st.attn + 0.0f, st.ffn + 0.0f};
  const uint64_t h = XXH3_64bits_withSeed(scales, sizeof scales, dirs);
  return h ? h : 1;
}

// The end of the part of a chat prompt that every conversation of one agent
// shares: the last User marker before the first Assistant marker (system
// prompt, tools and leading scaffolding). -1 when the prompt has no such marker.
int64_t Scheduler::chat_anchor(std::span<const int32_t> prompt) const {
  const SpecialIds& ids = engine_->specials();
  int64_t anchor = -1;
  for (size_t i = 0; i < prompt.size(); ++i) {
    if (prompt[i] == ids.assistant) break;
    if (prompt[i] == ids.user) anchor = static_cast<int64_t>(i);
  }
  return anchor;
}

}  // namespace ds4::engine
