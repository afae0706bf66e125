// PrefixCache: the longest cached prefix wins from RAM or disk (and after a
// restart), a restored session continues exactly as one that never stopped,
// LRU eviction keeps each tier within its budget, pinned entries stay, bad
// files in the directory are discarded, and two caches sharing a directory
// tolerate each other.
#include "engine/prefix_cache.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cerrno>
#include <condition_variable>
#include <fstream>
#include <mutex>
#include <thread>

#include <unistd.h>

#include "engine_test_util.h"
#include "util/error.h"

namespace ds4::engine {
namespace {

using namespace test;
using backend::NumericsMode;

constexpr NumericsMode kMode = NumericsMode::faithful;

struct Fixture {
  std::shared_ptr<model::Model> m = tiny_model("f32", 1);
  std::unique_ptr<backend::Backend> be = backend::make_backend("cpu", m, {2});
  Fingerprint fp = model_fingerprint(*m, kMode);
};
Fixture& fx() {
  static Fixture f;
  return f;
}

// Block of 8 tokens, no minimum, no periodic checkpoints unless asked.
PrefixCacheOptions opts(std::vector<std::string>* log = nullptr) {
  PrefixCacheOptions o;
  o.fingerprint = fx().fp;
  o.block_tokens = 8;
  o.min_tokens = 8;
  o.checkpoint_interval = 0;
  o.log = [log](const std::string& s) {
    if (log) log->push_back(s);
  };
  return o;
}

std::unique_ptr<Session> session_with(const std::vector<int32_t>& t) {
  auto s = std::make_unique<Session>(*fx().be, backend::SessionOptions{kMode, 256});
  s->prefill(t);
  return s;
}

uint64_t entry_bytes(int n) {  // RAM bytes of an entry of n tokens
  return session_with(toks(n))->snapshot().bytes();
}

// Restores the hit into a fresh session and checks it continues bit for bit
// like a session that prefilled `prompt` without stopping.
void expect_resumes(PrefixCache& cache, PrefixCache::Lookup& hit, const std::vector<int32_t>& prompt) {
  ASSERT_GT(hit.matched, 0) << hit.explain;
  Session s(*fx().be, {kMode, 256});
  std::string why;
  ASSERT_TRUE(cache.restore(hit.handle, s, nullptr, &why)) << why;
  ASSERT_EQ(s.position(), hit.matched);
  const std::span<const int32_t> all(prompt);
  const auto got = s.feed_all(all.subspan(static_cast<size_t>(hit.matched)));
  Session whole(*fx().be, {kMode, 256});
  whole.prefill(all.first(static_cast<size_t>(hit.matched)));
  EXPECT_EQ(got, whole.feed_all(all.subspan(static_cast<size_t>(hit.matched))));
}

TEST(PrefixCache, RamHitIsTheLongestCachedPrefix) {
  auto o = opts();
  o.ram_bytes = 64 << 20;
  PrefixCache cache(o);
  const auto convo = toks(60);
  EXPECT_EQ(cache.lookup(convo).explain, "miss: cache empty");
  // Checkpoints at 16 and 32 tokens (whole blocks) and 21 (a tail).
  for (int n : {16, 21, 32}) {
    auto s = session_with(std::vector<int32_t>(convo.begin(), convo.begin() + n));
    const auto r = cache.store(*s, SaveReason::continued);
    EXPECT_TRUE(r.stored) << r.explain;
    EXPECT_EQ(r.tier, Tier::ram);
  }
  {  // the same prefix again is not stored twice
    auto s = session_with(toks(16));
    EXPECT_FALSE(cache.store(*s, SaveReason::cold).stored);
  }
  struct Case {
    std::vector<int32_t> prompt;
    int64_t limit, want;
  };
  const std::vector<Case> cases = {
      {convo, -1, 32},                               // runs past every entry: the longest
      {convo, 31, 21},                               // must leave a token: the tail entry
      {concat(toks(25), toks(10, 9)), -1, 21},       // diverges at 25: tail at 21
      {concat(toks(20), toks(10, 9)), -1, 16},       // diverges at 20: block entry at 16
      {concat(toks(33), toks(3, 9)), -1, 32},        // diverges right after 32
      {toks(40, 0, 0), 16, 16},                      // limit exactly at an entry
  };
  for (const auto& c : cases) {
    auto hit = cache.lookup(c.prompt, c.limit);
    EXPECT_EQ(hit.matched, c.want) << hit.explain;
    EXPECT_EQ(hit.tier, Tier::ram);
    EXPECT_TRUE(hit.explain.starts_with("hit: " + std::to_string(c.want) + " of ")) << hit.explain;
    expect_resumes(cache, hit, c.prompt);
  }
  auto miss = cache.lookup(toks(40, 5));
  EXPECT_EQ(miss.matched, 0);
  EXPECT_TRUE(miss.explain.starts_with("miss: no block matched")) << miss.explain;
  // Shares a block with the entries but diverges before any checkpoint ends.
  auto early = cache.lookup(concat(toks(12), toks(20, 7)));
  EXPECT_EQ(early.matched, 0);
  EXPECT_TRUE(early.explain.starts_with("miss: prompt shares 1 blocks (8 tokens)")) << early.explain;
  const auto st = cache.stats();
  EXPECT_EQ(st.hits_ram, cases.size());
  EXPECT_EQ(st.misses, 3u);
  EXPECT_EQ(st.ram_entries, 3u);
  EXPECT_EQ(st.disk_entries, 0u);
}

TEST(PrefixCache, DiskHitsSurviveARestart) {
  const TempDir dir("pc_disk");
  auto o = opts();
  o.disk_dir = dir.path.string();
  const auto convo = toks(70);
  {
    PrefixCache cache(o);
    for (int n : {24, 48, 53}) {
      auto s = session_with(std::vector<int32_t>(convo.begin(), convo.begin() + n));
      const auto r = cache.store(*s, SaveReason::cold);
      EXPECT_TRUE(r.stored && r.tier == Tier::disk) << r.explain;
    }
    EXPECT_EQ(dir.files().size(), 3u);
  }
  std::vector<std::string> log;
  auto o2 = opts(&log);
  o2.disk_dir = dir.path.string();
  o2.ram_bytes = 64 << 20;  // a disk hit is then promoted to RAM
  PrefixCache cache(o2);
  EXPECT_EQ(cache.stats().disk_entries, 3u);
  auto hit = cache.lookup(convo, 60);
  EXPECT_EQ(hit.matched, 53);
  EXPECT_EQ(hit.tier, Tier::disk);
  EXPECT_TRUE(hit.explain.starts_with("hit: 53 of 60 prompt tokens from disk")) << hit.explain;
  expect_resumes(cache, hit, convo);
  hit.handle.release();
  auto again = cache.lookup(convo, 60);
  EXPECT_EQ(again.tier, Tier::ram);
  auto mid = cache.lookup(concat(toks(50), toks(5, 3)));
  EXPECT_EQ(mid.matched, 48);
  expect_resumes(cache, mid, concat(toks(50), toks(5, 3)));
  const auto st = cache.stats();
  EXPECT_EQ(st.hits_disk, 2u);
  EXPECT_EQ(st.hits_ram, 1u);
  EXPECT_EQ(st.hit_tokens_disk, 53u + 48u);
}

TEST(PrefixCache, RamEvictsLeastRecentlyUsedAndSpillsToDisk) {
  const TempDir dir("pc_lru");
  const uint64_t one = entry_bytes(16);
  std::vector<std::string> log;
  auto o = opts(&log);
  o.ram_bytes = 2 * one + one / 2;  // two entries fit, not three
  PrefixCache ram_only(o);
  auto a = session_with(toks(16, 1)), b = session_with(toks(16, 2)), c = session_with(toks(16, 3));
  ASSERT_TRUE(ram_only.store(*a, SaveReason::cold).stored);
  ASSERT_TRUE(ram_only.store(*b, SaveReason::cold).stored);
  EXPECT_EQ(ram_only.lookup(toks(20, 1)).matched, 16);  // a is now the most recently used
  ASSERT_TRUE(ram_only.store(*c, SaveReason::cold).stored);
  EXPECT_EQ(ram_only.lookup(toks(20, 2)).matched, 0) << "b was least recently used";
  EXPECT_EQ(ram_only.lookup(toks(20, 1)).matched, 16);
  EXPECT_EQ(ram_only.lookup(toks(20, 3)).matched, 16);
  EXPECT_LE(ram_only.stats().ram_bytes, o.ram_bytes);
  EXPECT_EQ(ram_only.stats().evictions_ram, 1u);

  // With a disk tier the evicted entry spills and still hits, from disk.
  o.disk_dir = dir.path.string();
  PrefixCache spilling(o);
  ASSERT_TRUE(spilling.store(*a, SaveReason::cold).stored);
  ASSERT_TRUE(spilling.store(*b, SaveReason::cold).stored);
  ASSERT_TRUE(spilling.store(*c, SaveReason::cold).stored);
  auto hit = spilling.lookup(toks(20, 1));
  EXPECT_EQ(hit.matched, 16);
  EXPECT_EQ(hit.tier, Tier::disk);
  expect_resumes(spilling, hit, toks(20, 1));
  // The disk hit came back into RAM, which spilled the next least recent (b).
  EXPECT_EQ(spilling.stats().spills, 2u);
  EXPECT_EQ(dir.files().size(), 2u);
  EXPECT_EQ(spilling.lookup(toks(20, 2)).tier, Tier::disk);
  EXPECT_EQ(spilling.lookup(toks(20, 3)).tier, Tier::ram);
}

TEST(PrefixCache, DiskEvictsLeastRecentlyUsedWithinItsBudget) {
  const TempDir dir("pc_disk_lru");
  auto o = opts();
  o.disk_dir = dir.path.string();
  auto a = session_with(toks(16, 1)), b = session_with(toks(16, 2)), c = session_with(toks(16, 3));
  Checkpoint probe;
  probe.snapshot = a->snapshot();
  const uint64_t file = checkpoint_file_bytes(probe);
  o.disk_bytes = 2 * file + file / 2;
  PrefixCache cache(o);
  ASSERT_TRUE(cache.store(*a, SaveReason::cold).stored);
  ASSERT_TRUE(cache.store(*b, SaveReason::cold).stored);
  EXPECT_EQ(cache.lookup(toks(20, 1)).matched, 16);
  ASSERT_TRUE(cache.store(*c, SaveReason::cold).stored);
  EXPECT_EQ(cache.lookup(toks(20, 2)).matched, 0);
  EXPECT_EQ(dir.files().size(), 2u);
  const auto st = cache.stats();
  EXPECT_EQ(st.disk_bytes, 2 * file);
  EXPECT_EQ(st.evictions_disk, 1u);
  // An entry larger than the whole budget is refused, nothing is evicted for it.
  o.disk_bytes = file - 1;
  PrefixCache tiny(o);
  const auto r = tiny.store(*session_with(toks(16, 4)), SaveReason::cold);
  EXPECT_FALSE(r.stored);
  EXPECT_NE(r.explain.find("exceeds the disk budget"), std::string::npos) << r.explain;
}

TEST(PrefixCache, PinnedEntriesAreNeverEvicted) {
  const uint64_t one = entry_bytes(16);
  auto o = opts();
  o.ram_bytes = one + one / 2;  // one entry fits
  PrefixCache cache(o);
  ASSERT_TRUE(cache.store(*session_with(toks(16, 1)), SaveReason::cold).stored);
  auto pinned = cache.lookup(toks(20, 1));
  ASSERT_EQ(pinned.matched, 16);
  // Over budget now, but the only candidate is pinned.
  ASSERT_TRUE(cache.store(*session_with(toks(16, 2)), SaveReason::cold).stored);
  ASSERT_TRUE(cache.store(*session_with(toks(16, 3)), SaveReason::cold).stored);
  expect_resumes(cache, pinned, toks(20, 1));
  EXPECT_EQ(cache.lookup(toks(20, 2)).matched, 0);
  EXPECT_EQ(cache.lookup(toks(20, 3)).matched, 16);  // the newest stays; it is alone in budget with the pin
  pinned.handle.release();
  ASSERT_TRUE(cache.store(*session_with(toks(16, 4)), SaveReason::cold).stored);
  EXPECT_EQ(cache.lookup(toks(20, 1)).matched, 0) << "unpinned, least recently used: evicted";
  EXPECT_LE(cache.stats().ram_bytes, o.ram_bytes);
}

void spit(const fs::path& p, const std::vector<uint8_t>& b) {
  std::ofstream f(p, std::ios::binary | std::ios::trunc);
  f.write(reinterpret_cast<const char*>(b.data()), static_cast<std::streamsize>(b.size()));
}
std::vector<uint8_t> slurp(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(f), {}};
}

TEST(PrefixCache, ScanDiscardsBadFilesWithOneLineEach) {
  const TempDir dir("pc_scan");
  auto o = opts();
  o.disk_dir = dir.path.string();
  std::vector<fs::path> paths;
  {
    PrefixCache cache(o);
    for (int salt = 1; salt <= 6; ++salt) ASSERT_TRUE(cache.store(*session_with(toks(16, salt)), SaveReason::cold).stored);
    for (const auto& f : dir.files()) paths.push_back(dir.path / f);
  }
  ASSERT_EQ(paths.size(), 6u);
  std::sort(paths.begin(), paths.end());
  // 0 stays good; 1 truncated; 2 payload bit flip; 3 old version; 4 another model; 5 renamed to the wrong key.
  auto b = slurp(paths[1]);
  b.resize(b.size() / 2);
  spit(paths[1], b);
  b = slurp(paths[2]);
  b[b.size() - 5] ^= 4;
  spit(paths[2], b);
  b = slurp(paths[3]);
  b[8] = 0;
  spit(paths[3], b);
  {
    auto other = tiny_model("f32", 9);
    auto be = backend::make_backend("cpu", other, {1});
    Session s(*be, {kMode, 256});
    s.prefill(toks(16, 4));
    Checkpoint c;
    c.snapshot = s.snapshot();
    write_checkpoint(paths[4].string(), model_fingerprint(*other, kMode), c);
  }
  fs::rename(paths[5], dir.path / "00000000deadbeef.ds4kv");
  // Not ours: left alone. A temporary of a live writer (us): left alone; of a dead one: removed.
  spit(dir.path / "notes.txt", {1, 2, 3});
  spit(dir.path / ("x.ds4kv.tmp." + std::to_string(::getpid()) + ".1"), {1});
  spit(dir.path / "y.ds4kv.tmp.999999999.1", {1});

  std::vector<std::string> log;
  auto o2 = opts(&log);
  o2.disk_dir = dir.path.string();
  PrefixCache cache(o2);
  const auto st = cache.stats();
  EXPECT_EQ(st.disk_entries, 1u);
  EXPECT_EQ(st.discarded_files, 5u);
  auto files = dir.files();
  std::sort(files.begin(), files.end());
  EXPECT_EQ(files, (std::vector<std::string>{paths[0].filename().string(), "notes.txt",
                                             "x.ds4kv.tmp." + std::to_string(::getpid()) + ".1"}));
  std::string all;
  for (const auto& l : log) all += l + "\n";
  for (const char* why : {"truncated", "payload checksum mismatch", "version 0, this build reads version 1",
                          "made for another model: weights differ", "does not match its tokens",
                          "removed unfinished write"})
    EXPECT_NE(all.find(why), std::string::npos) << "no log line says " << why << ":\n" << all;
}

TEST(PrefixCache, CorruptPayloadFoundAtRestoreIsDroppedWhenScanOnlyReadsHeaders) {
  const TempDir dir("pc_lazy");
  auto o = opts();
  o.disk_dir = dir.path.string();
  o.verify_on_scan = false;
  {
    PrefixCache cache(o);
    ASSERT_TRUE(cache.store(*session_with(toks(16, 1)), SaveReason::cold).stored);
  }
  const fs::path p = dir.path / dir.files()[0];
  auto b = slurp(p);
  b[b.size() - 1] ^= 1;
  spit(p, b);
  PrefixCache cache(o);
  auto hit = cache.lookup(toks(20, 1));
  ASSERT_EQ(hit.matched, 16);
  Session s(*fx().be, {kMode, 256});
  std::string why;
  EXPECT_FALSE(cache.restore(hit.handle, s, nullptr, &why));
  EXPECT_NE(why.find("payload checksum mismatch"), std::string::npos) << why;
  EXPECT_EQ(s.position(), 0);
  EXPECT_TRUE(dir.files().empty());
  EXPECT_EQ(cache.lookup(toks(20, 1)).matched, 0);
  EXPECT_EQ(cache.stats().restore_failures, 1u);
}

TEST(PrefixCache, TwoCachesSharingADirectoryTolerateEachOther) {
  const TempDir dir("pc_shared");
  auto o = opts();
  o.disk_dir = dir.path.string();
  PrefixCache a(o);
  ASSERT_TRUE(a.store(*session_with(toks(16, 1)), SaveReason::cold).stored);
  ASSERT_TRUE(a.store(*session_with(toks(16, 2)), SaveReason::cold).stored);
  PrefixCache b(o);  // sees a's files
  EXPECT_EQ(b.stats().disk_entries, 2u);
  // The other process evicts one of them (deletes its file) ...
  fs::remove(dir.path / dir.files()[0]);
  // ... b's hit on it fails cleanly and is forgotten, the other still serves.
  int ok = 0, gone = 0;
  for (int salt : {1, 2}) {
    auto hit = b.lookup(toks(20, salt));
    ASSERT_EQ(hit.matched, 16);
    Session s(*fx().be, {kMode, 256});
    std::string why;
    if (b.restore(hit.handle, s, nullptr, &why)) {
      ++ok;
    } else {
      ++gone;
      EXPECT_NE(why.find("file vanished"), std::string::npos) << why;
    }
  }
  EXPECT_EQ(ok, 1);
  EXPECT_EQ(gone, 1);
  // Both write the same prefix: one file, both can read it.
  ASSERT_TRUE(a.store(*session_with(toks(24, 5)), SaveReason::cold).stored);
  ASSERT_TRUE(b.store(*session_with(toks(24, 5)), SaveReason::cold).stored);
  auto hit = a.lookup(toks(30, 5));
  expect_resumes(a, hit, toks(30, 5));
}

TEST(PrefixCache, PeriodicCheckpointPositions) {
  auto o = opts();
  o.checkpoint_interval = 20;  // rounds up to 24 (blocks of 8)
  PrefixCache cache(o);
  EXPECT_EQ(cache.checkpoint_step(), 24);
  EXPECT_TRUE(cache.should_checkpoint(48));
  EXPECT_FALSE(cache.should_checkpoint(20));
  EXPECT_FALSE(cache.should_checkpoint(0));
  EXPECT_EQ(cache.next_checkpoint(0, 100), 24);
  EXPECT_EQ(cache.next_checkpoint(24, 100), 48);
  EXPECT_EQ(cache.next_checkpoint(25, 47), -1);
  EXPECT_EQ(cache.next_checkpoint(25, 48), 48);
  o.checkpoint_interval = 0;
  EXPECT_EQ(PrefixCache(o).next_checkpoint(0, 1000), -1);
  // Reference defaults: interval 10000 -> 10240 with 256-token blocks.
  PrefixCacheOptions d;
  EXPECT_EQ(PrefixCache(d).checkpoint_step(), 10240);
  // Cold saves: min 512 .. max 30000 tokens, 32 trimmed, aligned down to 256.
  PrefixCache dc(d);
  EXPECT_EQ(dc.cold_checkpoint(511), -1);
  EXPECT_EQ(dc.cold_checkpoint(600), 512);  // 568 aligns down to 512, the minimum
  EXPECT_EQ(dc.cold_checkpoint(540), -1);   // 508 aligns down to 256, below it
  EXPECT_EQ(dc.cold_checkpoint(30001), -1);
  EXPECT_EQ(dc.cold_checkpoint(5000), 4864);
  EXPECT_EQ(dc.cold_checkpoint(5000, 1500), 1500);  // the anchor wins
  EXPECT_EQ(dc.cold_checkpoint(5000, 100), 4864);   // an anchor below the minimum does not
  o.block_tokens = 0;
  EXPECT_THROW(PrefixCache{o}, Error);
  o.block_tokens = 8;
  o.cold_max_tokens = 4;  // below min_tokens (8)
  EXPECT_THROW(PrefixCache{o}, Error);
}

TEST(PrefixCache, ConcurrentLookupsStatsAndStores) {
  const TempDir dir("pc_threads");
  auto o = opts();
  o.ram_bytes = 3 * entry_bytes(16);
  o.disk_dir = dir.path.string();
  PrefixCache cache(o);
  std::vector<std::unique_ptr<Session>> sessions;
  for (int salt = 0; salt < 8; ++salt) sessions.push_back(session_with(toks(16, salt)));
  std::atomic<bool> done{false};
  std::vector<std::thread> readers;
  std::atomic<uint64_t> hits{0};
  for (int t = 0; t < 3; ++t)
    readers.emplace_back([&, t] {
      for (int i = 0; !done; ++i) {
        auto h = cache.lookup(toks(20, (i + t) % 8));
        hits += h.matched > 0;
        (void)cache.stats();
      }
    });
  for (int round = 0; round < 4; ++round)
    for (auto& s : sessions) cache.store(*s, SaveReason::cold);
  done = true;
  for (auto& r : readers) r.join();
  const auto st = cache.stats();
  EXPECT_EQ(st.ram_entries + st.disk_entries >= 8, true);
  EXPECT_LE(st.ram_bytes, o.ram_bytes);
  EXPECT_EQ(st.hits_ram + st.hits_disk, hits.load());
}

}  // namespace
}  // namespace ds4::engine

namespace ds4::engine {
namespace {

// One turn as a scheduler would serve it (docs/prefix-cache.md §How the
// scheduler calls it): resume from the longest cached prefix, prefill the
// rest in chunks cut at periodic checkpoints, store there, then "generate"
// and store the end of the turn. Returns the prompt tokens served from cache.
int64_t serve_turn(PrefixCache& cache, Session& s, const std::vector<int32_t>& prompt,
                   const std::vector<int32_t>& reply, std::string* explain) {
  auto hit = cache.lookup(prompt, static_cast<int64_t>(prompt.size()) - 1);
  *explain = hit.explain;
  int64_t done = 0;
  std::string why;
  if (hit.matched > 0 && cache.restore(hit.handle, s, nullptr, &why)) done = hit.matched;
  hit.handle.release();
  const std::span<const int32_t> all(prompt);
  for (int64_t pos = done; pos < static_cast<int64_t>(prompt.size());) {
    const int64_t end = static_cast<int64_t>(prompt.size());
    const int64_t cut = cache.next_checkpoint(pos, end);
    const int64_t to = cut > 0 ? cut : end;
    s.prefill(all.subspan(static_cast<size_t>(pos), static_cast<size_t>(to - pos)));
    if (cut > 0) cache.store(s, SaveReason::continued);
    pos = to;
  }
  s.prefill(reply);  // what the model "generated"
  cache.store(s, SaveReason::evict);
  return done;
}

TEST(PrefixCache, AgentConversationIsServedFromCacheAcrossTurnsAndARestart) {
  const TempDir dir("pc_agent");
  auto o = opts();
  o.ram_bytes = 4 << 20;
  o.disk_dir = dir.path.string();
  o.checkpoint_interval = 32;
  std::vector<int32_t> convo = toks(40, 11);  // system prompt + first user message
  int64_t prompt_total = 0, cached_total = 0;
  auto cache = std::make_unique<PrefixCache>(o);
  for (int turn = 0; turn < 6; ++turn) {
    if (turn == 3) {  // restart: RAM is gone, the disk remains
      cache->flush();
      cache = std::make_unique<PrefixCache>(o);
    }
    const auto reply = toks(9 + turn, 20 + turn);
    Session s(*fx().be, {kMode, 256});
    std::string explain;
    const int64_t cached = serve_turn(*cache, s, convo, reply, &explain);
    // The session now equals one that prefilled everything from scratch.
    Session fresh(*fx().be, {kMode, 256});
    fresh.prefill(concat(convo, reply));
    EXPECT_EQ(s.snapshot().state, fresh.snapshot().state) << "turn " << turn;
    if (turn > 0) {
      // The previous turn's end (its prompt + reply) is cached: everything
      // but this turn's new user message comes from the cache.
      EXPECT_EQ(cached, static_cast<int64_t>(convo.size()) - 7) << "turn " << turn << ": " << explain;
      EXPECT_TRUE(explain.starts_with("hit: ")) << explain;
      if (turn == 3) {
        EXPECT_NE(explain.find("from disk"), std::string::npos) << explain;
      }
      prompt_total += static_cast<int64_t>(convo.size());
      cached_total += cached;
    }
    convo = concat(concat(convo, reply), toks(7, 40 + turn));  // next user message
  }
  const double share = static_cast<double>(cached_total) / static_cast<double>(prompt_total);
  std::printf("agent conversation: %lld of %lld prompt tokens after turn 1 from cache (%.1f%%)\n",
              static_cast<long long>(cached_total), static_cast<long long>(prompt_total), 100 * share);
  EXPECT_GT(share, 0.85);
}

}  // namespace
}  // namespace ds4::engine

namespace ds4::engine {
namespace {

// A checkpoint write that waits at a gate the test opens (so the test can look
// at the cache while a write is in flight), or fails like a full disk.
std::mutex g_gate_mu;
std::condition_variable g_gate_cv;
bool g_gate_open = true;
bool g_disk_full = false;
ssize_t gated_write(int fd, const void* buf, size_t n) {
  std::unique_lock lk(g_gate_mu);
  g_gate_cv.wait(lk, [] { return g_gate_open; });
  if (g_disk_full) {
    errno = ENOSPC;
    return -1;
  }
  lk.unlock();
  return ::write(fd, buf, n);
}
void set_gate(bool open, bool full = false) {
  {
    std::lock_guard lk(g_gate_mu);
    g_gate_open = open;
    g_disk_full = full;
  }
  g_gate_cv.notify_all();
}
// Declared after a cache: opens the gate before the cache's destructor waits
// for its writer, also when an assertion leaves the scope early.
struct OpenGateOnExit {
  ~OpenGateOnExit() { set_gate(true); }
};
struct GatedWrites {
  GatedWrites() { set_checkpoint_write_fn(&gated_write); }
  ~GatedWrites() {
    set_gate(true);
    set_checkpoint_write_fn(nullptr);
  }
};

// With background writes a spill and a disk-only store return while the disk
// write is still held at the gate; the entries are served from memory
// meanwhile (as disk entries, which is where they are going), restore
// exactly, and reach the disk once the gate opens, where a new cache finds them.
TEST(PrefixCache, BackgroundWritesNeverMakeTheCallerWait) {
  const TempDir dir("pc_bg");
  const uint64_t one = entry_bytes(16);
  std::vector<std::string> log;
  auto o = opts(&log);
  o.ram_bytes = one + one / 2;  // one entry fits
  o.disk_dir = dir.path.string();
  o.background_writes = true;
  const GatedWrites gated;
  auto a = session_with(toks(16, 1)), b = session_with(toks(16, 2));
  {
    PrefixCache cache(o);
    const OpenGateOnExit open_gate;
    set_gate(false);
    ASSERT_TRUE(cache.store(*a, SaveReason::cold).stored);
    // b pushes a out of RAM: a's spill is queued, the store returns at once.
    const auto r = cache.store(*b, SaveReason::cold);
    ASSERT_TRUE(r.stored) << r.explain;
    EXPECT_EQ(r.tier, Tier::ram);
    auto st = cache.stats();
    EXPECT_EQ(st.pending_writes, 1u);
    EXPECT_GT(st.pending_bytes, 0u);
    EXPECT_EQ(st.stores_disk, 0u);
    EXPECT_TRUE(dir.files().empty() || dir.files().size() == 1);  // at most the writer's temporary file
    auto hit = cache.lookup(toks(20, 1));
    EXPECT_EQ(hit.tier, Tier::disk);
    expect_resumes(cache, hit, toks(20, 1));
    set_gate(true);
    cache.wait_writes();
    st = cache.stats();
    EXPECT_EQ(st.pending_writes, 0u);
    EXPECT_EQ(st.pending_bytes, 0u);
    // Restoring a brought it back into RAM, which spilled b in turn.
    EXPECT_EQ(st.spills, 2u);
    EXPECT_EQ(st.stores_disk, 2u);
    EXPECT_EQ(st.store_failures, 0u);
    EXPECT_EQ(dir.files().size(), 2u);
  }
  // Disk only: the store is queued; the destructor finishes it.
  auto d = opts();
  d.disk_dir = dir.path.string();
  d.background_writes = true;
  auto c = session_with(toks(24, 3));
  {
    PrefixCache cache(d);
    const OpenGateOnExit open_gate;
    set_gate(false);
    const auto r = cache.store(*c, SaveReason::cold);
    ASSERT_TRUE(r.stored) << r.explain;
    EXPECT_EQ(r.tier, Tier::disk);
    EXPECT_EQ(cache.stats().pending_writes, 1u);
    auto hit = cache.lookup(toks(30, 3));
    EXPECT_EQ(hit.matched, 24);
    expect_resumes(cache, hit, toks(30, 3));
    set_gate(true);
  }
  PrefixCache again(d);
  EXPECT_EQ(again.stats().disk_entries, 3u);
  for (int salt : {1, 2, 3}) {
    auto hit = again.lookup(toks(30, salt));
    EXPECT_EQ(hit.tier, Tier::disk) << salt;
    expect_resumes(again, hit, toks(30, salt));
  }
}

// A background write that fails (disk full) is counted and logged; a
// disk-only entry goes, a spilled one is gone from RAM too, nothing is left
// in the directory, and the cache goes on storing and serving.
TEST(PrefixCache, BackgroundWriteFailureKeepsServing) {
  const TempDir dir("pc_bg_full");
  std::vector<std::string> log;
  auto o = opts(&log);
  o.disk_dir = dir.path.string();
  o.background_writes = true;
  const GatedWrites gated;
  PrefixCache cache(o);
  set_gate(true, /*full=*/true);
  ASSERT_TRUE(cache.store(*session_with(toks(16, 1)), SaveReason::cold).stored);
  cache.wait_writes();
  auto st = cache.stats();
  EXPECT_EQ(st.store_failures, 1u);
  EXPECT_EQ(st.disk_entries, 0u);
  EXPECT_EQ(st.pending_writes, 0u);
  EXPECT_EQ(cache.lookup(toks(20, 1)).matched, 0);
  EXPECT_TRUE(dir.files().empty());
  EXPECT_TRUE(std::any_of(log.begin(), log.end(), [](const std::string& l) {
    return l.find("store failed") != std::string::npos;
  }));
  set_gate(true, /*full=*/false);
  ASSERT_TRUE(cache.store(*session_with(toks(16, 2)), SaveReason::cold).stored);
  cache.wait_writes();
  EXPECT_EQ(cache.stats().disk_entries, 1u);
  auto hit = cache.lookup(toks(20, 2));
  expect_resumes(cache, hit, toks(20, 2));
}

}  // namespace
}  // namespace ds4::engine

namespace ds4::engine {
namespace {

// A state computed with steering is cached under its variant: the same
// tokens stored under variant A are found with A only (not unsteered, not
// B), both entries live side by side, and A's survives a restart.
TEST(PrefixCache, VariantsKeepSteeredStatesApart) {
  const TempDir dir("pc_variant");
  auto o = opts();
  o.ram_bytes = 64 * entry_bytes(16);
  o.disk_dir = dir.path.string();
  const uint64_t A = 0x1234, B = 0x5678;
  auto s = session_with(toks(16, 1));
  {
    PrefixCache cache(o);
    ASSERT_TRUE(cache.store(*s, SaveReason::cold, {}, A).stored);
    EXPECT_EQ(cache.lookup(toks(20, 1)).matched, 0) << "unsteered lookup found a steered state";
    EXPECT_EQ(cache.lookup(toks(20, 1), -1, B).matched, 0) << "variant B found A's state";
    auto hit = cache.lookup(toks(20, 1), -1, A);
    EXPECT_EQ(hit.matched, 16);
    expect_resumes(cache, hit, toks(20, 1));
    // The unsteered state of the same tokens is another entry.
    const auto r = cache.store(*s, SaveReason::cold);
    EXPECT_TRUE(r.stored) << r.explain;
    EXPECT_EQ(cache.stats().ram_entries, 2u);
    EXPECT_EQ(cache.lookup(toks(20, 1)).matched, 16);
    cache.flush();
  }
  PrefixCache again(o);
  EXPECT_EQ(again.stats().disk_entries, 2u);
  EXPECT_EQ(again.lookup(toks(20, 1), -1, A).matched, 16);
  EXPECT_EQ(again.lookup(toks(20, 1), -1, B).matched, 0);
  EXPECT_EQ(again.lookup(toks(20, 1)).matched, 16);
}

}  // namespace
}  // namespace ds4::engine
