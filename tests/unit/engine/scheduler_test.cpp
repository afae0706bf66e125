// The server's scheduler on a random-weight V4-architecture model with the real
// tokenizer. The oracle is engine::generate (the CLI's loop: one sequence, one
// session, its own sampler): requests batched together must produce exactly
// the tokens each produces alone there; prefix reuse must equal a cold start;
// limits, stop strings and cancellation must end requests cleanly.
#include <gtest/gtest.h>
#include <unistd.h>

#include <condition_variable>
#include <filesystem>
#include <mutex>

#include "engine/generate.h"
#include "engine/prefix_cache.h"
#include "engine/prefix_match.h"
#include "engine/prompt.h"
#include "engine/scheduler.h"
#include "model/synth.h"
#include "util/error.h"

namespace ds4::engine {
namespace {

namespace fs = std::filesystem;

// Collects what the scheduler reports for one request.
class Collect : public RequestSink {
 public:
  void on_prefill(int64_t done, int64_t total) override {
    std::lock_guard lk(mu_);
    prefill_done = done;
    prefill_total = total;
  }
  Verdict on_token(const TokenOut& t) override {
    std::lock_guard lk(mu_);
    tokens.push_back(t.id);
    text += t.text;
    logprobs.push_back(t.logprob);
    tops.push_back(t.top);
    cv_.notify_all();
    return {stop_after > 0 && static_cast<int>(tokens.size()) >= stop_after, false};
  }
  void on_finish(const FinishInfo& f) override {
    std::lock_guard lk(mu_);
    info = f;
    text += f.tail;
    ++finished;
    cv_.notify_all();
  }
  void wait() {
    std::unique_lock lk(mu_);
    ASSERT_TRUE(cv_.wait_for(lk, std::chrono::seconds(120), [&] { return finished > 0; })) << "request never finished";
  }
  void wait_tokens(size_t n) {
    std::unique_lock lk(mu_);
    ASSERT_TRUE(cv_.wait_for(lk, std::chrono::seconds(120), [&] { return tokens.size() >= n || finished > 0; }));
  }

  std::vector<int32_t> tokens;
  std::string text;
  std::vector<float> logprobs;
  std::vector<std::vector<TokenLogprob>> tops;
  FinishInfo info;
  int finished = 0;
  int64_t prefill_done = 0, prefill_total = 0;
  int stop_after = 0;

 private:
  std::mutex mu_;
  std::condition_variable cv_;
};

class SchedulerTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    path_ = fs::temp_directory_path() / ("ds4_scheduler_test_" + std::to_string(::getpid()) + ".gguf");
    model::SynthOptions o;
    o.shape = std::string(DS4_SOURCE_DIR) + "/scripts/demo-model.json";
    o.layers = 2;
    o.recipe = "q8_0";
    o.tokenizer_json = std::string(DS4_SOURCE_DIR) + "/data/tokenizer/deepseek-v4/tokenizer.json";
    o.seed = 5;
    o.output = path_.string();
    model::synth(o);
    oracle_ = new Engine(engine_options());
  }
  static void TearDownTestSuite() {
    delete oracle_;
    fs::remove(path_);
  }
  static EngineOptions engine_options() {
    EngineOptions eo;
    eo.model_path = path_.string();
    eo.threads = 2;
    return eo;
  }
  static std::unique_ptr<Scheduler> make(int parallel, int64_t batch_tokens = 512, int64_t ctx = 1024) {
    SchedulerOptions so;
    so.parallel = parallel;
    so.ctx_size = ctx;
    so.batch_tokens = batch_tokens;
    return std::make_unique<Scheduler>(std::make_unique<Engine>(engine_options()), so);
  }
  // A scheduler whose slots share a prefix cache (docs/prefix-cache.md) with
  // small blocks and thresholds, so short test prompts exercise it.
  static std::unique_ptr<Scheduler> make_cached(int parallel, PrefixCacheOptions co, int64_t batch_tokens = 512) {
    auto eng = std::make_unique<Engine>(engine_options());
    co.fingerprint = model_fingerprint(eng->model(), eng->numerics());
    co.log = [](const std::string&) {};
    SchedulerOptions so;
    so.parallel = parallel;
    so.ctx_size = 1024;
    so.batch_tokens = batch_tokens;
    so.cache = std::make_shared<PrefixCache>(std::move(co));
    return std::make_unique<Scheduler>(std::move(eng), so);
  }
  static PrefixCacheOptions small_cache() {
    PrefixCacheOptions co;
    co.block_tokens = 8;
    co.min_tokens = 16;
    co.ram_bytes = 64u << 20;
    co.checkpoint_interval = 0;
    co.cold_max_tokens = 0;
    return co;
  }
  // The conversation after `p` and its reply: what a client sends next.
  static std::vector<int32_t> next_turn(const std::vector<int32_t>& p, const std::vector<int32_t>& reply,
                                        std::string_view user) {
    std::vector<int32_t> q = p;
    q.insert(q.end(), reply.begin(), reply.end());
    q.push_back(oracle_->specials().eos);
    const auto turn = user_turn(*oracle_, user, Thinking::none);
    q.insert(q.end(), turn.begin(), turn.end());
    return q;
  }
  static std::vector<int32_t> run(Scheduler& s, const std::vector<int32_t>& p, int64_t n, FinishInfo* info = nullptr) {
    auto c = std::make_shared<Collect>();
    s.submit(greedy(p, n, c));
    c->wait();
    if (info) *info = c->info;
    return c->tokens;
  }

  static std::vector<int32_t> prompt(std::string_view user) {
    return single_prompt(*oracle_, "", user, Thinking::none);
  }
  // The oracle: the CLI's generation loop, alone on a fresh session.
  static std::vector<int32_t> alone(const std::vector<int32_t>& p, int64_t n) {
    auto s = oracle_->new_session(1024);
    GenerateOptions g;
    g.sampling.temperature = 0;
    g.max_tokens = n;
    g.ctx_size = 1024;
    return generate(*oracle_, *s, p, g).tokens;
  }
  static GenRequest greedy(std::vector<int32_t> p, int64_t n, std::shared_ptr<Collect> sink) {
    GenRequest r;
    r.prompt = std::move(p);
    r.sampling.temperature = 0;
    r.max_tokens = n;
    r.sink = std::move(sink);
    return r;
  }

  static inline fs::path path_;
  static inline Engine* oracle_ = nullptr;
};

TEST_F(SchedulerTest, BatchedRequestsEqualEachAlone) {
  const std::vector<std::string> users = {"Tell me a story.", "What is 2+2? Answer briefly please, thanks.",
                                          "Write a haiku about autumn leaves falling", "x"};
  const int64_t n = 12;
  // A small budget splits the longer prompts over several steps, so prompt
  // chunks share steps with other requests' decode tokens.
  auto sched = make(4, 8);
  std::vector<std::shared_ptr<Collect>> sinks;
  for (const auto& u : users) {
    sinks.push_back(std::make_shared<Collect>());
    sched->submit(greedy(prompt(u), n, sinks.back()));
  }
  size_t longest = 0;
  for (size_t i = 0; i < users.size(); ++i) {
    sinks[i]->wait();
    EXPECT_EQ(sinks[i]->tokens, alone(prompt(users[i]), n)) << "request " << i;
    longest = std::max(longest, sinks[i]->tokens.size());
    EXPECT_EQ(sinks[i]->info.usage.prompt_tokens, static_cast<int64_t>(prompt(users[i]).size()));
    EXPECT_EQ(sinks[i]->info.usage.completion_tokens, static_cast<int64_t>(sinks[i]->tokens.size()));
  }
  EXPECT_GE(longest, 4u) << "the model ended every reply at once; the comparison says little";
  const SchedulerStats st = sched->stats();
  EXPECT_GE(st.max_batch_seqs, 2) << "requests were never in one forward call";
  EXPECT_EQ(st.requests_done, 4);
}

TEST_F(SchedulerTest, MoreRequestsThanSlotsQueueAndAllFinish) {
  auto sched = make(2);
  std::vector<std::shared_ptr<Collect>> sinks;
  for (int i = 0; i < 5; ++i) {
    sinks.push_back(std::make_shared<Collect>());
    sched->submit(greedy(prompt("Request number " + std::to_string(i)), 6, sinks.back()));
  }
  for (int i = 0; i < 5; ++i) {
    sinks[i]->wait();
    EXPECT_EQ(sinks[i]->tokens, alone(prompt("Request number " + std::to_string(i)), 6)) << i;
  }
  EXPECT_EQ(sched->stats().queue_length, 0);
  EXPECT_EQ(sched->stats().active, 0);
}

TEST_F(SchedulerTest, PrefixReuseEqualsColdStart) {
  auto sched = make(2);
  const auto p1 = prompt("Tell me a story.");
  auto a = std::make_shared<Collect>();
  sched->submit(greedy(p1, 6, a));
  a->wait();
  ASSERT_FALSE(a->tokens.empty());
  // The slot holds p1 and every generated token but the last (never fed).
  std::vector<int32_t> p2 = p1;
  p2.insert(p2.end(), a->tokens.begin(), a->tokens.end());
  p2.push_back(oracle_->specials().eos);
  const auto turn = user_turn(*oracle_, "And another one.", Thinking::none);
  p2.insert(p2.end(), turn.begin(), turn.end());
  auto b = std::make_shared<Collect>();
  sched->submit(greedy(p2, 6, b));
  b->wait();
  EXPECT_EQ(b->info.usage.cached_tokens, static_cast<int64_t>(p1.size() + a->tokens.size() - 1));
  EXPECT_EQ(b->prefill_total, static_cast<int64_t>(p2.size()) - b->info.usage.cached_tokens);
  EXPECT_EQ(b->tokens, alone(p2, 6));
  EXPECT_EQ(sched->stats().prefix_hits, 1);
  // An unrelated prompt reuses nothing.
  auto c = std::make_shared<Collect>();
  sched->submit(greedy(prompt("Something else entirely"), 3, c));
  c->wait();
  EXPECT_EQ(c->info.usage.cached_tokens, 0);
  EXPECT_EQ(c->tokens, alone(prompt("Something else entirely"), 3));
}

TEST_F(SchedulerTest, PrefixCacheServesAnEvictedConversation) {
  // One slot: an unrelated request replaces the conversation's live state,
  // which goes to the RAM tier first; its next turn resumes from there.
  auto sched = make_cached(1, small_cache());
  const auto p1 = prompt("Tell me a long story about a lighthouse keeper and the sea, please.");
  ASSERT_GE(p1.size(), 16u);
  const auto r1 = run(*sched, p1, 6);
  ASSERT_FALSE(r1.empty());
  FinishInfo other;
  run(*sched, prompt("Something else entirely, with enough words to pass the minimum."), 3, &other);
  EXPECT_EQ(other.usage.cached_tokens, 0);
  EXPECT_EQ(other.usage.cache_source, "none");
  const auto p2 = next_turn(p1, r1, "And another one.");
  FinishInfo info;
  const auto r2 = run(*sched, p2, 6, &info);
  EXPECT_EQ(info.usage.cached_tokens, static_cast<int64_t>(p1.size() + r1.size() - 1));
  EXPECT_EQ(info.usage.cache_source, "ram");
  EXPECT_EQ(r2, alone(p2, 6)) << "a restored state must continue exactly as a cold prefill";
  const auto cs = sched->cache_stats();
  ASSERT_TRUE(cs.has_value());
  EXPECT_EQ(cs->hits_ram, 1u);
  EXPECT_GE(cs->stores_ram, 2u);  // the story (evicted), then the other request (evicted)
  EXPECT_EQ(sched->stats().cached_tokens_ram, info.usage.cached_tokens);
}

TEST_F(SchedulerTest, ALongerCachedPrefixBeatsAShorterLiveSlot) {
  // Slot B holds the conversation's first turn live; the cache holds its
  // second turn (evicted from slot A). The third turn must resume from the
  // cache, not re-prefill the second turn on top of slot B.
  auto sched = make_cached(2, small_cache());
  const auto p1 = prompt("Tell me a long story about a lighthouse keeper and the sea, please.");
  const auto r1 = run(*sched, p1, 6);  // slot A
  ASSERT_EQ(r1.size(), 6u) << "the reply must end at max_tokens, so its last token stays unfed";
  const auto p2 = next_turn(p1, r1, "And another one.");
  const auto r2 = run(*sched, p2, 6);  // slot A again (token prefix)
  run(*sched, p1, 6);                  // slot B: the first turn again, live
  run(*sched, prompt("Something else entirely, with enough words to pass the minimum."), 3);  // evicts A
  const auto p3 = next_turn(p2, r2, "One more, shorter.");
  FinishInfo info;
  const auto r3 = run(*sched, p3, 6, &info);
  EXPECT_EQ(info.usage.cache_source, "ram");
  EXPECT_EQ(info.usage.cached_tokens, static_cast<int64_t>(p2.size() + r2.size() - 1));
  EXPECT_EQ(r3, alone(p3, 6));
}

TEST_F(SchedulerTest, DiskCacheSurvivesARestart) {
  const auto dir = fs::temp_directory_path() / ("ds4_sched_cache_" + std::to_string(::getpid()));
  fs::remove_all(dir);
  auto co = small_cache();
  co.ram_bytes = 0;  // disk only: every store is a file
  co.disk_dir = dir.string();
  const auto p1 = prompt("Tell me a long story about a lighthouse keeper and the sea, please.");
  std::vector<int32_t> r1;
  {
    auto sched = make_cached(1, co);
    r1 = run(*sched, p1, 6);
    ASSERT_FALSE(r1.empty());
    // Shutdown stores the live session.
  }
  size_t files = 0;
  for (const auto& e : fs::directory_iterator(dir)) files += e.path().extension() == ".ds4kv" ? 1 : 0;
  EXPECT_EQ(files, 1u);
  auto sched = make_cached(1, co);
  const auto p2 = next_turn(p1, r1, "And another one.");
  FinishInfo info;
  const auto r2 = run(*sched, p2, 6, &info);
  EXPECT_EQ(info.usage.cache_source, "disk");
  EXPECT_EQ(info.usage.cached_tokens, static_cast<int64_t>(p1.size() + r1.size() - 1));
  EXPECT_EQ(r2, alone(p2, 6));
  EXPECT_EQ(sched->cache_stats()->hits_disk, 1u);
  sched.reset();
  fs::remove_all(dir);
}

TEST_F(SchedulerTest, ColdCheckpointAtTheChatAnchorServesAnotherConversation) {
  // Two conversations of one agent share the system prompt: the first one's
  // cold checkpoint (before its first user turn) serves the second.
  auto co = small_cache();
  co.cold_max_tokens = 4096;
  auto sched = make_cached(2, co);
  const std::string sys = "You are a careful assistant. Follow the house rules, answer in English, keep it short.";
  const auto pa = single_prompt(*oracle_, sys, "What is a lighthouse?", Thinking::none);
  const auto pb = single_prompt(*oracle_, sys, "Name three birds.", Thinking::none);
  run(*sched, pa, 4);
  FinishInfo info;
  const auto rb = run(*sched, pb, 4, &info);
  // The anchor: the last User marker before the first Assistant marker.
  int64_t anchor = -1;
  for (size_t i = 0; i < pa.size() && pa[i] != oracle_->specials().assistant; ++i)
    if (pa[i] == oracle_->specials().user) anchor = static_cast<int64_t>(i);
  ASSERT_GE(anchor, 16);
  EXPECT_EQ(info.usage.cached_tokens, anchor);
  EXPECT_EQ(info.usage.cache_source, "ram");
  EXPECT_EQ(rb, alone(pb, 4));
}

TEST_F(SchedulerTest, PeriodicCheckpointsCutPrefillChunks) {
  // Checkpoints every 16 tokens: the prompt is cut there even with a large
  // budget, and a prompt that diverges later resumes from the last one.
  auto co = small_cache();
  co.checkpoint_interval = 16;
  auto sched = make_cached(2, co);
  const auto p1 = prompt("Tell me a long story about a lighthouse keeper, the sea, the storms, the ships that pass "
                         "at night, the gulls, the fog horn and the keeper's old dog that barks at the waves.");
  ASSERT_GE(p1.size(), 34u);
  run(*sched, p1, 2);
  EXPECT_GE(sched->cache_stats()->stores_ram, p1.size() / 16);
  // Same first 33 tokens, then something else: the checkpoint at 32 serves it.
  std::vector<int32_t> p2(p1.begin(), p1.begin() + 33);
  const auto tail = prompt("A different ending altogether.");
  p2.insert(p2.end(), tail.begin() + 1, tail.end());
  FinishInfo info;
  const auto r2 = run(*sched, p2, 4, &info);
  EXPECT_EQ(info.usage.cached_tokens, 32);
  EXPECT_EQ(r2, alone(p2, 4));
}

TEST_F(SchedulerTest, CancelFreesTheSlot) {
  auto sched = make(1);
  auto a = std::make_shared<Collect>();
  auto h = sched->submit(greedy(prompt("Go on forever"), 100000, a));
  auto b = std::make_shared<Collect>();
  sched->submit(greedy(prompt("Next"), 3, b));  // waits for the only slot
  a->wait_tokens(2);
  h->cancel();
  a->wait();
  EXPECT_EQ(a->info.reason, Finish::cancelled);
  b->wait();
  EXPECT_EQ(b->tokens, alone(prompt("Next"), 3));
}

TEST_F(SchedulerTest, LimitsStopStringsAndLogprobs) {
  auto sched = make(2);
  // max_tokens
  auto a = std::make_shared<Collect>();
  auto ra = greedy(prompt("Count"), 5, a);
  ra.top_logprobs = 3;
  sched->submit(std::move(ra));
  a->wait();
  if (a->info.reason != Finish::eos) {
    EXPECT_EQ(a->info.reason, Finish::length);
    EXPECT_EQ(a->tokens.size(), 5u);
  }
  // Logprobs are the log-softmax of the oracle's logits at each step.
  auto s = oracle_->new_session(1024);
  std::vector<float> logits = s->feed(prompt("Count"));
  for (size_t i = 0; i < a->tokens.size(); ++i) {
    for (size_t k = oracle_->tokenizer().vocab_size(); k < logits.size(); ++k) logits[k] = -INFINITY;
    double mx = -INFINITY, sum = 0;
    for (float l : logits) mx = std::max(mx, static_cast<double>(l));
    for (float l : logits) sum += std::exp(static_cast<double>(l) - mx);
    const double want = logits[static_cast<size_t>(a->tokens[i])] - mx - std::log(sum);
    EXPECT_NEAR(a->logprobs[i], want, 1e-4) << "step " << i;
    ASSERT_EQ(a->tops[i].size(), 3u);
    EXPECT_EQ(a->tops[i][0].id, a->tokens[i]);  // greedy: the best alternative is the token itself
    EXPECT_GE(a->tops[i][0].logprob, a->tops[i][1].logprob);
    logits = s->feed(std::span<const int32_t>(&a->tokens[i], 1));
  }
  // A stop string made of text the request generates cuts it there.
  auto full = std::make_shared<Collect>();
  sched->submit(greedy(prompt("Tell me a story."), 12, full));
  full->wait();
  ASSERT_GE(full->text.size(), 6u);
  const std::string stop = full->text.substr(3, 3);
  auto cut = std::make_shared<Collect>();
  auto rc = greedy(prompt("Tell me a story."), 12, cut);
  rc.stop = {stop};
  sched->submit(std::move(rc));
  cut->wait();
  EXPECT_EQ(cut->info.reason, Finish::stop_string);
  EXPECT_EQ(cut->text, full->text.substr(0, full->text.find(stop)));
  // The sink can end a request (the DSML end marker does this).
  auto early = std::make_shared<Collect>();
  early->stop_after = 2;
  sched->submit(greedy(prompt("Tell me a story."), 12, early));
  early->wait();
  if (early->info.reason != Finish::eos) {
    EXPECT_EQ(early->info.reason, Finish::sink);
    EXPECT_EQ(early->tokens.size(), 2u);
  }
}

TEST_F(SchedulerTest, ContextFullAndBadRequests) {
  const auto p = prompt("Tell me a story.");
  const auto n = static_cast<int64_t>(p.size());
  auto sched = make(1, 512, n + 3);
  auto a = std::make_shared<Collect>();
  sched->submit(greedy(p, 1000, a));
  a->wait();
  if (a->info.reason != Finish::eos) {
    EXPECT_EQ(a->info.reason, Finish::context_full);
    EXPECT_EQ(a->tokens.size(), 3u);
  }
  auto big = p;
  big.resize(static_cast<size_t>(n + 3), p[1]);
  EXPECT_THROW(sched->submit(greedy(big, 1, std::make_shared<Collect>())), Error);
  EXPECT_THROW(sched->submit(greedy({}, 1, std::make_shared<Collect>())), Error);
  EXPECT_THROW(sched->submit(greedy({-1, 5}, 1, std::make_shared<Collect>())), Error);
  EXPECT_THROW(sched->submit(greedy({1 << 30}, 1, std::make_shared<Collect>())), Error);
}

TEST_F(SchedulerTest, ForcedReplyIsSpelledThenEos) {
  auto sched = make(1);
  const std::vector<int32_t> script = oracle_->tokenizer().encode("Hello there, world.");
  auto a = std::make_shared<Collect>();
  auto r = greedy(prompt("anything"), 100, a);
  r.forced = script;
  sched->submit(std::move(r));
  a->wait();
  EXPECT_EQ(a->tokens, script);
  EXPECT_EQ(a->text, "Hello there, world.");
  EXPECT_EQ(a->info.reason, Finish::eos);
}

TEST_F(SchedulerTest, ShutdownEndsEveryRequest) {
  auto sched = make(1);
  auto a = std::make_shared<Collect>();
  auto b = std::make_shared<Collect>();
  sched->submit(greedy(prompt("Go on forever"), 100000, a));
  sched->submit(greedy(prompt("Waiting"), 100000, b));
  a->wait_tokens(1);
  sched->shutdown();
  a->wait();
  b->wait();
  EXPECT_EQ(a->info.reason, Finish::cancelled);
  EXPECT_EQ(b->info.reason, Finish::cancelled);
  EXPECT_THROW(sched->submit(greedy(prompt("late"), 1, std::make_shared<Collect>())), Error);
}

}  // namespace
}  // namespace ds4::engine

namespace ds4::engine {
namespace {

// Text-level reuse: a history that spells the prompt's start in other tokens.
TEST_F(SchedulerTest, HistorySpellingThePromptInOtherTokensIsReused) {
  const auto& tok = oracle_->tokenizer();
  using K = chat::Segment::Kind;
  const chat::Segments first = {{K::Special, std::string(chat::kBos)}, {K::Special, std::string(chat::kUser)},
                                {K::Text, "Hello"}, {K::Special, std::string(chat::kAssistant)},
                                {K::Special, std::string(chat::kThinkClose)}};
  // The "model" replied "Sure thing" split into single bytes: not BPE's split.
  std::vector<int32_t> history;
  for (const auto& s : first)
    if (s.kind == K::Special) history.push_back(tok.special_id(s.text));
    else tok.encode_append(s.text, history);
  const size_t prompt_len = history.size();
  for (char c : std::string("Sure thing")) tok.encode_append(std::string(1, c), history);
  chat::Segments next = first;
  next.push_back({K::Text, "Sure thing"});
  next.push_back({K::Special, std::string(chat::kEos)});
  next.push_back({K::Special, std::string(chat::kUser)});
  next.push_back({K::Text, "More <｜User｜> please"});
  auto e = extend_by_text(tok, history, next);
  ASSERT_TRUE(e.has_value());
  ASSERT_GT(e->size(), history.size());
  EXPECT_TRUE(std::equal(history.begin(), history.end(), e->begin()));
  EXPECT_EQ(tok.decode(*e), chat::join(next));
  // The user's spelled marker stays text: exactly one <｜User｜> id after the history.
  EXPECT_EQ(std::count(e->begin() + static_cast<std::ptrdiff_t>(history.size()), e->end(), tok.special_id(chat::kUser)), 1);

  // A control token where the prompt has the same spelling as text: no match.
  chat::Segments spoof = {{K::Special, std::string(chat::kBos)},
                          {K::Text, std::string(chat::kUser) + "Hello" + std::string(chat::kAssistant) + "x"}};
  std::vector<int32_t> h2 = {tok.special_id(chat::kBos), tok.special_id(chat::kUser)};
  tok.encode_append("Hello", h2);
  EXPECT_FALSE(extend_by_text(tok, h2, spoof).has_value());
  // A history that differs in its text, or is the whole prompt, does not match.
  chat::Segments other = first;
  other[2].text = "Help";
  EXPECT_FALSE(extend_by_text(tok, std::span<const int32_t>(history).first(prompt_len), other).has_value());
  EXPECT_FALSE(extend_by_text(tok, std::span<const int32_t>(history).first(prompt_len), first).has_value());

  // Through the scheduler: the slot is reused and the reply equals a cold start.
  auto sched = make(1);
  auto a = std::make_shared<Collect>();
  GenRequest ra = greedy(history, 1, a);  // a slot holding `history` (the sampled token is never fed)
  sched->submit(std::move(ra));
  a->wait();
  auto b = std::make_shared<Collect>();
  GenRequest rb = greedy(encode_segments(*oracle_, next), 4, b);
  rb.segments = std::make_shared<const chat::Segments>(next);
  sched->submit(std::move(rb));
  b->wait();
  EXPECT_EQ(b->info.usage.cached_tokens, static_cast<int64_t>(history.size()));
  EXPECT_EQ(b->info.usage.prompt_tokens, static_cast<int64_t>(e->size()));
  EXPECT_EQ(b->tokens, alone(*e, 4));
}

}  // namespace
}  // namespace ds4::engine

namespace ds4::engine {
namespace {

TEST_F(SchedulerTest, HiddenReasoningStillMatchesABareThinkClose) {
  const auto& tok = oracle_->tokenizer();
  using K = chat::Segment::Kind;
  auto sp = [](std::string_view s) { return chat::Segment{K::Special, std::string(s)}; };
  auto tx = [](std::string s) { return chat::Segment{K::Text, std::move(s)}; };
  // The slot: a thinking turn, its reasoning and the start of its answer.
  const chat::Segments held = {sp(chat::kBos), sp(chat::kUser), tx("Hi"), sp(chat::kAssistant), sp(chat::kThinkOpen),
                               tx("Let me think."), sp(chat::kThinkClose), tx("Hello")};
  const auto history = encode_segments(*oracle_, held);
  // The client sends the answer back without the reasoning.
  const chat::Segments next = {sp(chat::kBos), sp(chat::kUser), tx("Hi"), sp(chat::kAssistant), sp(chat::kThinkClose),
                               tx("Hello there"), sp(chat::kEos), sp(chat::kUser), tx("More"), sp(chat::kAssistant),
                               sp(chat::kThinkOpen)};
  auto e = extend_by_text(tok, history, next);
  ASSERT_TRUE(e.has_value());
  EXPECT_TRUE(std::equal(history.begin(), history.end(), e->begin()));
  const std::vector<int32_t> rest(e->begin() + static_cast<std::ptrdiff_t>(history.size()), e->end());
  EXPECT_EQ(tok.decode(rest), std::string(" there") + std::string(chat::kEos) + std::string(chat::kUser) + "More" +
                                  std::string(chat::kAssistant) + std::string(chat::kThinkOpen));
  // The same with an empty reasoning.
  chat::Segments held2 = held;
  held2.erase(held2.begin() + 5);
  EXPECT_TRUE(extend_by_text(tok, encode_segments(*oracle_, held2), next).has_value());
  // A history that stopped inside its reasoning cannot continue a bare </think>.
  const chat::Segments cut = {sp(chat::kBos), sp(chat::kUser), tx("Hi"), sp(chat::kAssistant), sp(chat::kThinkOpen),
                              tx("Let me")};
  EXPECT_FALSE(extend_by_text(tok, encode_segments(*oracle_, cut), next).has_value());
}

}  // namespace
}  // namespace ds4::engine
