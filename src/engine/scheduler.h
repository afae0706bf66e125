#pragma once
// The server's scheduler (docs/ARCHITECTURE.md §7, docs/server.md): it owns the
// Engine and one thread that steps every active request together through the
// batched forward. Each step is ONE Backend::forward over a batch holding the
// next token of every decoding request plus prompt chunks of requests still
// prefilling, under a token budget. `parallel` slots each keep their own
// session after a request ends, so a later request whose prompt extends a
// slot's token history prefills only the suffix (prefix reuse).
//
// Requests talk to the rest of the server through a RequestSink whose methods
// run on the scheduler thread; the server's sink turns them into events on a
// thread-safe queue that an HTTP thread drains. Nothing outside this thread
// ever touches the engine's backend or sessions.
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>
#include <string_view>
#include <thread>
#include <vector>

#include "chat/chat.h"
#include "engine/engine.h"
#include "engine/prefix_cache.h"
#include "engine/sampler.h"

namespace ds4::engine {

// Why a request ended.
enum class Finish {
  eos,           // the model sampled EOS (or a scripted reply ran out)
  stop_string,   // one of the request's stop strings was generated
  sink,          // the sink asked to stop (e.g. the DSML end marker was seen)
  length,        // max_tokens reached
  context_full,  // the slot's context has no room for the next token
  cancelled,     // the client went away or the request was cancelled
  error,         // the forward pass failed
};
std::string_view finish_name(Finish f);

struct TokenLogprob {
  int32_t id = -1;
  float logprob = 0;
};

// One sampled token as the sink sees it.
struct TokenOut {
  int32_t id = -1;
  std::string text;  // decoded text now safe to show (after UTF-8 and stop-string holdback); may be empty
  float logprob = 0;                 // of `id` under the model's distribution (only when logprobs asked)
  std::vector<TokenLogprob> top;     // the request's top_logprobs best alternatives
};

struct Usage {
  int64_t prompt_tokens = 0;
  int64_t cached_tokens = 0;  // prompt tokens not prefilled: from a live slot or the prefix cache
  std::string cache_source = "none";  // where they came from: slot, ram, disk or none
  int64_t completion_tokens = 0;
  double queue_seconds = 0;   // submit -> taken by a slot
  double prefill_seconds = 0; // taken -> first token sampled
  double decode_seconds = 0;  // first token -> end
  double ttft_seconds = 0;    // submit -> first token
};

struct FinishInfo {
  Finish reason = Finish::eos;
  std::string message;  // error / context_full text
  std::string tail;     // text released at the end (held-back bytes), shown after the last token
  std::string stop_string;  // Finish::stop_string: which one matched
  Usage usage;
};

// What the sink says after each token.
struct Verdict {
  bool stop = false;         // end the request now (Finish::sink)
  bool greedy_next = false;  // sample the next token greedily (DSML structure, reference-behavior §4.7)
};

// Callbacks of one request. All run on the scheduler thread, must be quick and
// must not throw.
class RequestSink {
 public:
  virtual ~RequestSink() = default;
  // Prompt tokens fed so far of the suffix to prefill (after each chunk).
  virtual void on_prefill(int64_t done, int64_t total) = 0;
  virtual Verdict on_token(const TokenOut& t) = 0;
  // Exactly once, last.
  virtual void on_finish(const FinishInfo& f) = 0;
};

struct GenRequest {
  std::vector<int32_t> prompt;  // the whole rendered prompt (prefix reuse is the scheduler's business)
  SamplingParams sampling;
  int64_t max_tokens = 4096;
  std::vector<std::string> stop;
  int top_logprobs = -1;  // < 0: no logprobs; 0..20: logprob of each sampled token plus that many alternatives
  // Test hook: when non-empty these tokens are "sampled" in order (the forward
  // still runs), then EOS.
  std::vector<int32_t> forced;
  // The prompt as rendered segments, when it has them: lets a slot whose
  // history spells the prompt's start in other tokens be reused
  // (engine/prefix_match.h).
  std::shared_ptr<const chat::Segments> segments;
  // Directional steering of this request: scales and direction set
  // (docs/steering.md). A slot's state is reused only by requests whose
  // steering equals the one it was computed with.
  backend::Steering steering;
  std::shared_ptr<RequestSink> sink;
};

// Handle the submitter keeps: cancel() frees the slot within one step.
class RequestHandle {
 public:
  void cancel() { cancelled_.store(true, std::memory_order_relaxed); }
  bool cancelled() const { return cancelled_.load(std::memory_order_relaxed); }

 private:
  std::atomic<bool> cancelled_{false};
};

struct SchedulerOptions {
  int parallel = 1;           // slots (sessions kept for prefix reuse)
  int64_t ctx_size = 4096;    // every slot's context
  int64_t batch_tokens = 512; // most tokens one forward call carries
  int max_queue = 64;         // waiting requests beyond the slots; more are refused
  // The prefix cache shared by every slot (docs/prefix-cache.md): a request
  // no live slot serves resumes from its longest cached prefix; a slot's state
  // is stored before it is replaced, at cold and periodic checkpoints and at
  // shutdown. Null: only live slots are reused. Steered sequences bypass it.
  std::shared_ptr<PrefixCache> cache;
};

// Bytes that travel with a checkpoint (the server's tool-id replay map): made
// from a slot's token history when it is stored, handed back at a restore.
// Both run on the scheduler thread.
struct CacheExtraHooks {
  std::function<std::string(std::span<const int32_t> tokens)> make;
  std::function<void(const std::string& extra)> restored;
};

// Counters for /metrics (a consistent copy).
struct SchedulerStats {
  int64_t requests_done = 0;
  int64_t prompt_tokens = 0;      // prompt tokens actually prefilled (suffixes)
  int64_t cached_tokens = 0;      // prompt tokens not prefilled (all sources)
  int64_t cached_tokens_slot = 0, cached_tokens_ram = 0, cached_tokens_disk = 0;  // ... by source
  int64_t cache_restore_failures = 0;  // cache hits whose restore failed (prefilled cold instead)
  int64_t generated_tokens = 0;
  int64_t prefix_hits = 0;        // requests that reused a slot's prefix
  double prefill_seconds = 0;     // forward time spent on steps with prompt chunks, split by token share
  double decode_seconds = 0;      // ... and on decode tokens
  double ttft_seconds_sum = 0;
  int64_t ttft_count = 0;
  int64_t steps = 0;
  int64_t last_batch_seqs = 0;
  int64_t max_batch_seqs = 0;     // the most sequences one forward call has held
  int64_t queue_length = 0;       // waiting for a slot now
  int64_t active = 0;             // holding a slot now
  int parallel = 0;
};

class Scheduler {
 public:
  // Takes ownership of the engine; creates the slots' sessions lazily.
  Scheduler(std::unique_ptr<Engine> engine, const SchedulerOptions& opt);
  ~Scheduler();  // stops the thread; unfinished requests end as cancelled
  Scheduler(const Scheduler&) = delete;
  Scheduler& operator=(const Scheduler&) = delete;

  // Thread-safe. Throws ds4::Error (nothing queued) for an empty prompt, a
  // prompt that does not fit the context or a full queue; the sink is then
  // never called.
  std::shared_ptr<RequestHandle> submit(GenRequest req);

  const tokenizer::Tokenizer& tokenizer() const { return engine_->tokenizer(); }
  const SpecialIds& specials() const { return engine_->specials(); }
  const model::ModelConfig& config() const { return engine_->model().config; }
  // Steering every request gets unless it asks for its own, and whether
  // directions are loaded at all (a request's scales need them).
  const backend::Steering& default_steering() const { return engine_->default_steering(); }
  bool has_steering() const { return engine_->backend().steering() != nullptr; }
  // The direction sets requests may name (fixed once the engine is built).
  const std::vector<SteeringSet>& steering_sets() const { return engine_->steering_sets(); }
  const SchedulerOptions& options() const { return opt_; }
  SchedulerStats stats() const;
  // The prefix cache's counters (null when there is none).
  std::optional<PrefixCacheStats> cache_stats() const;
  // The prefix cache (null: none); for the server's startup (scanned extras).
  PrefixCache* cache() const { return opt_.cache.get(); }
  // Set before the first submit.
  void set_cache_extra_hooks(CacheExtraHooks h) { extra_hooks_ = std::move(h); }
  // Stops accepting, cancels everything, joins the thread. Idempotent.
  void shutdown();

 private:
  struct Job;
  struct Slot;
  void loop();
  bool step();
  void finish(Slot& s, Finish why, std::string message = {});
  void sample_into(Slot& s, std::span<float> logits);
  void checkpoint(Slot& s, SaveReason why);
  int64_t chat_anchor(std::span<const int32_t> prompt) const;
  // The prefix cache variant of a steering: 0 when inactive, else a hash of
  // its scales and its directions' values (so a restarted server with the
  // same file finds its entries on disk).
  uint64_t cache_variant(const backend::Steering& st);

  std::unique_ptr<Engine> engine_;
  SchedulerOptions opt_;
  std::vector<std::unique_ptr<Slot>> slots_;
  std::deque<std::unique_ptr<Job>> waiting_;

  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::vector<std::unique_ptr<Job>> incoming_;  // under mu_
  bool stop_ = false;                           // under mu_
  SchedulerStats stats_;                        // under mu_
  uint64_t lru_clock_ = 0;
  uint64_t next_seq_ = 0;
  CacheExtraHooks extra_hooks_;
  std::unordered_map<const model::SteeringVectors*, uint64_t> dir_hash_;  // scheduler thread only
  std::thread thread_;
};

}  // namespace ds4::engine
